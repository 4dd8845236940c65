"""Which role, init and position-embedding scale a tied embedding table should get (issue 26).

    python experiments/benchmarks/tied_embedding_study.py [--steps=250 --d_model=128 ...]

A small Linen GPT written like DeepMind's nanodo (tied ``embed.attend`` output, a learned
position embedding added before the first pre-norm block, DenseGeneral attention, LayerNorm,
both tables initialised N(0, 1/d)) trains on byte-level Shakespeare (the project's data
pipeline, held-out split for eval) with gradient clipping 1, for each variant at the best
learning rate of a 2^0.5 grid (the grid grows until its best point is interior):

  adamw                AdamW (β 0.9/0.95, λ 0.1)
  hand_input           Scion, hand table: both tables the input norm "l1_to_rms", model's init
  hand_input_init      the same table + init_params (table rows RMS 1)
  proposed_old         the table propose_rules gave before issue 26: the tied table the
                       output norm at its own step (head view RMS→∞, radius 1), the position
                       table "l1_to_rms", + init_params
  proposed_old_own     the same table, model's init
  pos_matched          both tables the output norm at its own step, + init_params
  pos_matched_own      the same table, model's init
  input_step           both tables the head view's RMS→∞ norm at the input norm's step
                       (radius d), + init_params (rows L2 1/√d)
  proposed             the table propose_rules gives now (both tables `tied_embedding(d)`: the
                       head view's RMS→∞ norm at radius √d, rows L2 1), + init_params
  proposed_own         the same table, model's init

Besides the held-out loss it logs, every `--probe_every` steps of the best run: the mean
per-row L2 of the token table's update over the rows of that batch's tokens divided by
their mean row L2 (the relative per-row step), and the RMS of the embedded tokens and of
the position rows. Prints one table; --json writes every run.
"""

from __future__ import annotations

import json
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import scion_jax
from scion_jax.data import default_data_config, make_eval_batches, make_train_iterator

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 250, "Training steps per run.")
flags.DEFINE_integer("d_model", 128, "Width.")
flags.DEFINE_integer("n_layers", 2, "Blocks.")
flags.DEFINE_integer("n_heads", 4, "Attention heads.")
flags.DEFINE_integer("seq_len", 128, "Context.")
flags.DEFINE_integer("batch", 16, "Sequences per step.")
flags.DEFINE_integer("eval_batches", 8, "Held-out batches of `batch` sequences.")
flags.DEFINE_integer("probe_every", 25, "Steps between embedding probes (best runs).")
flags.DEFINE_list("variants", [], "Subset of variants to run (default: all).")
flags.DEFINE_string("json", "", "Write all runs to this file.")
flags.DEFINE_float("start_scion", -5.5, "log2 LR where Scion's grid starts.")
flags.DEFINE_float("start_adamw", -8.5, "log2 LR where AdamW's grid starts.")

VOCAB = 256


class Block(nn.Module):
    d: int
    heads: int

    @nn.compact
    def __call__(self, x):
        dense = dict(kernel_init=nn.initializers.xavier_uniform(), use_bias=False)
        h = nn.LayerNorm()(x)
        head_dim = self.d // self.heads
        q, k, v = (
            nn.DenseGeneral((self.heads, head_dim), name=n, **dense)(h)
            for n in ("query", "key", "value")
        )
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
        att = nn.dot_product_attention(q, k, v, mask=mask)
        x = x + nn.DenseGeneral(self.d, axis=(-2, -1), name="out", **dense)(att)
        h = nn.LayerNorm()(x)
        h = nn.Dense(4 * self.d, name="up", **dense)(h)
        return x + nn.Dense(self.d, name="down", **dense)(nn.gelu(h))


class NanodoLike(nn.Module):
    """nanodo's layout: tied table, learned positions added before the first pre-norm."""

    d: int
    n_layers: int
    heads: int
    seq_len: int

    @nn.compact
    def __call__(self, tokens):
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
        embed = nn.Embed(VOCAB, self.d, embedding_init=init, name="embed")
        pos = nn.Embed(self.seq_len, self.d, embedding_init=init, name="pos_embed")
        x = embed(tokens) + pos(jnp.arange(tokens.shape[-1]))
        for i in range(self.n_layers):
            x = Block(self.d, self.heads, name=f"blocks_{i}")(x)
        return embed.attend(nn.LayerNorm()(x))


def variants(params) -> dict[str, tuple[list | None, bool]]:
    """name -> (Scion rule table or None for AdamW, re-initialise with init_params)."""
    proposed = scion_jax.propose_rules(params, tied=True)
    rest = [r for r in proposed if "embed/" not in r[0]]
    hand = [(r"^(pos_)?embed/embedding$", "l1_to_rms"), *rest]
    old = [
        (r"^embed/embedding$", scion_jax.Role("rms_to_inf", layout="out_in")),
        (r"^pos_embed/embedding$", "l1_to_rms"),
        *rest,
    ]
    d = params["embed"]["embedding"].shape[1]
    input_step = [
        (r"^(pos_)?embed/embedding$", scion_jax.Role("rms_to_inf", layout="out_in", radius=d)),
        *rest,
    ]
    matched = [
        (r"^(pos_)?embed/embedding$", scion_jax.Role("rms_to_inf", layout="out_in")),
        *rest,
    ]
    return {
        "adamw": (None, False),
        "pos_matched": (matched, True),
        "input_step": (input_step, True),
        "pos_matched_own": (matched, False),
        "hand_input": (hand, False),
        "hand_input_init": (hand, True),
        "proposed_old": (old, True),
        "proposed_old_own": (old, False),
        "proposed": (proposed, True),
        "proposed_own": (proposed, False),
    }


