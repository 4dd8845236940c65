"""Scion in other people's JAX code: declared axes, the proposed table, tied embeddings,
per-role settings, conv kernels, messages, and the porting guide's rows (docs/PORTING.md).

The PyTorch reference Scion (LIONS-EPFL `scion.py`, the same LMOs as Disco) is written in
tests/scion_reference.py in float64 numpy, in its own layout (torch ``[d_out, d_in]``).
"""

from __future__ import annotations

import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scion_reference import (
    ref_bias_rms,
    ref_col_norm_transposed,
    ref_row_norm,
    ref_scion_step,
    ref_sign,
    ref_spectral,
    ref_spectral_conv,
)

import scion_jax
from scion_jax import Role
from scion_jax.model import ModelConfig, scion_rules
from scion_jax.rules import resolve_roles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randn(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


# ----- 1. ndim >= 3 needs declared axes -----
def test_3d_kernel_needs_declared_axes():
    params = {"q": {"kernel": jnp.ones((64, 4, 16))}}
    rules = [(".*", "rms_to_rms")]
    for call in (
        lambda: scion_jax.layer_norms(params, rules),
        lambda: scion_jax.scion(0.1, rules).init(params),
        lambda: scion_jax.scale_by_scion(rules).update(params, scion_jax.ScionState(None)),
        lambda: scion_jax.init_params(jax.random.key(0), params, rules),
    ):
        with pytest.raises(ValueError, match=r"'q/kernel' of shape \(64, 4, 16\)") as e:
            call()
        assert "batch_axes=0" in str(e.value) and "in_axes=0, out_axes=(1, 2)" in str(e.value)
    # The DenseGeneral view: one matrix [64, 64]; its update has RMS→RMS norm = η exactly.
    dense = [(".*", Role("rms_to_rms", in_axes=0, out_axes=(1, 2)))]
    g = {"q": {"kernel": jnp.asarray(_randn(0, (64, 4, 16)), jnp.float32)}}
    tx = scion_jax.scion(0.01, dense, ns_coeffs="svd")
    u, _ = tx.update(g, tx.init(g))
    norms = scion_jax.layer_norms(u, dense)
    assert list(norms) == ["rms_to_rms/q/kernel"]
    assert float(norms["rms_to_rms/q/kernel"]) == pytest.approx(0.01, rel=1e-4)
    # Declared as a stack: 64 matrices [4, 16].
    assert len(scion_jax.layer_norms(g, [(".*", Role("rms_to_rms", batch_axes=0))])) == 64


def test_project_scanned_model_declares_its_layer_axis():
    cfg = ModelConfig(
        vocab_size=32, d_model=16, n_layers=2, n_heads=2, max_seq_len=8, scan_layers=True
    )
    from scion_jax.model import init_model

    shapes = nnx.state(nnx.eval_shape(lambda: init_model(cfg, jax.random.key(0))), nnx.Param)
    roles = jax.tree.leaves(
        resolve_roles(shapes, scion_rules(cfg)), is_leaf=lambda r: isinstance(r, Role)
    )
    assert any(r.norm == "rms_to_rms" and r.batch_axes == 0 for r in roles)


# ----- 2. the proposed table and describe; 3. tied embedding -----
class TinyLM(nnx.Module):
    """nnx.MultiHeadAttention (DenseGeneral kernels [d, H, Dh]) and a tied embedding."""

    def __init__(self, vocab, d, seq, rngs):
        self.embed = nnx.Embed(vocab, d, rngs=rngs)
        self.pos_embed = nnx.Embed(seq, d, rngs=rngs)
        self.ln1 = nnx.RMSNorm(d, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(4, d, decode=False, rngs=rngs)
        self.ln2 = nnx.RMSNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, 2 * d, rngs=rngs)
        self.down = nnx.Linear(2 * d, d, rngs=rngs)
        self.ln_f = nnx.RMSNorm(d, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens) + self.pos_embed(jnp.arange(tokens.shape[-1]))
        x = x + self.attn(self.ln1(x), mask=nnx.make_causal_mask(tokens))
        x = x + self.down(jax.nn.gelu(self.up(self.ln2(x))))
        return self.embed.attend(self.ln_f(x))  # tied: logits = h · tableᵀ


V, D, T = 48, 32, 16


def _lm_loss(model, tokens):
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def _tokens():
    pattern = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2])
    return jnp.asarray(np.stack([np.roll(pattern, i) for i in range(8)]) % V)


