"""Approximate polar factor orth(G) = U Vᵀ (G = U Σ Vᵀ) by Newton–Schulz iterations.

PAPER.md §3: X ← G / (‖G‖_F·s + ε); repeat X ← a·X + (b·A + c·A²)·X with A = X Xᵀ,
on the short side (X is m×n with m ≤ n). Matmuls take `dtype` operands with fp32
accumulation (`preferred_element_type`), the fastest path on CPU, GPU and TPU alike.
FLOPs per step: 4m²n + 2m³.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

MUON = ((3.4445, -4.7750, 2.0315),)
# Polar Express (Amsel et al., arXiv 2505.16932), one triple per step; the last repeats.
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
PRESETS = {"muon": (MUON, 1.0), "polar_express": (POLAR_EXPRESS, 1.02)}
VALID_COEFFS = (*PRESETS, "svd", "a sequence of (a, b, c) triples")

Coeffs = str | Sequence[float] | Sequence[Sequence[float]]


def resolve_coeffs(ns_coeffs: Coeffs) -> tuple[np.ndarray, float] | None:
    """([steps, 3] coefficient table, Frobenius safety factor), or None for "svd"."""
    if isinstance(ns_coeffs, str):
        if ns_coeffs == "svd":
            return None
        if ns_coeffs not in PRESETS:
            raise ValueError(f"Unknown ns_coeffs {ns_coeffs!r}; valid: {VALID_COEFFS}.")
        table, safety = PRESETS[ns_coeffs]
        return np.asarray(table, np.float64), safety
    table = np.asarray(ns_coeffs, np.float64)
    if table.ndim == 1:
        table = table[None]
    if table.ndim != 2 or table.shape[1] != 3:
        raise ValueError(f"ns_coeffs must be (a, b, c) or [(a, b, c), ...]; got {ns_coeffs!r}.")
    return table, 1.0


def _dot(x: jax.Array, y: jax.Array, x_contract: int, y_contract: int) -> jax.Array:
    """Batched matmul over leading axes, fp32 accumulation, no materialized transpose."""
    batch = tuple(range(x.ndim - 2))
    dims = (((x_contract,), (y_contract,)), (batch, batch))
    return jax.lax.dot_general(x, y, dims, preferred_element_type=jnp.float32)


def _gram(x: jax.Array) -> jax.Array:  # X Xᵀ (also A·A = A Aᵀ for symmetric A)
    return _dot(x, x, x.ndim - 1, x.ndim - 1)


def _matmul(x: jax.Array, y: jax.Array) -> jax.Array:
    return _dot(x, y, x.ndim - 1, y.ndim - 2)


def newton_schulz(
    g: jax.Array,
    ns_coeffs: Coeffs = "muon",
    ns_steps: int | jax.Array = 5,
    dtype: jnp.dtype = jnp.bfloat16,
) -> jax.Array:
    """Approximate orth(g) over the last two axes; leading axes are a batch.

    Args:
      g: ``[..., m, n]`` array.
      ns_coeffs: "muon", "polar_express", "svd" (exact, via SVD) or explicit triples.
      ns_steps: number of iterations (may be a traced integer, e.g. under
        `optax.inject_hyperparams`); steps past the table repeat its last triple.
      dtype: matmul operand dtype (accumulation is fp32).

    Returns:
      fp32 ``[..., m, n]`` with singular values near 1 (exactly 1 for "svd").
    """
    resolved = resolve_coeffs(ns_coeffs)
    if resolved is None:
        return polar_svd(g)
    table, safety = resolved
    transpose = g.shape[-2] > g.shape[-1]
    x = jnp.swapaxes(g, -1, -2) if transpose else g
    x = x.astype(jnp.float32)
    fro = jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))
    x = (x / (fro * safety + 1e-7)).astype(dtype)
    table = jnp.asarray(table, jnp.float32)

    def step(i, x):
        a, b, c = table[jnp.minimum(i, table.shape[0] - 1)]
        gram = _gram(x)
        poly = (b * gram + c * _gram(gram.astype(dtype))).astype(dtype)
        return (a * x.astype(jnp.float32) + _matmul(poly, x)).astype(dtype)

    if isinstance(ns_steps, (int, np.integer)):
        for i in range(int(ns_steps)):  # unrolled: lets XLA fuse the elementwise tails
            x = step(i, x)
    else:
        x = jax.lax.fori_loop(0, ns_steps, step, x)
    x = x.astype(jnp.float32)
    return jnp.swapaxes(x, -1, -2) if transpose else x


def polar_svd(g: jax.Array) -> jax.Array:
    """Exact polar factor U Vᵀ over the last two axes (fp32)."""
    u, _, vt = jnp.linalg.svd(g.astype(jnp.float32), full_matrices=False)
    return u @ vt


def flops(m: int, n: int, steps: int) -> int:
    """FLOPs of `steps` Newton–Schulz iterations on an m×n matrix (PAPER.md §3)."""
    m, n = min(m, n), max(m, n)
    return steps * (4 * m * m * n + 2 * m**3)
