"""The faster Newton–Schulz variants (Gram NS, AOL preconditioning) against float64.

Like the presets in test_lmo: each variant equals its float64 iteration in fp32, and in
bf16 lands in the same singular-value band / cosine to the exact polar factor.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import scion_jax
from scion_jax.newton_schulz import MUON, POLAR_EXPRESS, newton_schulz, use_gram
from scion_jax.train.config import base_config, validate

ns_module = sys.modules["scion_jax.newton_schulz"]
WIDE = (40, 144)  # aspect 3.6: Gram NS runs here (in bf16 and fp32)


def _numpy_ns(g, table, safety, steps, aol=False):
    """The plain iteration (PAPER.md §3), with AOL's row rescaling first, in float64."""
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) * safety + 1e-7)
    if aol:
        x = x / np.sqrt(np.abs(x @ x.T).sum(axis=1, keepdims=True))
    for i in range(steps):
        a, b, c = table[min(i, len(table) - 1)]
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def _polar(g):
    u, _, vt = np.linalg.svd(np.asarray(g, np.float64), full_matrices=False)
    return u @ vt


def _spectrum(key, shape, low):
    """Random singular vectors, singular values spread geometrically over [low, 1]."""
    m, n = shape[-2:]
    k = min(m, n)
    q1 = np.linalg.qr(np.asarray(jax.random.normal(key, (m, k)), np.float64))[0]
    q2 = np.linalg.qr(np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (n, k))))[0]
    return ((q1 * np.geomspace(low, 1.0, k)) @ q2.T).astype(np.float32)


def _quality(x, g):
    """(σ_min, σ_max, cosine with the float64 polar factor)."""
    x = np.asarray(x, np.float64)
    ref = _polar(g)
    s = np.linalg.svd(x, compute_uv=False)
    return s.min(), s.max(), np.sum(x * ref) / (np.linalg.norm(x) * np.linalg.norm(ref))


def _rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize(
    "preset,table,safety", [("muon", MUON, 1.0), ("polar_express", POLAR_EXPRESS, 1.02)]
)
def test_fp32_variants_equal_float64_iteration(preset, table, safety):
    """Gram NS is the plain iteration rearranged; AOL is one row rescaling before it."""
    for shape, aol, gram in [
        (WIDE, False, True),
        (WIDE[::-1], True, False),
        (WIDE, True, True),
        ((2, *WIDE[::-1]), True, True),
    ]:
        g = np.asarray(jax.random.normal(jax.random.key(0), shape), np.float64)
        want = np.stack([_numpy_ns(m, table, safety, 5, aol) for m in g.reshape(-1, *shape[-2:])])
        got = newton_schulz(
            jnp.asarray(g, jnp.float32),
            preset,
            5,
            jnp.float32,
            gram=gram,
            preconditioning="aol" if aol else "frobenius",
        )
        # fp32 Gram NS rounds more (R and Q carry the errors): 2e-4, still far below a bug.
        assert _rel_err(got, want.reshape(shape)) < (2e-4 if gram else 2e-5), (shape, aol, gram)


def test_gram_restarts_keep_the_iteration(monkeypatch):
    """The bf16 restarts (X = Q X₀, R = X Xᵀ, Q = I) change no result in exact arithmetic:
    forced on in fp32, Gram NS still equals the float64 iteration."""
    g = np.asarray(jax.random.normal(jax.random.key(1), WIDE), np.float64)
    monkeypatch.setattr(ns_module, "gram_restarts", lambda steps, dtype: (1, 2, 4))
    got = newton_schulz(jnp.asarray(g, jnp.float32), "polar_express", 6, jnp.float32, gram=True)
    assert _rel_err(got, _numpy_ns(g, POLAR_EXPRESS, 1.02, 6)) < 2e-4


def test_gram_only_where_cheaper():
    assert use_gram(512, 1408, 5) and use_gram(1408, 512, 5, jnp.float32)
    assert not use_gram(512, 512, 5) and not use_gram(512, 640, 5)
    g = jax.random.normal(jax.random.key(2), (32, 32))
    np.testing.assert_array_equal(newton_schulz(g, gram=True), newton_schulz(g))


# (preset, steps, preconditioning, gram, band, min cosine) in bf16 on condition number 2
# (test_lmo's presets at 5 steps: muon (0.65, 1.15), 0.98; polar_express (0.85, 1.15), 0.995).
# Polar Express with Gram restarts reaches σ_max 1.1602 where the CPU has bf16 dot hardware
# (AVX-512-BF16 / AMX; below 1.16 where XLA:CPU emulates bf16 dots in fp32): hence 1.17.
BF16_CASES = [
    ("muon", 5, "frobenius", True, (0.65, 1.15), 0.98),
    ("polar_express", 5, "frobenius", True, (0.85, 1.17), 0.993),
    ("muon", 4, "aol", False, (0.65, 1.15), 0.98),  # AOL: one step fewer
    ("muon", 4, "aol", True, (0.65, 1.15), 0.98),
    ("polar_express", 5, "aol", True, (0.85, 1.17), 0.993),
]