def test_proposed_table_and_describe():
    model = TinyLM(V, D, T, nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    rules = scion_jax.propose_rules(params)
    assert isinstance(rules, list) and all(p.startswith("^") and p.endswith("$") for p, _ in rules)
    roles = dict(rules)
    assert roles[r"^embed/embedding$"] == scion_jax.tied_embedding(D)  # no head kernel: tied
    # The positions added to the tied table: the same role (scale and step) as its tokens.
    assert roles[r"^pos_embed/embedding$"] == scion_jax.tied_embedding(D)
    assert roles[r"^attn/query/kernel$"] == Role("rms_to_rms", in_axes=0, out_axes=(1, 2))
    assert roles[r"^attn/out/kernel$"] == Role("rms_to_rms", in_axes=(0, 1), out_axes=2)
    assert roles[r"^up/kernel$"].norm == "rms_to_rms"
    assert roles[r"^attn/query/bias$"] == Role("bias_rms", out_axes=(0, 1), weight_decay=0.0)
    assert roles[r"^ln1/scale$"] == Role("bias_rms", weight_decay=0.0)
    lines = []
    scion_jax.describe(params, rules, weight_decay=0.1, print_fn=lines.append)
    text = lines[0]
    assert re.search(r"\nattn/query/kernel +\(32, 4, 8\) +rms_to_rms +1 × 32 × 32 ", text)
    rows = {r["path"]: r for r in scion_jax.describe_rows(params, rules, weight_decay=0.1)}
    assert rows["embed/embedding"]["matrix"] == "1 × 32 × 48"  # the head view [d, V]
    assert rows["ln1/scale"]["weight_decay"] == 0.0 and rows["up/kernel"]["weight_decay"] == 0.1
    # With a head kernel named as such, no tie; a stacked subtree gets batch_axes=0.
    stacked = {
        "embed": {"embedding": jnp.zeros((V, D))},
        "lm_head": {"kernel": jnp.zeros((D, V))},
        "layers": {"mlp": {"kernel": jnp.zeros((3, D, D))}, "ln": {"scale": jnp.zeros((3, D))}},
    }
    roles = dict(scion_jax.propose_rules(stacked, stacked=r"^layers/"))
    assert roles[r"^embed/embedding$"].norm == "l1_to_rms"
    assert roles[r"^lm_head/kernel$"].norm == "rms_to_inf"
    assert roles[r"^layers/mlp/kernel$"] == Role("rms_to_rms", batch_axes=0)
    unnamed = {"embed": {"embedding": jnp.zeros((V, D))}, "Dense_0": {"kernel": jnp.zeros((D, V))}}
    with pytest.raises(ValueError, match=r"\['Dense_0/kernel'\] map to the vocabulary.*tied=True"):
        scion_jax.propose_rules(unnamed)
    head = [(r"^Dense_0/kernel$", "rms_to_inf")]
    assert (
        dict(scion_jax.propose_rules(unnamed, tied=False, known=head))[r"^embed/embedding$"].norm
        == "l1_to_rms"
    )
    with pytest.raises(ValueError, match=r"(?s)'blob/kernel' \(3, 5, 7\).*known="):
        scion_jax.propose_rules({"blob": {"kernel": jnp.zeros((3, 5, 7))}})


def test_tied_embedding_trains_from_ln_v():
    """The proposed table trains the model. Init keeps the loss near ln V (the input
    norm's init does not): rows of L2 1, the head view's RMS→∞ norm √d = its radius; the
    table's update has that norm η·√d; layer_norms reports that output norm."""
    tokens = _tokens()
    graphdef, params, rest = nnx.split(TinyLM(V, D, T, nnx.Rngs(0)), nnx.Param, ...)
    rules = scion_jax.propose_rules(params)
    loss_fn = jax.jit(lambda p: _lm_loss(nnx.merge(graphdef, p, rest), tokens))
    residual = (r"attn/out/kernel$", r"down/kernel$")

    def init(table_rules):
        return jax.jit(
            lambda k, p: scion_jax.init_params(
                k, p, table_rules, n_layers=1, residual_rules=residual
            )
        )(jax.random.key(1), params)

    untied = init([(r"^embed/", "l1_to_rms"), *rules])
    assert float(loss_fn(untied)) > 2 * math.log(V)  # rows of RMS 1: logits O(√d)
    params = init(rules)
    assert math.log(V) < float(loss_fn(params)) < math.log(V) + 1  # logits O(1)

    table = np.asarray(params["embed"]["embedding"][...], np.float64)
    out_norm = np.sqrt(D) * np.max(np.linalg.norm(table, axis=1))  # ‖tableᵀ‖_{RMS→∞}
    norms = jax.jit(lambda p: scion_jax.layer_norms(p, rules))(params)
    assert float(norms["rms_to_inf/embed/embedding"]) == pytest.approx(out_norm, rel=1e-5)
    assert out_norm == pytest.approx(math.sqrt(D), rel=1e-5)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, rtol=1e-5)

    tx = scion_jax.scion(0.02, rules, momentum=0.5)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(lambda p: _lm_loss(nnx.merge(graphdef, p, rest), tokens))(
            params
        )
        updates, state = tx.update(grads, state, params)
        norm = scion_jax.layer_norms(updates, rules)["rms_to_inf/embed/embedding"]
        return optax.apply_updates(params, updates), state, loss, norm

    losses = []
    for _ in range(12):
        params, state, loss, u_norm = step(params, state)
        losses.append(float(loss))
        assert float(u_norm) == pytest.approx(0.02 * math.sqrt(D), rel=1e-5)  # η·ρ, ρ = √d
    assert losses[-1] < losses[0] - 0.5, losses


