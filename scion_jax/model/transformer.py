"""The Llama-style decoder with "norm everywhere" (PAPER.md §4), in flax NNX.

Block: h = x + Attn(norm(x)); y = h + MLP(norm(h)); logits = W_out · norm(h_L), with (when
``cfg.norm_everywhere``) a parameter-free RMSNorm before every other linear map as well:
per-head QK norm and V norm, a norm on the attention output before W_o, and a norm on
silu(W1 x) ⊙ (W3 x) before W2. The residual stream itself is never normalised.

Parameter paths (a contract with `scion_rules` and `scion_jax.init.RESIDUAL_RULES`):
``embed/embedding [V, d]``, ``layers/<i>/attn/{q,k,v,o}/kernel``,
``layers/<i>/mlp/{w1,w3,w2}/kernel`` (``layers/...`` with a leading ``[L]`` axis when scanned),
norm scales ``.../scale``, ``unembed/kernel [d, V]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from scion_jax.init import init_params
from scion_jax.model.attention import attention
from scion_jax.model.config import ModelConfig
from scion_jax.model.layers import (
    DENSE_OUTPUT,
    Dense,
    Embed,
    apply_norm,
    make_norm,
    rope,
)
from scion_jax.model.sharding import logical_to_spec
from scion_jax.rules import Role


class Attention(nnx.Module):
    """Causal GQA self-attention with RoPE; QK/V/output norms when norm_everywhere."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, hd, h, kv = cfg.d_model, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        self.q = Dense(d, h * hd, ("embed", "heads"), cfg, rngs)
        self.k = Dense(d, kv * hd, ("embed", "heads"), cfg, rngs)
        self.v = Dense(d, kv * hd, ("embed", "heads"), cfg, rngs)
        self.o = Dense(h * hd, d, ("heads", "embed"), cfg, rngs)
        every = cfg.norm_everywhere
        self.q_norm = make_norm(cfg, hd, rngs, every)
        self.k_norm = make_norm(cfg, hd, rngs, every)
        self.v_norm = make_norm(cfg, hd, rngs, every)
        self.out_norm = make_norm(cfg, h * hd, rngs, every)
        self.n_heads, self.n_kv_heads, self.head_dim = h, kv, hd
        self.rope_theta, self.implementation = cfg.rope_theta, cfg.attention
        self.attention_block = cfg.attention_block

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, self.n_heads, self.head_dim)
        k = self.k(x).reshape(b, t, self.n_kv_heads, self.head_dim)
        v = self.v(x).reshape(b, t, self.n_kv_heads, self.head_dim)
        q = rope(apply_norm(self.q_norm, q), self.rope_theta)
        k = rope(apply_norm(self.k_norm, k), self.rope_theta)
        v = apply_norm(self.v_norm, v)
        out = attention(q, k, v, self.implementation, self.attention_block).reshape(b, t, -1)
        return self.o(apply_norm(self.out_norm, out))


class MLP(nnx.Module):
    """SwiGLU: W2 · norm(silu(W1 x) ⊙ (W3 x)); W1 is the gate, W3 the up projection."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, f = cfg.d_model, cfg.mlp_hidden
        self.w1 = Dense(d, f, ("embed", "mlp"), cfg, rngs)
        self.w3 = Dense(d, f, ("embed", "mlp"), cfg, rngs)
        self.w2 = Dense(f, d, ("mlp", "embed"), cfg, rngs)
        self.hidden_norm = make_norm(cfg, f, rngs, cfg.norm_everywhere)

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = jax.nn.silu(self.w1(x)) * self.w3(x)
        return self.w2(apply_norm(self.hidden_norm, hidden))


class Block(nnx.Module):
    """h = x + Attn(norm(x)); y = h + MLP(norm(h))."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.attn_norm = make_norm(cfg, cfg.d_model, rngs)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = make_norm(cfg, cfg.d_model, rngs)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x + self.attn(self.attn_norm(x)).astype(x.dtype)
        return h + self.mlp(self.mlp_norm(h)).astype(x.dtype)


