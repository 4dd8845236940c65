"""scion_jax.hlo_stats: a compiled step's instructions by kind, joined with a trace."""

import glob
import gzip
import json
import os
import re

import jax
import jax.numpy as jnp
import pytest

import scion_jax
from scion_jax import hlo_stats


def _model_and_update(x, w, g):
    """A matmul with an elementwise tail (model-like) and a Newton–Schulz (optimizer)."""
    y = jnp.tanh(jnp.matmul(x, w, preferred_element_type=jnp.float32)) * 3.0
    return y.sum(), scion_jax.newton_schulz(g, "muon", 2, jnp.float32)


def _args():
    k = jax.random.split(jax.random.key(0), 3)
    return (
        jax.random.normal(k[0], (64, 96)),
        jax.random.normal(k[1], (96, 80)),
        jax.random.normal(k[2], (48, 64)),
    )


def test_classify_tells_optimizer_matmul_and_elementwise_apart():
    compiled = jax.jit(_model_and_update).lower(*_args()).compile()
    hlo = compiled.as_text()
    categories = hlo_stats.classify(hlo)
    assert set(categories.values()) <= set(hlo_stats.CATEGORIES)
    # Every dot of the Newton–Schulz (source: scion_jax/newton_schulz.py) is optimizer work;
    # the model's one dot (this file) is a matmul.
    dots = [categories[name] for name in re.findall(r"%([\w.\-]+) = \S+ dot\(", hlo)]
    assert dots.count("matmul") == 1
    assert dots.count("optimizer") == len(dots) - 1 >= 2
    assert "elementwise" in categories.values()
    assert hlo_stats.module_name(hlo).startswith("jit_")


def test_kernel_times_subtracts_nested_kernels():
    """A while loop's event encloses its body's kernels on the same thread: exclusive
    times; other modules' events and threads are kept apart."""
    ev = lambda ts, dur, op, tid=1, module="m": {
        "ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": op,
        "args": {"hlo_module": module, "hlo_op": op},
    }
    events = [
        ev(0, 100, "while.1"),
        ev(10, 20, "dot.1"),
        ev(40, 10, "fusion.2"),
        ev(42, 5, "fusion.3"),  # nested twice
        ev(0, 50, "dot.1", tid=2),  # another device's thread
        ev(0, 1000, "dot.1", module="other"),
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 7, "name": "python", "args": {}},
    ]
    assert hlo_stats.kernel_times(events, "m") == {
        "while.1": 70.0, "dot.1": 70.0, "fusion.2": 5.0, "fusion.3": 5.0
    }


def test_time_shares_of_a_profiled_program(tmp_path):
    fn = jax.jit(_model_and_update)
    args = _args()
    hlo = fn.lower(*args).compile().as_text()
    jax.block_until_ready(fn(*args))
    with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
        for _ in range(3):
            jax.block_until_ready(fn(*args))
    (path,) = glob.glob(os.path.join(tmp_path, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    shares = hlo_stats.time_shares(hlo, events)
    assert shares["kernel_us"] > 0
    # Every kernel of the trace is an instruction of the compiled module (the join holds).
    assert set(hlo_stats.kernel_times(events, hlo_stats.module_name(hlo))) <= set(
        hlo_stats.classify(hlo)
    )
    assert shares["optimizer"] > 0 and shares["matmul"] > 0


# A hand-written module: a dot, an elementwise op, asynchronous collectives and a send.
_HLO = """HloModule jit_f, entry_computation_layout={(f32[4]{0})->f32[8]{0}}

ENTRY %main.1 (p.1: f32[4]) -> f32[8] {
  %p.1 = f32[4]{0} parameter(0)
  %d.1 = f32[] dot(f32[4]{0} %p.1, f32[4]{0} %p.1), lhs_contracting_dims={0}
  %t.1 = f32[4]{0} tanh(f32[4]{0} %p.1)
  %cs.1 = (f32[4]{0}, f32[4]{0}, u32[]) copy-start(f32[4]{0} %t.1)
  %cd.1 = f32[4]{0} copy-done((f32[4]{0}, f32[4]{0}, u32[]) %cs.1)
  %cps.1 = (f32[4]{0}, f32[4]{0}, u32[], u32[]) collective-permute-start(f32[4]{0} %cd.1)
  %cpd.1 = f32[4]{0} collective-permute-done((f32[4]{0}, f32[4]{0}, u32[], u32[]) %cps.1)
  %tok.1 = token[] after-all()
  %s.1 = (f32[4]{0}, u32[], token[]) send(f32[4]{0} %cpd.1, token[] %tok.1), channel_id=1
  %sd.1 = token[] send-done((f32[4]{0}, u32[], token[]) %s.1), channel_id=1
  %ags.1 = (f32[4]{0}, f32[8]{0}) all-gather-start(f32[4]{0} %cpd.1), dimensions={0}
  ROOT %agd.1 = f32[8]{0} all-gather-done((f32[4]{0}, f32[8]{0}) %ags.1)
}
"""


def test_classify_async_ops_as_their_synchronous_ops():
    categories = hlo_stats.classify(_HLO)
    assert categories["d.1"] == "matmul" and categories["t.1"] == "elementwise"
    for name in ("cps.1", "cpd.1", "s.1", "sd.1", "ags.1", "agd.1"):
        assert categories[name] == "other", name
    assert categories["cs.1"] == categories["cd.1"] == "elementwise"  # as a copy


def test_time_shares_of_a_hand_built_profile():
    ev = lambda op, dur, module="jit_f": {  # noqa: E731
        "ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": dur, "name": op,
        "args": {"hlo_module": module, "hlo_op": op},
    }
    events = [ev("d.1", 50), ev("t.1", 20), ev("agd.1", 10), ev("gone.1", 20),
              ev("d.1", 900, module="other")]
    for i, e in enumerate(events):
        e["ts"] = 1000 * i  # one after another: no nesting
    shares = hlo_stats.time_shares(_HLO, events)
    # 100 µs of this module: dot 50, tanh 20, all-gather-done 10, an unknown op 20 (other).
    assert shares == pytest.approx({"optimizer": 0.0, "attention": 0.0, "matmul": 0.5,
                                    "elementwise": 0.2, "other": 0.3, "kernel_us": 100.0})
