"""Each LMO returns a unit-norm direction in its own norm that attains the dual norm."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scion_jax
from scion_jax import Role
from scion_jax.newton_schulz import POLAR_EXPRESS, newton_schulz

D_IN, D_OUT = 24, 40


def _dual(g: np.ndarray, norm: str) -> float:
    """Closed-form dual norm max_{‖u‖=1} ⟨g, u⟩ (g in flax layout [d_in, d_out])."""
    if norm == "bias_rms":
        return np.sqrt(g.size) * np.linalg.norm(g)
    d_in, d_out = g.shape[-2], g.shape[-1]
    if norm == "l1_to_rms":
        return np.sqrt(d_out) * np.linalg.norm(g, axis=1).sum()
    if norm == "rms_to_inf":
        return np.linalg.norm(g, axis=0).sum() / np.sqrt(d_in)
    if norm == "rms_to_rms":
        return np.sqrt(d_out / d_in) * np.linalg.svd(g, compute_uv=False).sum()
    assert norm == "sign"
    return np.abs(g).sum() / d_in


def _direction(g, norm):
    """u = LMO(g) through the public transform: the update is -η·u with η = 1."""
    rules = [(".*", Role(norm))]
    tx = scion_jax.scion(1.0, rules, ns_coeffs="svd")
    updates, _ = tx.update({"w": g}, tx.init({"w": g}))
    return -np.asarray(updates["w"], np.float64)


@pytest.mark.parametrize("norm", ["l1_to_rms", "rms_to_inf", "rms_to_rms", "sign", "bias_rms"])
def test_lmo_is_unit_and_attains_dual(norm):
    rng = np.random.default_rng(0)
    shape = (D_OUT,) if norm == "bias_rms" else (D_IN, D_OUT)
    g = rng.standard_normal(shape).astype(np.float32)
    u = _direction(jnp.asarray(g), norm)
    g64 = g.astype(np.float64)
    own = float(scion_jax.operator_norm(jnp.asarray(u, jnp.float32), norm))
    assert own == pytest.approx(1.0, rel=1e-5)
    attained = float(np.sum(g64 * u))
    assert attained == pytest.approx(_dual(g64, norm), rel=1e-5)
    # No random unit-norm direction does better.
    for _ in range(50):
        v = rng.standard_normal(shape)
        v /= float(scion_jax.operator_norm(jnp.asarray(v, jnp.float32), norm))
        assert np.sum(g64 * v) <= attained * (1 + 1e-6)


def test_lmo_respects_custom_axes():
    """A conv kernel [h, w, c_in, c_out] is the matrix [h·w·c_in, c_out]."""
    g = jax.random.normal(jax.random.key(1), (3, 3, 4, 8))
    conv = _direction_with_role(g, Role("rms_to_rms", in_axes=(0, 1, 2)))
    flat = _direction_with_role(g.reshape(36, 8), Role("rms_to_rms"))
    np.testing.assert_allclose(conv.reshape(36, 8), flat, rtol=1e-5, atol=1e-6)


def test_stacked_lmo_is_per_matrix():
    g = jax.random.normal(jax.random.key(2), (3, D_IN, D_OUT))
    for norm in ("rms_to_rms", "l1_to_rms", "rms_to_inf"):
        stacked = _direction_with_role(g, Role(norm, batch_axes=0))
        for i in range(3):
            np.testing.assert_allclose(
                stacked[i], _direction_with_role(g[i], Role(norm)), rtol=1e-5, atol=1e-6
            )


def _direction_with_role(g, role):
    tx = scion_jax.scion(1.0, [(".*", role)], ns_coeffs="svd")
    updates, _ = tx.update({"w": g}, tx.init({"w": g}))
    return -np.asarray(updates["w"])


def _reference_polar(g: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(g.astype(np.float64), full_matrices=False)
    return u @ vt


def _well_conditioned(key, shape):
    """Singular values in [0.5, 1] (condition number 2), where every preset reaches its band."""
    m, n = shape[-2:]
    k = min(m, n)
    q1 = np.linalg.qr(np.asarray(jax.random.normal(key, (*shape[:-2], m, k))))[0]
    q2 = np.linalg.qr(
        np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (*shape[:-2], n, k)))
    )[0]
    s = np.linspace(0.5, 1.0, k)
    return (q1 * s) @ np.swapaxes(q2, -1, -2)


# (preset, dtype, band of singular values after 5 steps, min cosine with the polar factor).
# The Muon quintic does not converge to 1 by design: its singular values oscillate in
# about (0.68, 1.13), which caps the cosine near 0.987; Polar Express lands in (0.86, 1.14).
NS_CASES = [
    ("muon", jnp.float32, (0.65, 1.15), 0.98),
    ("muon", jnp.bfloat16, (0.65, 1.15), 0.98),
    ("polar_express", jnp.float32, (0.85, 1.15), 0.995),
    ("polar_express", jnp.bfloat16, (0.85, 1.15), 0.995),
]


@pytest.mark.parametrize("preset,dtype,band,min_align", NS_CASES)
@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (2, 3, 32, 32)])
def test_newton_schulz_vs_float64_polar(preset, dtype, band, min_align, shape):
    g = _well_conditioned(jax.random.key(3), shape)
    x = np.asarray(newton_schulz(jnp.asarray(g, jnp.float32), preset, 5, dtype), np.float64)
    ref = _reference_polar(g)
    s = np.linalg.svd(x, compute_uv=False)
    assert band[0] < s.min() and s.max() < band[1], (s.min(), s.max())
    align = np.sum(x * ref, axis=(-2, -1)) / (
        np.linalg.norm(x, axis=(-2, -1)) * np.linalg.norm(ref, axis=(-2, -1))
    )
    assert np.all(align >= min_align), align


def _numpy_newton_schulz(g: np.ndarray, table, safety: float, steps: int) -> np.ndarray:
    """PAPER.md §3 written out in float64."""
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (np.linalg.norm(x) * safety + 1e-7)
    for i in range(steps):
        a, b, c = table[min(i, len(table) - 1)]
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


@pytest.mark.parametrize(
    "preset,table,safety",
    [
        ("muon", [(3.4445, -4.7750, 2.0315)], 1.0),
        ("polar_express", POLAR_EXPRESS, 1.02),
    ],
)
@pytest.mark.parametrize("steps", [1, 5, 7])
def test_newton_schulz_fp32_equals_float64_iteration(preset, table, safety, steps):
    g = np.asarray(jax.random.normal(jax.random.key(4), (40, 24)), np.float64)
    ours = newton_schulz(jnp.asarray(g, jnp.float32), preset, steps, jnp.float32)
    np.testing.assert_allclose(
        ours, _numpy_newton_schulz(g, table, safety, steps), rtol=2e-4, atol=2e-5
    )


def test_newton_schulz_traced_steps_equal_static():
    g = jax.random.normal(jax.random.key(5), (32, 64))
    static = newton_schulz(g, "polar_express", 6, jnp.float32)
    traced = jax.jit(lambda g, n: newton_schulz(g, "polar_express", n, jnp.float32))(g, 6)
    np.testing.assert_allclose(static, traced, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("gram", [False, True])
@pytest.mark.parametrize("shape", [(96, 32), (3, 96, 32)])
def test_tall_newton_schulz_is_its_wide_transposes_bitwise(shape, gram):
    """A tall matrix (and stack) is orthogonalized as its transpose, stored wide: the same
    bf16 matmuls, so bitwise the same result (XLA:CPU once ran a tall matrix's iteration
    on a column-major view, with every matmul upcast to fp32)."""
    g = jax.random.normal(jax.random.key(7), shape)
    wide = jnp.asarray(np.swapaxes(np.asarray(g), -1, -2).copy())
    ns = jax.jit(lambda x: newton_schulz(x, gram=gram))
    np.testing.assert_array_equal(ns(g), np.swapaxes(np.asarray(ns(wide)), -1, -2))


def test_svd_backend_is_exact():
    g = jax.random.normal(jax.random.key(6), (3, 20, 12))
    x = scion_jax.newton_schulz(g, "svd")
    np.testing.assert_allclose(x, _reference_polar(np.asarray(g, np.float64)), atol=1e-5)