def direction(rules):
    """The update before the learning rate (one compile serves the whole LR grid)."""
    if rules is None:  # optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=0.1)
        opt = optax.chain(optax.scale_by_adam(b1=0.9, b2=0.95), optax.add_decayed_weights(0.1))
    else:
        opt = scion_jax.scale_by_scion(rules, momentum=0.1)
    return optax.chain(optax.clip_by_global_norm(1.0), opt)


def make_step(model, rules):
    tx = direction(rules)

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch["inputs"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

    @jax.jit
    def step(p, s, batch, lr):
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        u, s = tx.update(g, s, p)
        u = jax.tree.map(lambda x: -lr * x, u)
        return optax.apply_updates(p, u), s, loss, u["embed"]["embedding"]

    return tx, step, jax.jit(loss_fn)


def run(compiled, params0, lr, batches, evals, probe_every):
    tx, step, eval_loss = compiled
    state = tx.init(params0)
    params, probes = params0, []
    for i, batch in enumerate(batches):
        before = params
        params, state, loss, u = step(params, state, batch, lr)
        if not math.isfinite(float(loss)):
            return math.inf, probes
        if probe_every and (i % probe_every == 0 or i == len(batches) - 1):
            probes.append({"step": i, **probe(before, u, batch["inputs"])})
    held_out = float(np.mean([float(eval_loss(params, b)) for b in evals]))
    return held_out, probes


def probe(params, update, tokens):
    table = np.asarray(params["embed"]["embedding"], np.float64)
    pos = np.asarray(params["pos_embed"]["embedding"], np.float64)
    rows = np.unique(np.asarray(tokens))
    step = np.linalg.norm(np.asarray(update, np.float64)[rows], axis=1).mean()
    scale = np.linalg.norm(table[rows], axis=1).mean()
    embedded = table[np.asarray(tokens)]
    return {
        "row_step_rel": float(step / scale),
        "token_rms": float(np.sqrt(np.mean(embedded**2))),
        "pos_rms": float(np.sqrt(np.mean(pos[: tokens.shape[1]] ** 2))),
    }


def lr_search(train, start: float) -> dict[float, tuple[float, list]]:
    """{log2 lr: train(log2 lr)} on a 2^0.5 grid from `start`, grown until its best held-out
    loss has a neighbour either side."""
    grid = {x: train(x) for x in (start - 0.5, start, start + 0.5)}
    while True:
        best = min(grid, key=lambda x: grid[x][0])
        if best not in (min(grid), max(grid)):
            return grid
        nxt = best - 0.5 if best == min(grid) else best + 0.5
        grid[nxt] = train(nxt)


def main(_):
    data = default_data_config()
    it = make_train_iterator(
        data, seq_len=FLAGS.seq_len, global_batch_size=FLAGS.batch, seed=0
    )
    batches = [{k: jnp.asarray(v) for k, v in next(it).items()} for _ in range(FLAGS.steps)]
    evals = make_eval_batches(
        data, seq_len=FLAGS.seq_len, batch_size=FLAGS.batch, num_batches=FLAGS.eval_batches
    )
    model = NanodoLike(FLAGS.d_model, FLAGS.n_layers, FLAGS.n_heads, FLAGS.seq_len)
    own = model.init(jax.random.key(0), batches[0]["inputs"])["params"]
    table = variants(own)
    names = FLAGS.variants or list(table)
    results = {}
    for name in names:
        rules, reinit = table[name]
        params = (
            scion_jax.init_params(jax.random.key(1), own, rules, FLAGS.n_layers,
                                  (r"/out/kernel$", r"/down/kernel$"))
            if reinit else own
        )
        init_loss = float(
            optax.softmax_cross_entropy_with_integer_labels(
                model.apply({"params": params}, evals[0]["inputs"]), evals[0]["targets"]
            ).mean()
        )
        start = FLAGS.start_adamw if rules is None else FLAGS.start_scion
        compiled = make_step(model, rules)

        def train(log2_lr, name=name, compiled=compiled, params=params):
            t = time.perf_counter()
            out = run(compiled, params, 2.0**log2_lr, batches, evals, FLAGS.probe_every)
            print(f"{name:18s} lr 2^{log2_lr:+.1f}: held-out {out[0]:.4f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
            return out

        grid = lr_search(train, start)
        best = min(grid, key=lambda x: grid[x][0])
        results[name] = {
            "init_loss": init_loss,
            "best_log2_lr": best,
            "held_out": grid[best][0],
            "grid": {str(k): v[0] for k, v in sorted(grid.items())},
            "probes": grid[best][1],
        }
    print(f"\n{'variant':18s} {'init':>6s} {'log2 lr':>8s} {'held-out':>9s}  "
          "row step/scale, token RMS, pos RMS at start → end of the best run")
    for name, r in results.items():
        p0, p1 = r["probes"][0], r["probes"][-1]
        print(
            f"{name:18s} {r['init_loss']:6.3f} {r['best_log2_lr']:8.1f} {r['held_out']:9.4f}  "
            f"{p0['row_step_rel']:.3g}→{p1['row_step_rel']:.3g}, "
            f"{p0['token_rms']:.3g}→{p1['token_rms']:.3g}, "
            f"{p0['pos_rms']:.3g}→{p1['pos_rms']:.3g}"
        )
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    app.run(main)
