"""Memory options (issue 10): each equals the plain path in values and gradients (fp32),
a run with all of them trains and resumes bitwise, and memory.py's arithmetic holds."""

import functools
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from scion_jax.model import ModelConfig, init_model
from scion_jax.model import attention as attention_lib
from scion_jax.model.attention import attention, blockwise_attention
from scion_jax.train import base_config, train, validate
from scion_jax.train.loss import chunked_cross_entropy, lm_loss, resolve_chunk
from scion_jax.train.optim import make_optimizer
from scion_jax.train.trainer import make_step, model_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ModelConfig(
    vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
    max_seq_len=32, compute_dtype=jnp.float32,
)  # fmt: skip


def _tokens(b=2, t=13, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t + 1), 0, TINY.vocab_size)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _assert_trees_close(a, b, rel):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        assert _rel(x, y) <= rel, (jax.tree_util.keystr(path), _rel(x, y))


def _loss_and_grads(cfg, chunk=0, tokens=None):
    tokens = _tokens() if tokens is None else tokens
    graphdef, params = nnx.split(init_model(cfg, jax.random.key(0)), nnx.Param)
    loss = lambda p: lm_loss(nnx.merge(graphdef, p), tokens[:, :-1], tokens[:, 1:], chunk)
    return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize("chunk", [5, 64])  # 5: T = 13 is not a multiple; 64 > T
def test_chunked_cross_entropy_equals_plain_loss_and_grads(chunk):
    loss, grads = _loss_and_grads(TINY, chunk)
    ref_loss, ref_grads = _loss_and_grads(TINY, 0)
    assert _rel(loss, ref_loss) <= 1e-6
    _assert_trees_close(grads, ref_grads, 1e-6)  # incl. unembed/kernel and the hidden path


def test_chunked_cross_entropy_in_bf16_stays_close():
    h = jax.random.normal(jax.random.key(0), (2, 16, 32))
    w = jax.random.normal(jax.random.key(1), (32, 500)) / 6
    y = jax.random.randint(jax.random.key(2), (2, 16), 0, 500)
    plain = lambda h, w: optax.softmax_cross_entropy_with_integer_labels(h @ w, y).mean()
    chunked = lambda h, w: chunked_cross_entropy(h, w, y, 4, jnp.bfloat16)
    (l0, g0), (l1, g1) = (jax.value_and_grad(f, (0, 1))(h, w) for f in (plain, chunked))
    assert _rel(l1, l0) < 1e-2 and max(_rel(a, b) for a, b in zip(g1, g0)) < 2e-2


def test_auto_chunk_only_for_large_vocabularies():
    assert resolve_chunk(-1, 128_256) > 0 and resolve_chunk(-1, 256) == 0
    assert resolve_chunk(0, 128_256) == 0 and resolve_chunk(7, 256) == 7
    with pytest.raises(ValueError, match="loss_chunk=-2"):
        resolve_chunk(-2, 256)


@pytest.mark.parametrize("unroll_blocks", [attention_lib.UNROLL_BLOCKS, 0])  # 0: loops only
@pytest.mark.parametrize(
    "t,block,heads,kv_heads",
    [(16, 4, 4, 2), (13, 5, 4, 1), (8, 16, 2, 2), (22, 4, 2, 1)],
)  # T a multiple of the block, not, block > T, more blocks than are unrolled; GQA groups 2
# and 4, and none
def test_blockwise_attention_equals_xla_and_einsum(
    t, block, heads, kv_heads, unroll_blocks, monkeypatch
):
    monkeypatch.setattr(attention_lib, "UNROLL_BLOCKS", unroll_blocks)
    ks = jax.random.split(jax.random.key(t * block), 4)
    q = jax.random.normal(ks[0], (2, t, heads, 8))
    k, v = (jax.random.normal(key, (2, t, kv_heads, 8)) for key in ks[1:3])
    cotangent = jax.random.normal(ks[3], q.shape)

    def value_and_grads(fn):
        out, vjp = jax.vjp(fn, q, k, v)
        return out, vjp(cotangent)

    out, grads = value_and_grads(lambda *a: blockwise_attention(*a, block))
    for impl in ("xla", "einsum"):
        ref, ref_grads = value_and_grads(lambda *a, impl=impl: attention(*a, impl))
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5)


