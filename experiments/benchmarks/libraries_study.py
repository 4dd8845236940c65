"""Scion's proposed table on an Equinox and a Haiku GPT, as a user would, beside AdamW.

    python experiments/benchmarks/libraries_study.py [--steps=300 --d_model=128 ...]

Each library's model is written the way its own examples write one (Equinox:
`eqx.nn.Embedding`, `eqx.nn.MultiheadAttention`, `eqx.nn.Linear` [out, in], per-token
`jax.vmap`; Haiku: `hk.Embed`, `hk.MultiHeadAttention`, `hk.Linear` [in, out]), pre-norm,
untied `lm_head`. Scion takes `propose_rules(model or params)` unedited and `init_params`;
AdamW the library's own init. Byte-level Shakespeare through the project's pipeline,
gradient clipping 1, held-out loss after `--steps` steps at each learning rate given.
"""

from __future__ import annotations

import time

import equinox as eqx
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import scion_jax
from scion_jax.data import default_data_config, make_eval_batches, make_train_iterator

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 300, "Training steps per run.")
flags.DEFINE_integer("d_model", 128, "Width.")
flags.DEFINE_integer("n_layers", 2, "Blocks.")
flags.DEFINE_integer("n_heads", 4, "Attention heads.")
flags.DEFINE_integer("seq_len", 64, "Context.")
flags.DEFINE_integer("batch", 16, "Sequences per step.")
flags.DEFINE_list("scion_lrs", ["-5", "-4"], "log2 learning rates for Scion.")
flags.DEFINE_list("adamw_lrs", ["-9", "-8"], "log2 learning rates for AdamW.")
flags.DEFINE_list("libraries", ["equinox", "haiku"], "Which models to train.")

VOCAB = 256


class EqxBlock(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, d, heads, key):
        k1, k2 = jax.random.split(key)
        self.ln1, self.ln2 = eqx.nn.LayerNorm(d), eqx.nn.LayerNorm(d)
        self.attn = eqx.nn.MultiheadAttention(heads, d, key=k1)
        self.mlp = eqx.nn.MLP(d, d, 4 * d, depth=1, activation=jax.nn.gelu, key=k2)

    def __call__(self, x):  # [T, d]
        h = jax.vmap(self.ln1)(x)
        x = x + self.attn(h, h, h, mask=jnp.tril(jnp.ones((x.shape[0],) * 2, bool)))
        return x + jax.vmap(self.mlp)(jax.vmap(self.ln2)(x))


class EqxGPT(eqx.Module):
    embed: eqx.nn.Embedding
    pos_embed: eqx.nn.Embedding
    blocks: list
    ln_f: eqx.nn.LayerNorm
    lm_head: eqx.nn.Linear

    def __init__(self, d, n_layers, heads, seq_len, key):
        keys = jax.random.split(key, n_layers + 3)
        self.embed = eqx.nn.Embedding(VOCAB, d, key=keys[0])
        self.pos_embed = eqx.nn.Embedding(seq_len, d, key=keys[1])
        self.blocks = [EqxBlock(d, heads, k) for k in keys[3:]]
        self.ln_f = eqx.nn.LayerNorm(d)
        self.lm_head = eqx.nn.Linear(d, VOCAB, use_bias=False, key=keys[2])

    def __call__(self, tokens):  # [T] -> [T, V]
        x = jax.vmap(self.embed)(tokens) + jax.vmap(self.pos_embed)(jnp.arange(tokens.shape[0]))
        for block in self.blocks:
            x = block(x)
        return jax.vmap(self.lm_head)(jax.vmap(self.ln_f)(x))


def haiku_gpt(tokens, d, n_layers, heads, seq_len):
    x = hk.Embed(VOCAB, d, name="embed")(tokens)
    x = x + hk.Embed(seq_len, d, name="pos_embed")(jnp.arange(tokens.shape[-1]))
    mask = jnp.tril(jnp.ones((1, 1, tokens.shape[-1], tokens.shape[-1])))
    init = hk.initializers.VarianceScaling(2.0 / n_layers)
    for _ in range(n_layers):
        h = hk.LayerNorm(-1, True, True)(x)
        x = x + hk.MultiHeadAttention(heads, d // heads, w_init=init)(h, h, h, mask=mask)
        h = hk.LayerNorm(-1, True, True)(x)
        x = x + hk.Linear(d, w_init=init, name="down")(jax.nn.gelu(hk.Linear(4 * d, name="up")(h)))
    return hk.Linear(VOCAB, with_bias=False, name="lm_head")(hk.LayerNorm(-1, True, True)(x))


def build(library, key, sample):
    """(params, logits_fn(params, inputs), propose_rules' argument, residual regexes)."""
    d, n, h, t = FLAGS.d_model, FLAGS.n_layers, FLAGS.n_heads, FLAGS.seq_len
    if library == "equinox":
        model = EqxGPT(d, n, h, t, key)
        params, static = eqx.partition(model, eqx.is_array)
        residual = (r"attn/output_proj/weight$", r"mlp/layers/1/weight$")
        return params, lambda p, x: jax.vmap(eqx.combine(p, static))(x), model, residual
    lm = hk.without_apply_rng(hk.transform(lambda x: haiku_gpt(x, d, n, h, t)))
    params = lm.init(key, sample)
    residual = (r"multi_head_attention(_\d+)?/linear/w$", r"down(_\d+)?/w$")
    return params, lm.apply, params, residual


def train(logits_fn, params, tx, batches, evals):
    def loss_fn(p, batch):
        logits = logits_fn(p, batch["inputs"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

    @jax.jit
    def step(p, s, batch):
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    state, eval_loss = tx.init(params), jax.jit(loss_fn)
    first = float(eval_loss(params, evals[0]))
    for batch in batches:
        params, state, _ = step(params, state, batch)
    return first, float(np.mean([float(eval_loss(params, b)) for b in evals]))


def main(_):
    data = default_data_config()
    it = make_train_iterator(data, seq_len=FLAGS.seq_len, global_batch_size=FLAGS.batch, seed=0)
    batches = [{k: jnp.asarray(v) for k, v in next(it).items()} for _ in range(FLAGS.steps)]
    evals = make_eval_batches(data, seq_len=FLAGS.seq_len, batch_size=FLAGS.batch, num_batches=8)
    for library in FLAGS.libraries:
        params, logits_fn, model, residual = build(library, jax.random.key(0), batches[0]["inputs"])
        rules = scion_jax.propose_rules(model)
        scion_params = scion_jax.init_params(
            jax.random.key(1), params, rules, FLAGS.n_layers, residual
        )
        n_params = sum(x.size for x in jax.tree.leaves(params))
        print(f"{library}: {n_params:,} parameters, {len(rules)} proposed rules", flush=True)
        runs = [("scion", float(x)) for x in FLAGS.scion_lrs]
        runs += [("adamw", float(x)) for x in FLAGS.adamw_lrs]
        for opt, log2_lr in runs:
            if opt == "scion":
                tx, start = scion_jax.scion(2.0**log2_lr, rules, momentum=0.1), scion_params
            else:
                tx = optax.adamw(2.0**log2_lr, b1=0.9, b2=0.95, weight_decay=0.1)
                start = params
            tx = optax.chain(optax.clip_by_global_norm(1.0), tx)
            t = time.perf_counter()
            first, held_out = train(logits_fn, start, tx, batches, evals)
            print(f"{library:8s} {opt:6s} lr 2^{log2_lr:+.1f}: loss at init {first:.3f}, "
                  f"held-out after {FLAGS.steps} steps {held_out:.4f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    app.run(main)
