"""Building blocks of the norm-everywhere decoder (PAPER.md §4).

Kernels use the flax layout ``[d_in, d_out]``; every parameter carries its logical axis names
in the ``logical_axes`` metadata field (read by `scion_jax.model.sharding`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from scion_jax.model.config import ModelConfig

EPS = 1e-6
# `checkpoint_name` of a low-precision Dense output (`transformer.REMAT_POLICIES["dots"]`).
DENSE_OUTPUT = "dense_output"


def rms_norm(x: jax.Array, scale: jax.Array | None = None, eps: float = EPS) -> jax.Array:
    """x / RMS(x) over the last axis, in fp32, returned in x's dtype (optionally × scale)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    if scale is not None:
        y = y * scale.astype(jnp.float32)
    return y.astype(x.dtype)


class RMSNorm(nnx.Module):
    """Parameter-free RMSNorm, or with a learnable ``scale`` (init 1) when `learnable`."""

    def __init__(self, dim: int, *, learnable: bool, param_dtype: Any, rngs: nnx.Rngs | None):
        del rngs
        self.scale = (
            nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",)) if learnable else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_norm(x, None if self.scale is None else self.scale[...])


def make_norm(cfg: ModelConfig, dim: int, rngs: nnx.Rngs, enabled: bool = True) -> RMSNorm | None:
    """A norm of width `dim` if `enabled` (None otherwise)."""
    if not enabled:
        return None
    return RMSNorm(dim, learnable=cfg.learnable_norm, param_dtype=cfg.param_dtype, rngs=rngs)


def apply_norm(norm: RMSNorm | None, x: jax.Array) -> jax.Array:
    return x if norm is None else norm(x)


class Dense(nnx.Module):
    """y = x @ kernel, no bias; kernel ``[d_in, d_out]``, matmul in `compute_dtype`.

    The kernel starts as lecun-normal; `scion_jax.model.init_model` replaces it with the
    paper's norm-1 initialization.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        axes: tuple[str, str],
        cfg: ModelConfig,
        rngs: nnx.Rngs,
        out_dtype: Any = None,
    ):
        init = jax.nn.initializers.lecun_normal()
        self.kernel = nnx.Param(
            init(rngs.params(), (d_in, d_out), cfg.param_dtype), logical_axes=axes
        )
        self.compute_dtype = cfg.compute_dtype
        self.out_dtype = out_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.compute_dtype
        x, kernel = x.astype(dt), self.kernel[...].astype(dt)
        if self.out_dtype is None and jnp.dtype(dt) != jnp.float32:
            # Named, as remat="dots" saves weight-matmul outputs and sees no dot in here.
            return checkpoint_name(low_precision_matmul(x, kernel), DENSE_OUTPUT)
        return jnp.einsum("...i,io->...o", x, kernel, preferred_element_type=self.out_dtype)


@jax.custom_vjp
def low_precision_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x [..., i] @ kernel [i, o]`` for low-precision (bf16) operands: fp32 accumulation,
    the result rounded to the operands' dtype — a plain bf16 matmul's numbers.

    Written so that the forward and both backward matmuls each take bf16 operands and
    accumulate in fp32 (the cotangent of a bf16 output is bf16). JAX's own transpose of a
    bf16-output dot is a bf16-output dot, which XLA:CPU runs by upcasting to fp32; asked
    for fp32 accumulation it runs bf16 natively (AVX-512-BF16 / AMX): 1.1–1.4× the CPU train
    step at d 64–256 (experiments/benchmarks/README.md). Accelerators compute the same.
    """
    return _matmul_f32_acc("...i,io->...o", x, kernel)


def _matmul_f32_acc(spec: str, a: jax.Array, b: jax.Array, like: jax.Array | None = None):
    """einsum(spec, a, b) accumulated in fp32, rounded to a's dtype; on a mesh with Explicit
    axes the result takes `like`'s sharding (a gradient's: its primal's), as JAX's own
    transpose rules do where contracted axes are sharded."""
    sharding = None
    if like is not None:
        s = jax.typeof(like).sharding
        if any(t == jax.sharding.AxisType.Explicit for t in s.mesh.axis_types):
            sharding = s
    out = jnp.einsum(spec, a, b, preferred_element_type=jnp.float32, out_sharding=sharding)
    return out.astype(a.dtype)


def _low_precision_matmul_fwd(x, kernel):
    return low_precision_matmul(x, kernel), (x, kernel)


def _low_precision_matmul_bwd(residuals, g):
    x, kernel = residuals
    g = g.astype(x.dtype)
    dx = _matmul_f32_acc("...o,io->...i", g, kernel, like=x)
    return dx, _matmul_f32_acc("...i,...o->io", x, g, like=kernel)


low_precision_matmul.defvjp(_low_precision_matmul_fwd, _low_precision_matmul_bwd)


class Embed(nnx.Module):
    """Token embedding table ``embedding [V, d]`` (the 1→RMS input layer)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        table = jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.d_model), cfg.param_dtype)
        self.embedding = nnx.Param(table, logical_axes=("vocab", "embed"))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Rows of the table in the parameter dtype (the residual stream's precision)."""
        return jnp.take(self.embedding[...], tokens, axis=0)


@functools.lru_cache(maxsize=16)
def _rope_tables(t: int, d: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos) ``float32 [T, 1, D/2]`` of the angles t · θ^(-2i/D), as host constants."""
    freqs = theta ** (-np.arange(0, d // 2, dtype=np.float32) * np.float32(2.0 / d))
    angles = np.arange(t, dtype=np.float32)[:, None] * freqs[None, :]
    return (np.sin(angles)[:, None, :].astype(np.float32),
            np.cos(angles)[:, None, :].astype(np.float32))


def rope(x: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding of ``x [B, T, H, D]`` (half-split pairing, positions 0..T-1).

    The sin / cos tables are trace-time constants: computed in-graph, XLA fuses them into
    the rotation and evaluates sin and cos once per element of x (per batch row and head),
    which was ≈ 6% of the CPU train step at d 128.
    """
    sin, cos = _rope_tables(x.shape[1], x.shape[-1], float(theta))
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, implementation: str) -> jax.Array:
    """Causal softmax attention with GQA.

    Args:
      q: ``[B, T, H, D]``; k, v: ``[B, T, K, D]`` with H a multiple of K.
      implementation: "einsum" (explicit, fp32 softmax) or "xla" / "cudnn"
        (`jax.nn.dot_product_attention`).

    Returns:
      ``[B, T, H, D]`` in q's dtype.
    """
    if implementation != "einsum":
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            implementation=(None if implementation == "xla" else implementation),
        )
    b, t, h, d = q.shape
    kv = k.shape[2]
    qg = q.reshape(b, t, kv, h // kv, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits * (d**-0.5)
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)