def test_blockwise_model_equals_xla_model():
    loss, grads = _loss_and_grads(TINY.replace(attention="blockwise", attention_block=4))
    ref_loss, ref_grads = _loss_and_grads(TINY)
    assert _rel(loss, ref_loss) <= 1e-6
    _assert_trees_close(grads, ref_grads, 1e-5)


@pytest.mark.parametrize("remat,scan_layers", [("block", False), ("dots", False), ("block", True)])
def test_remat_equals_none(remat, scan_layers):
    base = TINY.replace(scan_layers=scan_layers)
    loss, grads = _loss_and_grads(base.replace(remat=remat))
    ref_loss, ref_grads = _loss_and_grads(base)
    assert _rel(loss, ref_loss) <= 1e-6
    _assert_trees_close(grads, ref_grads, 1e-6)


def test_remat_dots_saves_the_weight_matmuls_in_bf16_too():
    """remat="dots" recomputes only what is not a weight matmul: a bf16 model (whose Dense
    is a custom-VJP call, named for the policy) runs as many dots in its backward pass as
    the fp32 one, fewer than remat="block"."""

    def dots(cfg):
        graphdef, params = nnx.split(init_model(cfg, jax.random.key(0)), nnx.Param)
        tokens = _tokens()

        def loss(p):
            logits = nnx.merge(graphdef, p)(tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        return jax.jit(jax.grad(loss)).lower(params).compile().as_text().count(" dot(")

    bf16 = TINY.replace(compute_dtype=jnp.bfloat16, attention="xla")
    saved = dots(bf16.replace(remat="dots"))
    assert saved == dots(TINY.replace(attention="xla", remat="dots"))
    assert dots(bf16) < saved < dots(bf16.replace(remat="block"))


def _run_steps(microbatches, steps=3):
    config = base_config()
    config.batch_size, config.seq_len = 8, 12
    config.model.update(d_model=32, n_layers=2, n_heads=2, head_dim=16, vocab_size=64)
    config.model.update(compute_dtype="float32")
    config.optimizer.update(ns_dtype="float32", ns_coeffs="svd", momentum=0.5)
    cfg = model_config(config)
    tx = make_optimizer(config, cfg, None)
    graphdef, params = nnx.split(init_model(cfg, jax.random.key(0)), nnx.Param)
    _, step_fn = make_step(graphdef, tx, loss_chunk=5, microbatches=microbatches)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
    step = jax.jit(step_fn)
    losses = []
    for i in range(steps):
        tokens = jax.random.randint(jax.random.key(i), (8, 13), 0, 64)
        state, metrics = step(state, {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]})
        losses.append(float(metrics["loss"]))
    return state["params"], losses


def test_microbatches_equal_the_unsplit_step():
    params, losses = _run_steps(1)
    split_params, split_losses = _run_steps(4)
    np.testing.assert_allclose(split_losses, losses, rtol=1e-6)
    _assert_trees_close(split_params, params, 1e-6)


def test_all_options_train_and_resume_bitwise(tmp_path):
    def config(steps):
        c = base_config()
        c.steps, c.batch_size, c.seq_len, c.microbatches, c.loss_chunk = steps, 8, 24, 2, 10
        c.model.update(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16)
        c.model.update(attention="blockwise", attention_block=8, remat="dots", scan_layers=True)
        c.optimizer.learning_rate, c.optimizer.lr_scales.hidden = 2.0**-4, 1 / 8
        c.log_every, c.norm_every, c.eval_every, c.checkpoint_every = 4, 4, 4, 4
        c.mesh.data, c.eval_batches = 1, 1
        return c

    full = train(config(8), str(tmp_path / "full"))
    train(config(4), str(tmp_path / "resumed"))  # stops at step 4 (checkpointed) ...
    resumed = train(config(8), str(tmp_path / "resumed"))  # ... and continues to 8
    keys = ("loss", "eval_loss", "grad_norm", "output_norm")
    assert {k: full[k] for k in keys} == {k: resumed[k] for k in keys}  # bitwise
    with open(tmp_path / "full" / "metrics.jsonl") as f:
        first = json.loads(f.readline())
    assert first["eval_loss"] == pytest.approx(np.log(256), abs=0.1), first
    assert full["eval_loss"] < first["eval_loss"] - 0.3, full  # it learns