class Transformer(nnx.Module):
    """Decoder: ``tokens int32 [B, T] -> logits float32 [B, T, V]``.

    The residual stream is kept in fp32 (cheap at these widths and safe in bf16 compute);
    matmul operands are cast to ``cfg.compute_dtype``.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = Embed(cfg, rngs)
        if cfg.scan_layers:

            @nnx.split_rngs(splits=cfg.n_layers)
            @nnx.vmap(
                in_axes=(0,),
                out_axes=0,
                transform_metadata={nnx.PARTITION_NAME: "layers", "logical_axes": "layers"},
            )
            def stacked(rngs: nnx.Rngs) -> Block:
                return Block(cfg, rngs)

            self.layers = stacked(rngs)
        else:
            self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.n_layers)])
        self.final_norm = make_norm(cfg, cfg.d_model, rngs)
        self.unembed = Dense(
            cfg.d_model, cfg.vocab_size, ("embed", "vocab"), cfg, rngs, out_dtype=jnp.float32
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return self.unembed(self.hidden(tokens)).astype(jnp.float32)

    def hidden(self, tokens: jax.Array) -> jax.Array:
        """The final norm's output ``[B, T, d]`` (fp32): the input of the unembedding, for a
        loss that never materialises all logits (`scion_jax.train.loss`)."""
        if tokens.ndim != 2 or tokens.shape[1] > self.cfg.max_seq_len:
            raise ValueError(
                f"tokens must be [batch, seq] with seq <= max_seq_len={self.cfg.max_seq_len}; "
                f"got shape {tokens.shape}."
            )
        x = _batch_sharded(self.embed(tokens).astype(jnp.float32))
        apply = _apply_block
        if self.cfg.remat != "none":
            apply = nnx.remat(_apply_block, policy=REMAT_POLICIES[self.cfg.remat])
        if self.cfg.scan_layers:

            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def run(x: jax.Array, block: Block) -> jax.Array:
                return apply(block, x)

            x = run(x, self.layers)
        else:
            for block in self.layers:
                x = apply(block, x)
        return self.final_norm(x)


# `ModelConfig.remat` -> `jax.checkpoint` policy (None: save only the block's input).
REMAT_POLICIES = {
    "block": None,
    "dots": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        jax.checkpoint_policies.save_only_these_names(DENSE_OUTPUT),
    ),
}


def _apply_block(block: Block, x: jax.Array) -> jax.Array:
    return _batch_sharded(block(x))


def _batch_sharded(x: jax.Array) -> jax.Array:
    """Pins the residual stream ``[B, T, d]`` to the batch axes when a mesh is set
    (``jax.sharding.use_abstract_mesh``): under FSDP, GSPMD would otherwise follow the
    embedding table's d-sharding and keep every row of the batch on every device."""
    mesh = jax.sharding.get_abstract_mesh()
    spec = logical_to_spec(("batch", "seq", None))
    if mesh.empty or not set(jax.tree.leaves(tuple(spec))) <= set(mesh.axis_names):
        return x
    return jax.lax.with_sharding_constraint(x, spec)


def scion_rules(
    cfg: ModelConfig,
    hidden_lr_scale: float = 1.0,
    input_lr_scale: float = 1.0,
    output_lr_scale: float = 1.0,
) -> tuple[tuple[str, Role], ...]:
    """The Scion rule table for `Transformer` (PAPER.md §2): input 1→RMS, hidden RMS→RMS,
    output RMS→∞, learnable norm scales RMS-normalised (``bias_rms``) in the hidden group.

    A scanned model (``cfg.scan_layers``) stores its kernels ``[L, d_in, d_out]``: its
    ``[L]`` axis is declared a stack (``batch_axes=0``), a batch of L matrices. The
    paper's best group ratio η_in : η_hidden : η_out = 1 : 1/8 : 1 is ``hidden_lr_scale=1/8``.
    """
    stack = {"batch_axes": 0} if cfg.scan_layers else {}
    rules = [
        (r"^embed/embedding$", Role("l1_to_rms", input_lr_scale)),
        (r"^unembed/kernel$", Role("rms_to_inf", output_lr_scale)),
        (r"/(attn/[qkvo]|mlp/w[123])/kernel$", Role("rms_to_rms", hidden_lr_scale, **stack)),
    ]
    if cfg.learnable_norm:
        rules.append((r"(^|/)scale$", Role("bias_rms", hidden_lr_scale)))
    return tuple(rules)


def init_model(cfg: ModelConfig, key: jax.Array) -> Transformer:
    """Builds a `Transformer` at the paper's initialization (PAPER.md §4): every matrix at
    norm 1 in its role's norm, W_o and W2 further × 1/√(2L); learnable scales at 1.

    The loss at init is then ≈ ln V (logits are O(1/√d)). Built inside one ``jit`` (one
    compiled program rather than hundreds of eager ops).
    """
    return _init_model(cfg, key)


@nnx.jit(static_argnums=0)
def _init_model(cfg: ModelConfig, key: jax.Array) -> Transformer:
    build_key, init_key = jax.random.split(key)
    model = Transformer(cfg, rngs=nnx.Rngs(params=build_key))
    params = nnx.state(model, nnx.Param)
    nnx.update(model, init_params(init_key, params, scion_rules(cfg), n_layers=cfg.n_layers))
    return model
