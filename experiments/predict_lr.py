"""Predict η* for a new (B, D) from a finished sweep (iso-norm relation), and check it.

    python experiments/predict_lr.py --sweep_dir=workdirs/sweeps/cpu_lr_batch \
        --batch_size=64 --log2_tokens=20            # a prediction
    python experiments/predict_lr.py --sweep_dir=workdirs/sweeps/cpu_lr_batch \
        --leave_one_out --hold_out_batch=64 --out=experiments/results/cpu_lr_batch/predict_lr.json

See `scion_jax.analysis.predict` for the method. Leave-one-out holds out each (B, D) optimum
in turn and predicts its η* from the rest, beside the global power law fitted on the same rest;
`--hold_out_batch` holds out every horizon of one batch size (extrapolation in B);
`--check_dir` predicts the optima of another sweep, e.g. one at longer horizons.
"""

import json
import os
import warnings

import numpy as np
from absl import app, flags

from scion_jax.analysis import SweepWarning, collect, fit_optima
from scion_jax.analysis.collect import atomic_write_text
from scion_jax.analysis.predict import (
    leave_one_out,
    norm_laws,
    predict_held_out,
    predict_log2_eta,
    predict_optima,
)

flags.DEFINE_string("sweep_dir", None, "A finished sweep (one setup).", required=True)
flags.DEFINE_integer("batch_size", None, "B (sequences) to predict η* for.")
flags.DEFINE_float("log2_tokens", None, "log2 of the horizon D (tokens) to predict η* for.")
flags.DEFINE_bool("leave_one_out", False, "Check the method on the sweep's own optima.")
flags.DEFINE_integer("hold_out_batch", None, "Predict every optimum of this B from the rest.")
flags.DEFINE_string("check_dir", None,
                    "Another sweep: predict its optima at (B, D) this one lacks (e.g. longer D).")
flags.DEFINE_string("out", None, "Write the check tables as JSON here.")
flags.DEFINE_integer("vocab_size", None, "V for c = ln V (default: the runs' config).")
FLAGS = flags.FLAGS


def main(_):
    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always", SweepWarning)
        table = collect(FLAGS.sweep_dir)
    if skipped:
        print(f"skipped {len(skipped)} unfinished or unreadable runs")
    optima = fit_optima(table, vocab_size=FLAGS.vocab_size)
    if FLAGS.batch_size and FLAGS.log2_tokens is not None:
        x_fit, n_fit = norm_laws(table, optima)
        log2_eta = predict_log2_eta(x_fit, n_fit, np.log2(FLAGS.batch_size), FLAGS.log2_tokens)
        print(f"optimal norm law: {x_fit.describe()}")
        print(f"reached norm law: {n_fit.describe()}")
        print(
            f"B = {FLAGS.batch_size}, D = 2^{FLAGS.log2_tokens:g}: "
            f"η* ≈ 2^{log2_eta:.2f} = {2**log2_eta:.4g}"
        )
    checks = {}
    if FLAGS.leave_one_out:
        checks["leave_one_out"] = leave_one_out(table, optima)
    if FLAGS.hold_out_batch:
        held = np.log2(FLAGS.hold_out_batch)
        checks[f"hold_out_B{FLAGS.hold_out_batch}"] = predict_held_out(
            table, optima, lambda log2_b, _: log2_b == held
        )
    if FLAGS.check_dir:
        checks[f"check_{os.path.basename(os.path.normpath(FLAGS.check_dir))}"] = _check_other(
            table, optima, FLAGS.check_dir
        )
    record = {name: _report(name, rows) for name, rows in checks.items()}
    if FLAGS.out and record:
        atomic_write_text(FLAGS.out, json.dumps(record, indent=1))


def _check_other(table, optima, check_dir: str) -> list[dict[str, float]]:
    """The optima of another sweep at (B, D) this one lacks (held out: e.g. its longer
    horizons), beside their η* predicted from this one's laws."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SweepWarning)
        other = fit_optima(collect(check_dir), vocab_size=FLAGS.vocab_size)
    seen = {(o.log2_B, o.log2_D) for o in optima}
    return predict_optima(table, optima, [o for o in other if (o.log2_B, o.log2_D) not in seen])


def _report(name: str, rows: list[dict[str, float]]) -> dict:
    """Prints the check's table and RMS errors; returns them for the JSON record."""
    if not rows:
        raise app.UsageError(f"{name}: no fitted optimum to check.")
    err = lambda k: np.array([r[k] - r["log2_eta_measured"] for r in rows])
    print(f"{name}:")
    print(f"{'log2 B':>6s} {'log2 D':>6s} {'measured':>9s} {'iso-norm':>9s} {'power law':>10s}")
    for r in rows:
        print(
            f"{r['log2_B']:6.1f} {r['log2_D']:6.1f} {r['log2_eta_measured']:9.2f} "
            f"{r['log2_eta_iso_norm']:9.2f} {r['log2_eta_power_law']:10.2f}"
        )
    summary = {
        k: float(np.sqrt(np.mean(err(k) ** 2))) for k in ("log2_eta_iso_norm", "log2_eta_power_law")
    }
    print("RMS error in log2 η*: " + ", ".join(f"{k[9:]} {v:.3f}" for k, v in summary.items()))
    return {"rms_log2_error": summary, "rows": rows}


if __name__ == "__main__":
    app.run(main)
