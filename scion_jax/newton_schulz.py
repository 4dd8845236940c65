"""Approximate polar factor orth(G) = U Vᵀ (G = U Σ Vᵀ) by Newton–Schulz iterations.

PAPER.md §3: X ← G / (‖G‖_F·s + ε); repeat X ← a·X + (b·A + c·A²)·X with A = X Xᵀ,
on the short side (X is m×n with m ≤ n). Matmuls take `dtype` operands with fp32
accumulation (`preferred_element_type`), the fastest path on CPU, GPU and TPU alike.
FLOPs per step: 4m²n + 2m³.

Two faster variants, each optional:

- AOL preconditioning (Turbo-Muon, Boissin et al., arXiv 2512.04632): after the
  Frobenius scaling, row i of X is scaled by 1/√(Σ_j |A_ij|). This bounds ‖X‖₂ ≤ 1
  (Gershgorin) while lifting the small singular values far more than ‖X‖_F does: with
  the Muon coefficients, closer to the polar factor at equal steps, and as close with
  one step fewer on well-conditioned matrices (not on ill-conditioned ones). It reuses
  the first step's A: free.
- Gram Newton–Schulz: every iterate is X_k = Q_k X₀ with Q_k a polynomial in
  A₀ = X₀X₀ᵀ, so the iteration can run on m×m matrices only:
  P = a + b·R + c·R², Q ← P·Q, R ← P·R·P (= P²R, all commute), X = Q_K X₀ at the end.
  FLOPs: 4m²n + (8K − 2)m³ against K(4m²n + 2m³) without restarts; `gram=True`
  uses it only where it needs fewer FLOPs (e.g. an MLP's d × 8d/3). R and Q are kept
  in fp32 between steps (only the matmul operands are `dtype`). With bf16 operands R
  drifts from Q A₀ Qᵀ and the drift is amplified by the next steps (σ_max in the
  hundreds after 5 Polar Express steps), so bf16 runs restart (X = Q X₀, R = X Xᵀ,
  Q = I) after steps 2 and 3, then every other step: measured, this keeps Muon's and
  Polar Express's quality at the plain iteration's (restarting after 2 and 4 does not,
  for Polar Express's large early coefficients); fp32 needs no restart. Each restart
  costs 4m²n: at 5 steps Gram NS needs fewer FLOPs than the plain iteration for
  n > 1.5m (15% fewer at n = 2.75m in bf16, 31% in fp32).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.layout import Layout, with_layout_constraint

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
PRECONDITIONINGS = ("frobenius", "aol")

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


def check_preconditioning(preconditioning: str) -> None:
    if preconditioning not in PRECONDITIONINGS:
        raise ValueError(
            f"Unknown ns_preconditioning {preconditioning!r}; valid: {PRECONDITIONINGS}."
        )


def _dot(x: jax.Array, y: jax.Array, x_contract: int, y_contract: int) -> jax.Array:
    """Batched matmul over leading axes, fp32 accumulation, no materialized transpose."""
    batch = tuple(range(x.ndim - 2))
    dims = (((x_contract,), (y_contract,)), (batch, batch))
    return jax.lax.dot_general(x, y, dims, preferred_element_type=jnp.float32)


def _gram(x: jax.Array) -> jax.Array:  # X Xᵀ (also A·A = A Aᵀ for symmetric A)
    return _dot(x, x, x.ndim - 1, x.ndim - 1)


def _matmul(x: jax.Array, y: jax.Array) -> jax.Array:
    return _dot(x, y, x.ndim - 1, y.ndim - 2)


def _aol(x: jax.Array, gram: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """AOL rescaling (arXiv 2512.04632, eq. 3): X ← S X, A ← S A S, S = diag(1/√Σ_j|A_ij|)."""
    s = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(gram), axis=-1, keepdims=True), 1e-30))
    x = (x.astype(jnp.float32) * s).astype(dtype)
    return x, gram * s * jnp.swapaxes(s, -1, -2)


def gram_restarts(steps: int, dtype) -> tuple[int, ...]:
    """Steps after which Gram Newton–Schulz restarts (none in fp32 or wider)."""
    if jnp.finfo(dtype).bits >= 32:
        return ()
    return tuple(i for i in range(2, steps) if i in (2, 3) or i % 2)


def use_gram(m: int, n: int, steps: int, dtype=jnp.bfloat16) -> bool:
    """Whether Gram Newton–Schulz needs fewer FLOPs than the plain iteration here."""
    return flops(m, n, steps, gram=True, dtype=dtype) < flops(m, n, steps)


def newton_schulz(
    g: jax.Array,
    ns_coeffs: Coeffs = "muon",
    ns_steps: int | jax.Array = 5,
    dtype: jnp.dtype = jnp.bfloat16,
    *,
    gram: bool = False,
    preconditioning: str = "frobenius",
) -> jax.Array:
    """Approximate orth(g) over the last two axes; leading axes are a batch.

    Args:
      g: ``[..., m, n]`` array.
      ns_coeffs: "muon", "polar_express", "svd" (exact, via SVD) or explicit triples.
      ns_steps: number of iterations (may be a traced integer, e.g. under
        `optax.inject_hyperparams`); steps past the table repeat its last triple.
      dtype: matmul operand dtype (accumulation is fp32).
      gram: run Gram Newton–Schulz where it needs fewer FLOPs (``n ≳ 2m``; static
        `ns_steps` only, the plain iteration otherwise).
      preconditioning: "frobenius" (PAPER.md §3) or "aol" (then Frobenius, then AOL).

    Returns:
      fp32 ``[..., m, n]`` with singular values near 1 (exactly 1 for "svd").
    """
    check_preconditioning(preconditioning)
    resolved = resolve_coeffs(ns_coeffs)
    if resolved is None:
        return polar_svd(g)
    table, safety = resolved
    transpose = g.shape[-2] > g.shape[-1]
    x = _row_major(jnp.swapaxes(g, -1, -2)) if transpose else g
    x = x.astype(jnp.float32)
    fro = jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))
    x = (x / (fro * safety + 1e-7)).astype(dtype)
    static = isinstance(ns_steps, (int, np.integer))
    aol = preconditioning == "aol"
    if static and gram and use_gram(x.shape[-2], x.shape[-1], int(ns_steps), dtype):
        x = _gram_newton_schulz(x, table, int(ns_steps), dtype, aol)
        # Keeps XLA from folding the transpose back into the last matmul: XLA:CPU has
        # no bf16 dot with a transposed left operand ("Unsupported element type").
        x = jax.lax.optimization_barrier(x) if transpose else x
    else:
        x = _newton_schulz(x, table, ns_steps, dtype, aol)
    x = x.astype(jnp.float32)
    return jnp.swapaxes(x, -1, -2) if transpose else x


def _row_major(x: jax.Array) -> jax.Array:
    """x, stored row-major on the CPU. Left to itself XLA:CPU keeps a tall matrix's
    transpose as a column-major view; it has no bf16 dot for that layout, so every
    iteration's matmuls ran upcast to fp32: 3.2× the time of the same matrix stored wide
    (experiments/benchmarks/README.md)."""
    if jax.default_backend() != "cpu":
        return x
    return with_layout_constraint(x, Layout(major_to_minor=tuple(range(x.ndim))))


def _newton_schulz(
    x: jax.Array, table: np.ndarray, ns_steps: int | jax.Array, dtype, aol: bool
) -> jax.Array:
    """The plain iteration on ``x [..., m, n]`` (m ≤ n, `dtype`, Frobenius-scaled)."""
    table = jnp.asarray(table, jnp.float32)

    def step(i, x, gram=None):
        a, b, c = table[jnp.minimum(i, table.shape[0] - 1)]
        gram = _gram(x) if gram is None else gram
        poly = (b * gram + c * _gram(gram.astype(dtype))).astype(dtype)
        return (a * x.astype(jnp.float32) + _matmul(poly, x)).astype(dtype)

    if isinstance(ns_steps, (int, np.integer)):
        first = _aol(x, _gram(x), dtype) if aol else (x, None)
        x, gram = first
        for i in range(int(ns_steps)):  # unrolled: lets XLA fuse the elementwise tails
            x = step(i, x, gram if i == 0 else None)
        return x
    if aol:  # traced step count: AOL on its own Gram before the loop (one extra X Xᵀ)
        x, _ = _aol(x, _gram(x), dtype)
    return jax.lax.fori_loop(0, ns_steps, step, x)


def _gram_newton_schulz(
    x: jax.Array, table: np.ndarray, steps: int, dtype, aol: bool
) -> jax.Array:
    """Gram Newton–Schulz on ``x [..., m, n]`` (m ≤ n): K steps on m×m matrices only.

    Exact arithmetic gives the plain iteration's X_K: X_k = Q_k X₀, A_k = R_k = Q_k A₀ Q_kᵀ
    and P_k = a + b R_k + c R_k² commutes with R_k and Q_k (polynomials in A₀), so
    X_{k+1} = P_k X_k gives Q_{k+1} = P_k Q_k and R_{k+1} = P_k R_k P_k.
    """
    restarts = gram_restarts(steps, dtype)
    r = _gram(x)
    if aol:
        x, r = _aol(x, r, dtype)
    eye = jnp.eye(x.shape[-2], dtype=jnp.float32)
    q = None  # identity
    for i in range(steps):
        a, b, c = (float(v) for v in table[min(i, table.shape[0] - 1)])
        r_op = r.astype(dtype)
        p = a * eye + b * r + c * _gram(r_op)  # R² = R Rᵀ (R symmetric)
        p_op = p.astype(dtype)
        q = p if q is None else _matmul(p_op, q.astype(dtype))
        if i == steps - 1:
            break
        if i + 1 in restarts:  # X = Q X₀ and its Gram afresh; Q back to identity
            x = _matmul(q.astype(dtype), x).astype(dtype)
            r, q = _gram(x), None
        else:
            r = _matmul(p_op, _matmul(p_op, r_op).astype(dtype))
    return x if q is None else _matmul(q.astype(dtype), x)


def polar_svd(g: jax.Array) -> jax.Array:
    """Exact polar factor U Vᵀ over the last two axes (fp32)."""
    u, _, vt = jnp.linalg.svd(g.astype(jnp.float32), full_matrices=False)
    return u @ vt


def flops(m: int, n: int, steps: int, gram: bool = False, dtype=jnp.bfloat16) -> int:
    """FLOPs of `steps` Newton–Schulz iterations on an m×n matrix (PAPER.md §3); with
    `gram`, of Gram Newton–Schulz as `_gram_newton_schulz` runs it for `dtype` operands."""
    m, n = min(m, n), max(m, n)
    if not gram:
        return steps * (4 * m * m * n + 2 * m**3)
    if steps == 0:
        return 0
    restarts = gram_restarts(steps, dtype)
    total = 2 * m * m * n  # A₀
    for i in range(steps):
        total += 2 * m**3 + (2 * m**3 if i > 0 and i not in restarts else 0)  # R², P·Q
        if i == steps - 1:
            break
        if i + 1 in restarts:
            total += 4 * m * m * n  # X = Q X₀, R = X Xᵀ
        else:
            total += 4 * m**3  # P·R·P
    return total + 2 * m * m * n  # X = Q X₀
