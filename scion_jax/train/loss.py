"""The language-model loss: mean next-token cross-entropy, plain or chunked.

The plain path materialises fp32 logits ``[B, T, V]`` (and their gradient): 64 GiB for the
paper's proxy at 32 × 4096 tokens and V = 128,256. The chunked path cuts the sequence into
chunks of `chunk` positions; each chunk's logits (chunk @ W_out), log-sum-exp and target
logit are computed and dropped, and a custom VJP recomputes them in the backward pass:
with p = softmax(logits), ∂loss/∂logits = (p − onehot(y)) / N, so dh = (p − onehot) · W_outᵀ
and dW_out = Σ_chunks hᵀ · (p − onehot), summed in fp32.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

AUTO_CHUNK = 128  # positions per chunk when `loss_chunk` = -1 and the vocabulary is large
AUTO_MIN_VOCAB = 32_768


def resolve_chunk(loss_chunk: int, vocab_size: int) -> int:
    """The chunk length a config's `loss_chunk` means: -1 (auto) is `AUTO_CHUNK` positions for
    vocabularies ≥ 32k (where logits dominate memory) and 0 (the plain loss) otherwise."""
    if loss_chunk == -1:
        return AUTO_CHUNK if vocab_size >= AUTO_MIN_VOCAB else 0
    if loss_chunk < 0:
        raise ValueError(f"config.loss_chunk={loss_chunk}; valid: -1 (auto), 0 (plain), > 0.")
    return loss_chunk


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy of fp32 ``logits [B, T, V]`` against ``targets int [B, T]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def lm_loss(model: Any, inputs: jax.Array, targets: jax.Array, chunk: int) -> jax.Array:
    """Mean next-token loss of a `Transformer` on ``inputs/targets int [B, T]``; `chunk` > 0
    uses `chunked_cross_entropy` on the final norm's output, 0 the plain logits."""
    if chunk <= 0:
        return cross_entropy(model(inputs), targets)
    hidden = model.hidden(inputs)
    return chunked_cross_entropy(
        hidden, model.unembed.kernel[...], targets, chunk, model.cfg.compute_dtype
    )


def chunked_cross_entropy(
    hidden: jax.Array, kernel: jax.Array, targets: jax.Array, chunk: int, compute_dtype: Any
) -> jax.Array:
    """Mean cross-entropy of ``hidden [B, T, d] @ kernel [d, V]`` against ``targets [B, T]``,
    never holding more than ``[B, chunk, V]`` logits. The matmul runs in `compute_dtype`
    with fp32 accumulation, as `Dense` does; T need not be a multiple of `chunk`."""
    b, t, d = hidden.shape
    n = -(-t // chunk)
    pad = n * chunk - t

    def blocks(x):  # [B, T, ...] -> [n, B, chunk, ...], padded at the end of T
        x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
        return x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)

    weights = blocks(jnp.ones((b, t), jnp.float32))  # 0 on the padding
    total = _nll_sum(blocks(hidden), kernel, blocks(targets), weights, jnp.dtype(compute_dtype))
    return total / (b * t)


def _chunk_logits(h: jax.Array, kernel: jax.Array) -> jax.Array:
    """fp32 logits ``[B, chunk, V]`` of one chunk; `kernel` already in the compute dtype."""
    return jnp.einsum(
        "bcd,dv->bcv", h.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _nll_sum(h, kernel, targets, weights, dtype):
    return _nll_fwd(h, kernel, targets, weights, dtype)[0]


def _nll_fwd(h, kernel, targets, weights, dtype):
    w = kernel.astype(dtype)

    def one(total, xs):
        h_c, y_c, m_c = xs
        logits = _chunk_logits(h_c, w)
        lse = jax.nn.logsumexp(logits, axis=-1)
        target = jnp.take_along_axis(logits, y_c[..., None], axis=-1)[..., 0]
        return total + jnp.sum((lse - target) * m_c), lse

    total, lse = jax.lax.scan(one, jnp.zeros((), jnp.float32), (h, targets, weights))
    return total, (h, kernel, targets, weights, lse)


def _nll_bwd(dtype, res, g):
    h, kernel, targets, weights, lse = res
    w = kernel.astype(dtype)
    vocab = kernel.shape[1]

    def one(dw, xs):
        h_c, y_c, m_c, lse_c = xs
        p = jnp.exp(_chunk_logits(h_c, w) - lse_c[..., None])
        dlogits = (p - jax.nn.one_hot(y_c, vocab, dtype=jnp.float32)) * (g * m_c)[..., None]
        dlogits = dlogits.astype(dtype)
        dh = jnp.einsum("bcv,dv->bcd", dlogits, w, preferred_element_type=jnp.float32)
        dw = dw + jnp.einsum(
            "bcd,bcv->dv", h_c.astype(dtype), dlogits, preferred_element_type=jnp.float32
        )
        return dw, dh.astype(h.dtype)

    dw, dh = jax.lax.scan(one, jnp.zeros(kernel.shape, jnp.float32), (h, targets, weights, lse))
    return dh, dw.astype(kernel.dtype), None, None


_nll_sum.defvjp(_nll_fwd, _nll_bwd)