def test_tied_embedding_takes_the_table_width():
    assert scion_jax.tied_embedding(D).radius == math.sqrt(D)
    assert scion_jax.tied_embedding(D, 0.5, radius=2.0) == Role(
        "rms_to_inf", 0.5, layout="out_in", radius=2.0
    )
    for bad in (0.5, 0, "32"):  # tied_embedding(0.5): an lr_scale passed as d
        with pytest.raises(ValueError, match=r"d_model is the table's width d .*lr_scale"):
            scion_jax.tied_embedding(bad)


# ----- 4. per-role radius and weight decay vs the reference -----
GROUPS = {  # name: (flax shape, reference lmo on the torch layout, role norm)
    "embed": ((24, 16), ref_col_norm_transposed, "l1_to_rms"),
    "hidden": ((16, 20), ref_spectral, "rms_to_rms"),
    "head": ((20, 24), ref_row_norm, "rms_to_inf"),
    "bias": ((20,), ref_bias_rms, "bias_rms"),
}


def _torch_layout(name, x):  # embedding tables and biases keep their layout
    return x if name in ("embed", "bias") else x.T


def _run_reference(params, grads_seq, lr, momentum, scales, constrained, decay=None):
    w = {k: _torch_layout(k, np.asarray(v, np.float64)) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    for grads in grads_seq:
        for k, (_, lmo, _) in GROUPS.items():
            g = _torch_layout(k, np.asarray(grads[k], np.float64))
            if decay is not None:  # decoupled weight decay on the unmasked groups
                w[k] = w[k] - lr * decay.get(k, 0.0) * w[k]
            w[k], m[k] = ref_scion_step(
                w[k],
                m[k],
                g,
                lr=lr,
                momentum=momentum,
                scale=scales[k],
                lmo=lmo,
                constrained=constrained,
            )
    return {k: _torch_layout(k, v) for k, v in w.items()}


def _run_scion(tx, params, grads_seq):
    state = tx.init(params)
    update = jax.jit(tx.update)
    for grads in grads_seq:
        u, state = update(grads, state, params)
        params = optax.apply_updates(params, u)
    return params


def _problem(steps=3):
    params = {
        k: jnp.asarray(_randn(i, s), jnp.float32) for i, (k, (s, _, _)) in enumerate(GROUPS.items())
    }
    grads_seq = [
        {
            k: jnp.asarray(_randn(100 * t + i, s), jnp.float32)
            for i, (k, (s, _, _)) in enumerate(GROUPS.items())
        }
        for t in range(steps)
    ]
    return params, grads_seq


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_constrained_per_group_scales_equal_reference():
    """Reference constrained Scion, groups scaled (1, 3, 10, 3): W ← (1 − η)W − η·c·lmo.
    Here: Role(radius=c) with weight_decay=1 (decay scaled by η, not by η·c)."""
    scales = {"embed": 1.0, "hidden": 3.0, "head": 10.0, "bias": 3.0}
    params, grads_seq = _problem()
    want = _run_reference(params, grads_seq, 0.05, 0.3, scales, constrained=True)
    rules = [(f"^{k}$", Role(GROUPS[k][2], radius=c)) for k, c in scales.items()]
    tx = scion_jax.scion(0.05, rules, momentum=0.3, weight_decay=1.0, ns_coeffs="svd")
    got = _run_scion(tx, params, grads_seq)
    for k in GROUPS:
        assert _rel(got[k], want[k]) < 1e-5, (k, _rel(got[k], want[k]))
    # The obvious translation (lr_scale=c) decays by (1 − η·c): not the reference.
    wrong = [(f"^{k}$", Role(GROUPS[k][2], lr_scale=c)) for k, c in scales.items()]
    tx = scion_jax.scion(0.05, wrong, momentum=0.3, weight_decay=1.0, ns_coeffs="svd")
    got = _run_scion(tx, params, grads_seq)
    assert _rel(got["head"], want["head"]) > 0.1


def test_unconstrained_scale_is_lr_scale_or_radius():
    scales = {"embed": 1.0, "hidden": 0.125, "head": 1.0, "bias": 0.125}
    params, grads_seq = _problem(2)
    want = _run_reference(params, grads_seq, 0.05, 1.0, scales, constrained=False)
    for field in ("lr_scale", "radius"):
        rules = [(f"^{k}$", Role(GROUPS[k][2], **{field: c})) for k, c in scales.items()]
        got = _run_scion(scion_jax.scion(0.05, rules, ns_coeffs="svd"), params, grads_seq)
        for k in GROUPS:
            assert _rel(got[k], want[k]) < 1e-5, (field, k)


def test_weight_decay_mask():
    """Global λ = 0.1 with Role(weight_decay=0.0) on the bias: AdamW-style masked decay."""
    params, grads_seq = _problem(2)
    decay = {"embed": 0.1, "hidden": 0.1, "head": 0.1}  # the bias masked off
    want = _run_reference(params, grads_seq, 0.05, 1.0, dict.fromkeys(GROUPS, 1.0), False, decay)
    rules = [
        (f"^{k}$", Role(GROUPS[k][2], weight_decay=0.0 if k == "bias" else None)) for k in GROUPS
    ]
    got = _run_scion(
        scion_jax.scion(0.05, rules, weight_decay=0.1, ns_coeffs="svd"), params, grads_seq
    )
    for k in GROUPS:
        assert _rel(got[k], want[k]) < 1e-5, k
    # The only decay is per role: no global λ needed.
    rules = [(f"^{k}$", Role(GROUPS[k][2], weight_decay=decay.get(k, 0.0))) for k in GROUPS]
    got = _run_scion(scion_jax.scion(0.05, rules, ns_coeffs="svd"), params, grads_seq)
    for k in GROUPS:
        assert _rel(got[k], want[k]) < 1e-5, k


# ----- 5. conv kernels -----
def test_conv_spectral_equals_reference_spectral_conv():
    g_flax = _randn(7, (3, 3, 4, 8))  # [k, k, c_in, c_out]
    g_torch = g_flax.transpose(3, 2, 0, 1)  # [c_out, c_in, k, k]
    want = ref_spectral_conv(g_torch).transpose(2, 3, 1, 0)
    g = {"conv": jnp.asarray(g_flax, jnp.float32)}

    def direction(role):
        tx = scion_jax.scion(1.0, [(".*", role)], ns_coeffs="svd")
        return np.asarray(tx.update(g, tx.init(g))[0]["conv"], np.float64) * -1

    got = direction(Role("conv_spectral"))
    assert _rel(got, want) < 1e-5
    matrix_view = direction(Role("rms_to_rms", in_axes=(0, 1, 2)))
    np.testing.assert_allclose(matrix_view, 3 * got, rtol=1e-4, atol=1e-6)  # k× larger
    # init at norm 1 in the conv norm; the norm is k × the matrix view's RMS→RMS norm.
    w = scion_jax.init_params(
        jax.random.key(0), {"conv": jnp.zeros((3, 3, 4, 8))}, [(".*", "conv_spectral")]
    )
    norms = scion_jax.layer_norms(w, [(".*", "conv_spectral")], which=("role", "rms_to_rms"))
    assert float(norms["conv_spectral/conv"]) == pytest.approx(1.0, rel=1e-5)
    assert float(norms["rms_to_rms/conv"]) == pytest.approx(1 / 3, rel=1e-5)


# ----- 6. messages -----
def test_messages():
    with pytest.raises(ValueError, match=r"in_axes \(0,\) and out_axes \(0,\) overlap"):
        scion_jax.scion(0.1, [(".*", Role("rms_to_rms", in_axes=0, out_axes=0))]).init(
            {"w": jnp.ones((4, 4))}
        )
    with pytest.raises(
        ValueError, match=r"residual rules \['attn/o\(/\|\$\)', 'mlp/w2\(/\|\$\)'\]"
    ):
        scion_jax.init_params(
            jax.random.key(0), {"w": jnp.ones((4, 4))}, [(".*", "rms_to_rms")], n_layers=2
        )
    for doc in (scion_jax.scion.__doc__, open(os.path.join(ROOT, "README.md")).read()):
        assert "μ = 1 − β" in doc


# ----- 9. porting rows (docs/PORTING.md) -----
def test_port_lmos_match_reference_layouts():
    """Each reference norm on its torch layout = the scion_jax norm on the flax layout."""
    cases = {  # scion_jax norm: (flax shape, reference lmo, torch layout of the flax array)
        "l1_to_rms": ((24, 16), ref_col_norm_transposed, lambda x: x),
        "rms_to_rms": ((16, 20), ref_spectral, lambda x: x.T),
        "rms_to_inf": ((20, 24), ref_row_norm, lambda x: x.T),
        "sign": ((20, 24), ref_sign, lambda x: x.T),
        "bias_rms": ((24,), ref_bias_rms, lambda x: x),
    }
    for i, (norm, (shape, lmo, to_torch)) in enumerate(cases.items()):
        g = _randn(i, shape)
        tx = scion_jax.scion(1.0, [(".*", norm)], ns_coeffs="svd")
        got = -np.asarray(tx.update({"p": jnp.asarray(g, jnp.float32)}, tx.init({"p": g}))[0]["p"])
        assert _rel(to_torch(got), lmo(to_torch(g))) < 1e-5, norm


def test_port_momentum_is_one_minus_beta():
    """optax.trace(β) (torch SGD's m ← βm + g) before Scion = Scion's momentum=1 − β."""
    params, grads_seq = _problem(3)
    rules = [(f"^{k}$", GROUPS[k][2]) for k in GROUPS]
    beta = 0.9
    traced = optax.chain(optax.trace(decay=beta), scion_jax.scion(0.05, rules, ns_coeffs="svd"))
    native = scion_jax.scion(0.05, rules, momentum=1 - beta, ns_coeffs="svd")
    a, b = _run_scion(traced, params, grads_seq), _run_scion(native, params, grads_seq)
    for k in GROUPS:
        assert _rel(a[k], b[k]) < 1e-5, k


def test_port_eps_zero_gradient():
    """A zero gradient gives a zero update (no NaN), as the reference's +ε does."""
    g = {k: jnp.zeros(s) for k, (s, _, _) in GROUPS.items()}
    rules = [(f"^{k}$", GROUPS[k][2]) for k in GROUPS]
    tx = scion_jax.scion(0.05, rules)
    u, _ = tx.update(g, tx.init(g))
    for k in GROUPS:
        np.testing.assert_array_equal(np.asarray(u[k]), 0.0)
    for k in ("embed", "head", "bias"):  # the reference's row/column LMOs
        np.testing.assert_array_equal(GROUPS[k][1](np.zeros(GROUPS[k][0])), 0.0)


# ----- 8. Disco-parity norm logging -----
def test_norm_logger_params_updates_groups_extra():
    from scion_jax.train.metrics import norm_logger

    params, grads_seq = _problem(1)
    params["stack"] = jnp.asarray(_randn(9, (2, 16, 20)), jnp.float32)
    grads = {**grads_seq[0], "stack": jnp.asarray(_randn(10, (2, 16, 20)), jnp.float32)}
    rules = [(f"^{k}$", Role(GROUPS[k][2], lr_scale=0.5 if k == "hidden" else 1.0)) for k in GROUPS]
    rules.append(("^stack$", Role("rms_to_rms", lr_scale=0.5, batch_axes=0)))
    tx = scion_jax.scion(0.1, rules, ns_coeffs="svd")
    new = optax.apply_updates(params, tx.update(grads, tx.init(params))[0])
    log = jax.jit(norm_logger(rules, ("supremum", "condition_number")))(new, params)
    for key, want in {
        "update/l1_to_rms/embed": 0.1,
        "update/rms_to_inf/head": 0.1,
        "update/rms_to_rms/hidden": 0.05,
        "update/rms_to_rms/stack/1": 0.05,
        "update/norm_hidden/max": 0.1,  # the bias (bias_rms, lr_scale 1) is hidden too
        "update/norm_output/mean": 0.1,
    }.items():
        assert float(log[key]) == pytest.approx(want, rel=1e-4), key
    w = np.asarray(new["hidden"], np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    assert float(log["condition_number/hidden"]) == pytest.approx(s[0] / s[-1], rel=1e-4)
    assert float(log["supremum/stack/0"]) == pytest.approx(
        np.abs(np.asarray(new["stack"][0])).max()
    )
    hidden = [
        float(log[k])
        for k in ("rms_to_rms/hidden", "rms_to_rms/stack/0", "rms_to_rms/stack/1", "bias_rms/bias")
    ]
    assert float(log["norm_hidden/max"]) == pytest.approx(max(hidden), rel=1e-6)
    assert float(log["norm_hidden/mean"]) == pytest.approx(np.mean(hidden), rel=1e-6)


def test_trainer_logs_update_norms(tmp_path):
    from scion_jax.train import base_config, train
    from scion_jax.train.metrics import read_rows

    for i in range(10):  # documents: some go to the held-out split
        (tmp_path / f"doc{i}.txt").write_text("the king and queen walk in the garden " * 60)
    c = base_config()
    c.steps, c.batch_size, c.seq_len = 4, 4, 16
    c.model.update(d_model=32, n_layers=1, n_heads=1, head_dim=32)
    c.optimizer.learning_rate = 2.0**-4
    c.data.source = str(tmp_path / "*.txt")
    c.log_every, c.norm_every, c.eval_every, c.checkpoint_every = 2, 2, 4, 4
    c.mesh.data, c.eval_batches = 1, 1
    c.norm_extra = ("supremum", "condition_number")
    train(c, str(tmp_path / "run"))
    rows = [r for r in read_rows(str(tmp_path / "run" / "metrics.jsonl")) if r["step"] in (2, 4)]
    assert len(rows) == 2
    for row in rows:
        assert row["update/rms_to_inf/unembed/kernel"] == pytest.approx(2.0**-4, rel=1e-3)
        assert row["norm_output/max"] == row["output_norm"]
        assert "condition_number/layers/0/attn/q/kernel" in row
        assert "update/supremum/layers/0/mlp/w2/kernel" in row and "update/norm_hidden/mean" in row
    c.norm_extra = ("spectral",)
    with pytest.raises(ValueError, match="config.norm_extra='spectral'.*condition_number"):
        train(c, str(tmp_path / "bad"))


def test_porting_guide_rows_name_existing_tests():
    text = open(os.path.join(ROOT, "PORTING.md")).read()
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next(i for i in range(first, len(lines)) if not lines[i].startswith("|"))
    rows = lines[first + 2 : end]  # the body of the first table (the porting table)
    assert len(rows) >= 14
    for row in rows:  # every row names its test ("same": the row above's)
        last = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        assert last == "same" or re.search(r"`(tests/\w+\.py::)?test_\w+`", last), row
    named = re.findall(r"`(?:(tests/\w+\.py)::)?(test_\w+)`", text)
    for path, name in named:
        source = open(os.path.join(ROOT, path or "tests/test_interop.py")).read()
        assert f"def {name}(" in source, name
    assert "PORTING.md" in open(os.path.join(ROOT, "README.md")).read()