@pytest.mark.parametrize("preset,steps,pre,gram,band,min_cos", BF16_CASES)
def test_bf16_variants_vs_float64_polar(preset, steps, pre, gram, band, min_cos):
    shape = (2, *WIDE[::-1])  # a stack of tall matrices
    keys = jax.random.split(jax.random.key(3), shape[0] if len(shape) == 3 else 1)
    g = np.stack([_spectrum(k, shape[-2:], 0.5) for k in keys]).reshape(shape)
    # jitted: XLA may fold the tall matrices' transpose into a matmul (a bf16 dot that
    # XLA:CPU cannot run unless newton_schulz prevents it).
    ns = jax.jit(
        lambda g: newton_schulz(g, preset, steps, jnp.bfloat16, gram=gram, preconditioning=pre)
    )
    x = ns(jnp.asarray(g))
    for xi, gi in zip(np.reshape(x, (-1, *shape[-2:])), g.reshape(-1, *shape[-2:]), strict=True):
        lo, hi, cos = _quality(xi, gi)
        assert band[0] < lo and hi < band[1] and cos >= min_cos, (lo, hi, cos)


def test_aol_lifts_small_singular_values():
    """On an ill-conditioned matrix (σ over [1e-3, 1]) AOL beats Frobenius scaling at equal
    Muon steps (4 and 5). (AOL at 4 steps does not reach Frobenius at 5 there: cosine
    0.92 vs 0.96; on well-conditioned matrices it does, see BF16_CASES.)"""
    g = _spectrum(jax.random.key(4), WIDE, 1e-3)
    for steps in (4, 5):
        fro, aol = (
            _quality(
                newton_schulz(jnp.asarray(g), "muon", steps, jnp.float32, preconditioning=pre), g
            )
            for pre in ("frobenius", "aol")
        )
        assert aol[2] > fro[2] + 0.005 and aol[0] > 1.5 * fro[0], (steps, fro, aol)


RULES = [
    ("embed", "l1_to_rms"),
    ("^c$", scion_jax.Role("rms_to_rms", batch_axes=0)),  # a stack of 3 matrices
    (".*", "rms_to_rms"),
]


def test_partitioned_and_traced_match_plain():
    """The options reach every path: mesh-partitioned (8 devices) and injected ns_steps."""
    rng = np.random.default_rng(5)
    grads = {
        "a": rng.standard_normal((64, 192)),
        "b": rng.standard_normal((192, 64)),
        "c": rng.standard_normal((3, 64, 192)),
        "embed": rng.standard_normal((32, 64)),
    }
    grads = {k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}
    kw = dict(ns_dtype="float32", ns_gram=True, ns_preconditioning="aol")
    plain = scion_jax.scion(1.0, RULES, **kw)
    want = plain.update(grads, plain.init(grads))[0]
    # Differs from the default: the options are really applied.
    default = scion_jax.scion(1.0, RULES, ns_dtype="float32")
    assert np.abs(want["a"] - default.update(grads, default.init(grads))[0]["a"]).max() > 1e-3
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Explicit,))
    sharded = {
        k: jax.device_put(
            v, NamedSharding(mesh, P(None, "fsdp") if v.ndim == 2 else P(None, None, "fsdp"))
        )
        for k, v in grads.items()
    }
    opt = scion_jax.scion(1.0, RULES, mesh=mesh, **kw)
    got = jax.jit(lambda g: opt.update(g, opt.init(g))[0])(sharded)
    for k in grads:
        assert _rel_err(got[k], want[k]) < 2e-4, k  # fp32 Gram NS rounding (see above)
    # AOL under a traced step count (Gram NS needs static steps: plain iteration there).
    traced = jax.jit(lambda g, n: newton_schulz(g, "muon", n, jnp.float32, preconditioning="aol"))(
        grads["a"], 5
    )
    np.testing.assert_allclose(
        traced,
        newton_schulz(grads["a"], "muon", 5, jnp.float32, preconditioning="aol"),
        rtol=1e-4,
        atol=1e-6,
    )


def test_bad_options_name_valid_choices():
    with pytest.raises(ValueError, match="ns_preconditioning 'spectral'.*frobenius.*aol"):
        scion_jax.scion(0.1, RULES, ns_preconditioning="spectral")
    config = base_config()
    config.optimizer.ns_preconditioning = "schatten"
    with pytest.raises(ValueError, match="optimizer.ns_preconditioning.*frobenius, aol"):
        validate(config, 1)
