"""Linear minimization oracles: the unit-norm direction u maximizing ⟨g, u⟩ (PAPER.md §2).

Matrices are in the matrix view ``[*batch, d_in, d_out]`` (see `rules.to_matrix`, which
brings any layout there). Every
LMO here except "rms_to_rms" is row- or column-local; "rms_to_rms" is supplied the
orthogonalized matrix by the caller, so that many matrices can be orthogonalized
together (batched, or partitioned across devices).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scion_jax.rules import Role, conv_kernel_area, from_matrix, matrix_view, to_matrix


def eps(dtype) -> float:
    """A dtype-safe tiny ε for normalisations (the paper uses 1e-20 in fp32)."""
    return float(jnp.finfo(dtype).tiny) ** 0.5


def _unit_l2(x: jax.Array, axis: int) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / (norm + eps(x.dtype))


def l1_to_rms(m: jax.Array) -> jax.Array:
    """Each input row to RMS 1: row / ‖row‖₂ · √d_out."""
    return _unit_l2(m, -1) * jnp.sqrt(m.shape[-1]).astype(m.dtype)


def rms_to_inf(m: jax.Array) -> jax.Array:
    """Each output column to L2 norm 1/√d_in."""
    return _unit_l2(m, -2) / jnp.sqrt(m.shape[-2]).astype(m.dtype)


def sign(m: jax.Array) -> jax.Array:
    """sign(g) / d_in (unit norm in d_in·max|W|, Scion's original output LMO)."""
    return jnp.sign(m) / m.shape[-2]


def rms_to_rms_scale(m_shape: tuple[int, ...]) -> float:
    """u = √(d_out/d_in) · orth(g): the RMS→RMS norm of u is exactly 1 for exact orth."""
    return (m_shape[-1] / m_shape[-2]) ** 0.5


def spectral_scale(role: Role, shape: tuple[int, ...]) -> float:
    """The factor on orth(g) for a parameter of `shape`: √(d_out/d_in) for "rms_to_rms";
    √(c_out/c_in)/k² for "conv_spectral" (reference SpectralConv), with d_in = k²·c_in."""
    _, mshape = matrix_view(role, shape)
    if role.norm == "conv_spectral":
        area = conv_kernel_area(role, shape)
        return (mshape[-1] / (mshape[-2] / area)) ** 0.5 / area
    return rms_to_rms_scale(mshape)


def bias_rms(x: jax.Array, role: Role) -> jax.Array:
    """g / RMS(g) over `role.out_axes` (default the last axis: the whole 1-D bias)."""
    out_axes = -1 if role.out_axes is None else role.out_axes
    axes = (out_axes,) if isinstance(out_axes, int) else out_axes
    n = 1
    for a in axes:
        n *= x.shape[a]
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True) / n)
    return x / (norm + eps(x.dtype))


ROW_LMOS = {"l1_to_rms": l1_to_rms, "rms_to_inf": rms_to_inf, "sign": sign}


def local_lmo(g: jax.Array, role: Role) -> jax.Array:
    """The LMO of every norm but "rms_to_rms", in the parameter's own shape."""
    if role.norm == "none":
        return jnp.zeros_like(g)
    if role.norm == "bias_rms":
        return bias_rms(g, role)
    m = to_matrix(g, role)
    return from_matrix(ROW_LMOS[role.norm](m), role, g.shape)