@functools.cache  # once: the module defines absl flags
def _memory_module():
    path = os.path.join(ROOT, "experiments", "benchmarks", "memory.py")
    spec = importlib.util.spec_from_file_location("memory_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_batches_arithmetic():
    gib = 2**30
    fixed, per_row, fits = _memory_module().fit_batches({2: 3 * gib, 4: 4 * gib}, 4)
    assert (fixed, per_row) == (2 * gib, gib / 2)
    assert fits == {"16": 28 * 4, "40": 76 * 4, "80": 156 * 4}  # (budget − 2) / 0.5 rows × 4


def test_memory_report_on_a_sharded_small_config(tmp_path):
    """The CLI on 8 devices (data 2 × fsdp 4, partitioned Scion), all options on, --json;
    the budget arithmetic holds, and the options cut the step's temporary memory."""
    overrides = [
        "--config.seq_len=128", "--config.model.vocab_size=4096", "--config.model.d_model=64",
        "--config.model.n_heads=1", "--config.model.n_layers=2", "--config.mesh.data=2",
        "--config.model.scan_layers=true",
        "--config.mesh.fsdp=4",
    ]  # fmt: skip
    on = [
        "--config.microbatches=2", "--config.loss_chunk=16", "--config.model.remat=block",
        "--config.model.attention=blockwise", "--config.model.attention_block=32",
    ]  # fmt: skip
    script = os.path.join(ROOT, "experiments", "benchmarks", "memory.py")
    config = os.path.join(ROOT, "experiments", "configs", "quickstart.py")
    env = {**os.environ, "PYTHONPATH": ROOT}

    def report(*flags):
        cmd = [sys.executable, script, f"--config={config}", "--devices=8", "--json", *flags]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    r = report("--per_device_batch=4", *overrides, *on)
    assert r["per_device_batch"] == 4 and r["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert r["total_bytes"] == (
        r["argument_bytes"] + r["output_bytes"] - r["alias_bytes"] + r["temp_bytes"]
    )
    rows = r["per_device_batch"] // r["microbatches"]
    assert r["fixed_bytes"] + r["bytes_per_row"] * rows == pytest.approx(r["total_bytes"])
    for gib, batch in r["max_per_device_batch"].items():
        fits = lambda b, gib=gib: r["fixed_bytes"] + r["bytes_per_row"] * b / 2 <= int(gib) * 2**30
        assert batch % 2 == 0 and fits(batch) and not fits(batch + 2)
    config = base_config()
    config.seq_len, config.model.vocab_size, config.model.n_heads = 128, 4096, 1
    config.model.update(d_model=64, n_layers=2, scan_layers=True)
    config.mesh.update(data=2, fsdp=4)
    config.loss_chunk = 0
    plain = _memory_module().step_memory(config, 4)  # the same model, every option off
    assert r["temp_bytes"] < 0.5 * plain["temp_bytes"]


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("microbatches", 3, r"batch_size=16 must divide by config.microbatches × mesh "
                            r"data×fsdp = 3 × 8"),
        ("microbatches", 0, r"config.microbatches=0 must be a positive number"),
        ("model.remat", "all", r"model.remat='all' is invalid; valid choices: none, block, dots"),
        ("model.attention", "flash", r"model.attention='flash'.*blockwise"),
        ("model.attention_block", 0, r"model.attention_block=0 must be a positive"),
        ("loss_chunk", -3, r"config.loss_chunk=-3; valid: -1 \(auto\), 0"),
    ],
)  # fmt: skip
def test_bad_values_are_named(key, value, message):
    config = base_config()
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=message):
        validate(config, n_devices=8)
