"""Causal attention choices: "xla" / "cudnn" / "einsum" (`layers.causal_attention`, T×T
scores), "blockwise", a flash-style attention in plain JAX with O(T·block) memory, and
"auto" (the default: "blockwise" on CPU, where it is also the fastest, "xla" elsewhere).

Blockwise (Dao et al. 2022, FlashAttention-2's loop order): queries and keys/values are cut
into blocks of `block` positions; for each query block an online softmax runs over the
key/value blocks at or before it (running max m, normaliser l, unnormalised output acc):

    m' = max(m, rowmax(S)),  l' = l·e^(m−m') + rowsum(e^(S−m')),  acc' = acc·e^(m−m') + e^(S−m')·V

and O = acc / l. Only O and the log-sum-exp L = m + log l are kept for the backward pass
(a custom VJP), which recomputes each score block: P = e^(S−L), dV += Pᵀ·dO,
dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O)), dQ += dS·K, dK += dSᵀ·Q. Blocks above the diagonal are
skipped (loop bounds, not masks), so the causal half of the FLOPs is never spent.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from scion_jax.model.config import ATTENTION
from scion_jax.model.layers import causal_attention

# Sequences of at most this many blocks run the block loops unrolled at trace time: XLA then
# fuses across blocks, without the while loops' copies and dynamic slices (with 128-position
# blocks, 0.87–0.90× the CPU train step at T 256; experiments/benchmarks/README.md).
# Longer ones keep the loops, whose program size does not grow with T.
UNROLL_BLOCKS = 4


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, implementation: str, block: int = 128
) -> jax.Array:
    """Causal GQA attention ``q [B, T, H, D], k/v [B, T, K, D] -> [B, T, H, D]`` by
    `implementation` (one of `ATTENTION`; "auto": "blockwise" on CPU, "xla" elsewhere);
    `block` is used by "blockwise" only."""
    if implementation not in ATTENTION:
        raise ValueError(f"attention={implementation!r}; valid: {', '.join(ATTENTION)}.")
    if implementation == "auto":
        implementation = "blockwise" if jax.default_backend() == "cpu" else "xla"
    if implementation == "blockwise":
        return blockwise_attention(q, k, v, block)
    return causal_attention(q, k, v, implementation)


def blockwise_attention(q: jax.Array, k: jax.Array, v: jax.Array, block: int) -> jax.Array:
    """Causal GQA attention without T×T memory.

    Args:
      q: ``[B, T, H, D]``; k, v: ``[B, T, K, D]`` with H a multiple of K.
      block: positions per query / key block; T need not be a multiple (it is padded: the
        padded keys come after every real query, so the causal mask already hides them).

    Returns:
      ``[B, T, H, D]`` in q's dtype. Scores, softmax and accumulators are fp32; matmul
      operands stay in the inputs' dtype.
    """
    if block < 1:
        raise ValueError(f"model.attention_block={block} must be a positive number of positions.")
    b, t, h, d = q.shape
    kv = k.shape[2]
    size = min(block, t)
    n = -(-t // size)
    pad = ((0, 0), (0, n * size - t), (0, 0), (0, 0))
    # Blocks first: [n, B, size, K, (G,) D] so a block is one dynamic index.
    qb = jnp.pad(q, pad).reshape(b, n, size, kv, h // kv, d).swapaxes(0, 1)
    kb = jnp.pad(k, pad).reshape(b, n, size, kv, d).swapaxes(0, 1)
    vb = jnp.pad(v, pad).reshape(b, n, size, kv, d).swapaxes(0, 1)
    out = _flash(qb, kb, vb)  # [n, B, size, K, G, D]
    return out.swapaxes(0, 1).reshape(b, n * size, h, d)[:, :t]


def _scores(qi: jax.Array, kj: jax.Array, i: jax.Array, j: jax.Array) -> jax.Array:
    """Scaled, causally masked fp32 scores ``[B, K, G, size_q, size_k]`` of block (i, j)."""
    size, d = qi.shape[1], qi.shape[-1]
    s = jnp.einsum("bqkgd,bskd->bkgqs", qi, kj, preferred_element_type=jnp.float32) * d**-0.5
    rows = i * size + jnp.arange(size)[:, None]
    cols = j * size + jnp.arange(size)[None, :]
    return jnp.where(rows >= cols, s, -jnp.inf)


def _forward(qb, kb, vb):
    """(out [n, B, size, K, G, D], lse [n, B, K, G, size]) by the online softmax."""
    n, b, size, kv, g, d = qb.shape

    def step(i, j, carry):  # key / value block j of query block i
        m, norm, acc = carry
        s = _scores(qb[i], kb[j], i, j)
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.exp(s - m_new[..., None])
        scale = jnp.exp(m - m_new)
        pv = jnp.einsum(
            "bkgqs,bskd->bkgqd", p.astype(vb.dtype), vb[j], preferred_element_type=jnp.float32
        )
        return m_new, norm * scale + p.sum(-1), acc * scale[..., None] + pv

    def finish(m, norm, acc):
        out = (acc / norm[..., None]).transpose(0, 3, 1, 2, 4)  # [B, size, K, G, D]
        return out.astype(qb.dtype), m + jnp.log(norm)

    init = (
        jnp.full((b, kv, g, size), -jnp.inf, jnp.float32),
        jnp.zeros((b, kv, g, size), jnp.float32),
        jnp.zeros((b, kv, g, size, d), jnp.float32),
    )
    # Every row sees ≥ 1 key in block 0, so m is finite after the first step.
    if n <= UNROLL_BLOCKS:
        blocks = []
        for i in range(n):
            carry = init
            for j in range(i + 1):
                carry = step(i, j, carry)
            blocks.append(finish(*carry))
        return tuple(jnp.stack(x) for x in zip(*blocks, strict=True))
    return jax.lax.map(
        lambda i: finish(*jax.lax.fori_loop(0, i + 1, functools.partial(step, i), init)),
        jnp.arange(n),
    )


@jax.custom_vjp
def _flash(qb, kb, vb):
    return _forward(qb, kb, vb)[0]


def _flash_fwd(qb, kb, vb):
    out, lse = _forward(qb, kb, vb)
    return out, (qb, kb, vb, out, lse)


def _flash_bwd(res, dout):
    qb, kb, vb, out, lse = res
    n = qb.shape[0]
    f32 = functools.partial(jnp.einsum, preferred_element_type=jnp.float32)
    scale = qb.shape[-1] ** -0.5
    # rowsum(dO ⊙ O): [n, B, K, G, size]
    delta = jnp.einsum("nbqkgd,nbqkgd->nbkgq", dout.astype(jnp.float32), out.astype(jnp.float32))

    def grads(i, j):  # (dK_j, dV_j, dQ_i) of block pair (i, j), fp32
        qi, doi, kj, vj = qb[i], dout[i], kb[j], vb[j]
        p = jnp.exp(_scores(qi, kj, i, j) - lse[i][..., None])  # [B, K, G, q, s]
        dp = f32("bqkgd,bskd->bkgqs", doi, vj)
        ds = (p * (dp - delta[i][..., None]) * scale).astype(qi.dtype)
        dv = f32("bkgqs,bqkgd->bskd", p.astype(doi.dtype), doi)
        return f32("bkgqs,bqkgd->bskd", ds, qi), dv, f32("bkgqs,bskd->bqkgd", ds, kj)

    if n <= UNROLL_BLOCKS:
        dq = [0.0] * n
        dkv = []
        for j in range(n):
            dk = dv = 0.0
            for i in range(j, n):
                dk_ij, dv_ij, dq_ij = grads(i, j)
                dk, dv, dq[i] = dk + dk_ij, dv + dv_ij, dq[i] + dq_ij
            dkv.append((dk.astype(kb.dtype), dv.astype(vb.dtype)))
        dk, dv = (jnp.stack(x) for x in zip(*dkv, strict=True))
        return jnp.stack(dq).astype(qb.dtype), dk, dv

    def key_block(dq, j):
        def step(i, carry):
            dk, dv, dq = carry
            dk_ij, dv_ij, dq_ij = grads(i, j)
            return dk + dk_ij, dv + dv_ij, dq.at[i].add(dq_ij)

        zeros = jnp.zeros(kb.shape[1:], jnp.float32)
        dk, dv, dq = jax.lax.fori_loop(j, n, step, (zeros, zeros, dq))
        return dq, (dk.astype(kb.dtype), dv.astype(vb.dtype))

    dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros(qb.shape, jnp.float32), jnp.arange(n))
    return dq.astype(qb.dtype), dk, dv


_flash.defvjp(_flash_fwd, _flash_bwd)
