"""The norm-everywhere decoder (PAPER.md §4): shapes, causality, init, counts, sharding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding

import scion_jax
from scion_jax.model import (
    SIZES,
    ModelConfig,
    Transformer,
    init_model,
    make_mesh,
    matmul_params,
    model_flops_per_token,
    param_specs,
    scion_rules,
)
from scion_jax.rules import path_str

# fp32 compute so that equivalent models can be compared to 1e-5 (bf16 is covered separately).
TINY = ModelConfig(
    vocab_size=256,
    d_model=64,
    n_layers=2,
    n_heads=2,
    head_dim=32,
    max_seq_len=32,
    compute_dtype=jnp.float32,
)


def _tokens(b=2, t=16, v=256, seed=1):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, v, dtype=jnp.int32)


def _loss(model, tokens):
    logits = model(tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def _params(model):
    return {
        path_str(p): x
        for p, x in jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    }


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes(dtype):
    cfg = TINY.replace(compute_dtype=dtype)
    logits = init_model(cfg, jax.random.key(0))(_tokens())
    assert logits.shape == (2, 16, 256) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()
    assert cfg.mlp_hidden == 192 and ModelConfig(d_model=256).mlp_hidden == 704
    assert ModelConfig(compute_dtype="bfloat16").compute_dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="max_seq_len=32"):
        init_model(cfg, jax.random.key(0))(_tokens(t=33))


def test_parameter_names_are_the_contract():
    names = set(_params(init_model(TINY.replace(learnable_norm=True), jax.random.key(0))))
    for i in range(2):
        for w in ("attn/q", "attn/k", "attn/v", "attn/o", "mlp/w1", "mlp/w3", "mlp/w2"):
            assert f"layers/{i}/{w}/kernel" in names
    assert {"embed/embedding", "unembed/kernel", "final_norm/scale"} <= names
    assert all(n.endswith(("kernel", "scale")) or n == "embed/embedding" for n in names)


@pytest.mark.parametrize("attention", ["einsum", "xla"])
def test_causal(attention):
    model = init_model(TINY.replace(attention=attention), jax.random.key(0))
    a = _tokens()
    b = a.at[:, 10].set((a[:, 10] + 7) % 256)
    la, lb = model(a), model(b)
    np.testing.assert_allclose(la[:, :10], lb[:, :10], atol=1e-5)
    assert np.abs(np.asarray(la[:, 10:] - lb[:, 10:])).max() > 1e-3


def test_attention_implementations_and_gqa_agree():
    cfg = TINY.replace(n_heads=4, n_kv_heads=2, head_dim=16, attention="einsum")
    model = init_model(cfg, jax.random.key(0))
    state = nnx.state(model)
    other = Transformer(cfg.replace(attention="xla"), rngs=nnx.Rngs(5))
    nnx.update(other, state)
    np.testing.assert_allclose(model(_tokens()), other(_tokens()), atol=1e-5)
    assert _params(model)["layers/0/attn/k/kernel"].shape == (64, 32)


def test_auto_attention_is_blockwise_on_cpu():
    """The default, "auto", is "blockwise" on the CPU (bitwise) and another name for
    "xla" elsewhere; an unknown implementation is refused with the valid choices."""
    assert ModelConfig().attention == "auto" and jax.default_backend() == "cpu"
    tokens = _tokens()
    logits = {}
    for impl in ("auto", "blockwise", "xla"):
        model = init_model(TINY.replace(attention=impl, compute_dtype=jnp.bfloat16),
                           jax.random.key(0))
        logits[impl] = np.asarray(model(tokens))
    np.testing.assert_array_equal(logits["auto"], logits["blockwise"])
    assert not np.array_equal(logits["auto"], logits["xla"])  # a different bf16 rounding
    np.testing.assert_allclose(logits["auto"], logits["xla"], atol=0.05)
    with pytest.raises(ValueError, match="attention='flash'; valid: auto, xla"):
        TINY.replace(attention="flash")


def test_norm_everywhere_and_pre_ln_differ_and_both_train():
    every = init_model(TINY.replace(learnable_norm=True), jax.random.key(0))
    pre = init_model(TINY.replace(learnable_norm=True, norm_everywhere=False), jax.random.key(0))
    pe, pp = _params(every), _params(pre)
    assert set(pp) < set(pe)
    assert "layers/0/attn/q_norm/scale" in pe and "layers/0/mlp/hidden_norm/scale" in pe
    assert "layers/0/attn/q_norm/scale" not in pp and "layers/0/attn_norm/scale" in pp
    # Same weights, different architecture ⇒ different logits.
    nnx.update(
        pre,
        nnx.from_flat_state(
            {
                p: v
                for p, v in nnx.to_flat_state(nnx.state(every, nnx.Param))
                if "/".join(map(str, p)) in pp
            }
        ),
    )
    tokens = _tokens()
    assert np.abs(np.asarray(every(tokens) - pre(tokens))).max() > 1e-3
    for model in (every, pre):  # both learn: a few SGD steps lower the loss on one batch
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        f = jax.jit(
            jax.value_and_grad(lambda p, g=graphdef, r=rest: _loss(nnx.merge(g, p, r), tokens))
        )
        first, _ = f(params)
        for _ in range(5):
            loss, g = f(params)
            params = jax.tree.map(lambda w, d: w - 0.5 * d, params, g)
        assert float(f(params)[0]) < float(first) - 0.1


def test_scan_layers_equals_unscanned():
    cfg = TINY.replace(learnable_norm=True)
    flat = init_model(cfg, jax.random.key(0))
    scanned = Transformer(cfg.replace(scan_layers=True), rngs=nnx.Rngs(9))
    p = _params(flat)
    stacked = {}
    for path, _ in nnx.to_flat_state(nnx.state(scanned, nnx.Param)):
        name = "/".join(map(str, path))
        if name.startswith("layers/"):
            rest = name[len("layers/") :]
            stacked[path] = jnp.stack([p[f"layers/{i}/{rest}"] for i in range(cfg.n_layers)])
        else:
            stacked[path] = p[name]
    nnx.update(scanned, nnx.from_flat_state(stacked))
    tokens = _tokens()
    np.testing.assert_allclose(flat(tokens), scanned(tokens), atol=1e-5, rtol=1e-5)
    assert _params(scanned)["layers/mlp/w2/kernel"].shape == (2, 192, 64)


@pytest.mark.parametrize("scan", [False, True])
def test_init_norms(scan):
    cfg = TINY.replace(n_layers=3, scan_layers=scan, learnable_norm=True)
    model = init_model(cfg, jax.random.key(0))
    norms = scion_jax.layer_norms(nnx.state(model, nnx.Param), scion_rules(cfg))
    residual = 1 / math.sqrt(2 * cfg.n_layers)
    n_matrix = 0
    for name, value in norms.items():
        if name.startswith("bias_rms/"):
            np.testing.assert_allclose(value, 1.0, rtol=1e-6)  # learnable scales start at 1
            continue
        n_matrix += 1
        want = residual if ("attn/o/" in name or "mlp/w2/" in name) else 1.0
        np.testing.assert_allclose(value, want, rtol=1e-4, err_msg=name)
    assert n_matrix == 2 + 7 * cfg.n_layers
    assert {"l1_to_rms/embed/embedding", "rms_to_inf/unembed/kernel"} <= set(norms)


@pytest.mark.parametrize(
    "norm_everywhere,dtype", [(True, jnp.float32), (False, jnp.float32), (True, jnp.bfloat16)]
)
def test_loss_at_init_is_ln_v(norm_everywhere, dtype):
    cfg = TINY.replace(norm_everywhere=norm_everywhere, compute_dtype=dtype)
    model = init_model(cfg, jax.random.key(0))
    loss = _loss(model, _tokens(b=4, t=32))
    assert abs(float(loss) - math.log(cfg.vocab_size)) < 0.05


def test_scion_step_on_scanned_model():
    cfg = TINY.replace(scan_layers=True, learnable_norm=True)
    model = init_model(cfg, jax.random.key(0))
    graphdef, params = nnx.split(model, nnx.Param)
    opt = scion_jax.scion(0.05, scion_rules(cfg, hidden_lr_scale=1 / 8))
    state = opt.init(params)
    tokens = _tokens()
    loss0, grads = jax.value_and_grad(lambda p: _loss(nnx.merge(graphdef, p), tokens))(params)
    updates, _ = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    assert float(_loss(nnx.merge(graphdef, params), tokens)) < float(loss0)


# The paper's sizes (PAPER.md §4). The paper's counts include both embedding tables (2·V·d =
# 65.7M of the 69M proxy). "1.3B" does not come out of the stated recipe: with SwiGLU hidden
# 8/3·3072 = 8192 the model has 1.241B parameters; the paper's figure would need an MLP of
# ≈ 9.8k (Llama-3's ffn multiplier 1.2), which is not stated, so we keep the recipe and allow 5%.
PAPER_COUNTS = {
    "proxy_69m": (69e6, 0.01),
    "width_314m": (314e6, 0.01),
    "width_1p3b": (1.3e9, 0.05),
    "depth_91m": (91e6, 0.01),
    "depth_168m": (168e6, 0.01),
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_parameter_counts(name):
    cfg = SIZES[name].replace(scan_layers=True)  # same count, cheaper to trace
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    shapes = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert all(isinstance(s, jax.ShapeDtypeStruct) for s in shapes)  # nothing allocated
    count = sum(math.prod(s.shape) for s in shapes)
    want, tol = PAPER_COUNTS[name]
    assert abs(count - want) / want < tol, (name, count)
    assert count == matmul_params(cfg) + cfg.vocab_size * cfg.d_model


def test_model_flops_per_token():
    cfg = SIZES["cpu_d128"]
    # Hand count: per layer 4·128·128 (attn) + 3·128·384 (mlp), plus the 128×256 unembedding.
    n = 4 * (4 * 128 * 128 + 3 * 128 * 384) + 128 * 256
    assert matmul_params(cfg) == n
    assert model_flops_per_token(cfg, 256) == 6 * n + 12 * 4 * 128 * 256


@pytest.mark.parametrize("scan", [False, True])
def test_sharded_forward_matches_unsharded(scan):
    cfg = TINY.replace(scan_layers=scan, learnable_norm=True)
    model = init_model(cfg, jax.random.key(0))
    tokens = _tokens(b=4)
    want = model(tokens)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    specs = param_specs(model)
    graphdef, params = nnx.split(model, nnx.Param)
    spec_leaves = jax.tree.leaves(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )
    assert len(spec_leaves) == len(jax.tree.leaves(params))
    for spec, p in zip(spec_leaves, jax.tree.leaves(params), strict=True):
        assert len(spec) == p.ndim
    by_name = {
        path_str(p): s
        for p, s in jax.tree_util.tree_flatten_with_path(
            specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
        )[0]
    }
    lead = (None,) if scan else ()
    q = "layers/attn/q/kernel" if scan else "layers/0/attn/q/kernel"
    assert tuple(by_name[q]) == (*lead, "fsdp", "tensor")
    assert tuple(by_name["embed/embedding"]) == ("tensor", "fsdp")
    assert tuple(by_name["unembed/kernel"]) == ("fsdp", "tensor")
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    placed = jax.device_put(params, shardings)
    batch = jax.device_put(
        tokens, NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    )

    @jax.jit
    def forward(p, t):
        return nnx.merge(graphdef, p)(t)

    got = forward(placed, batch)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    for leaf, sharding in zip(jax.tree.leaves(placed), jax.tree.leaves(shardings), strict=True):
        assert leaf.sharding == sharding


def test_low_precision_matmul_is_a_bf16_matmul_with_bf16_gradients():
    """Forward and both gradients are a bf16 matmul's: the exact (float64) product of the
    bf16 operands rounded to bf16, the cotangent taken in bf16; and they match JAX's own
    differentiation of the plain bf16 einsum (what Dense computed before) to one bf16 ulp."""
    from scion_jax.model.layers import low_precision_matmul

    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 40, 96), jnp.float32).astype(jnp.bfloat16)
    w = (jax.random.normal(kw, (96, 48), jnp.float32) / 10).astype(jnp.bfloat16)
    g = jax.random.normal(kg, (3, 40, 48), jnp.float32).astype(jnp.bfloat16)
    y, vjp = jax.vjp(low_precision_matmul, x, w)
    dx, dw = vjp(g)
    assert y.dtype == dx.dtype == dw.dtype == jnp.bfloat16

    x64, w64, g64 = (np.asarray(a, np.float64) for a in (x, w, g))
    bf16 = lambda a: np.asarray(a, np.float64).astype(jnp.bfloat16).astype(np.float64)  # noqa: E731
    ulp = 2.0**-7  # one bf16 ulp, relative (8 bits of mantissa)
    for got, exact in ((y, x64 @ w64), (dx, g64 @ w64.T), (dw, np.einsum("bti,bto->io", x64, g64))):
        got = np.asarray(got, np.float64)
        np.testing.assert_allclose(got, bf16(exact), rtol=ulp, atol=1e-30)
        assert np.mean(got == bf16(exact)) > 0.99  # rounded once, from an fp32 sum

    plain = lambda x, w: jnp.einsum("...i,io->...o", x, w)  # noqa: E731
    y_ref, vjp_ref = jax.vjp(plain, x, w)
    for got, ref in zip((y, *vjp(g)), (y_ref, *vjp_ref(g))):
        np.testing.assert_allclose(
            np.asarray(got, np.float64), np.asarray(ref, np.float64), rtol=ulp, atol=1e-30
        )


def test_rope_tables_are_the_rotation():
    """RoPE with host-computed tables equals the rotation by t · θ^(-2i/D) in float64."""
    from scion_jax.model.layers import rope

    b, t, h, d, theta = 2, 48, 3, 16, 10_000.0
    x = jax.random.normal(jax.random.key(2), (b, t, h, d), jnp.float32)
    angles = np.arange(t)[:, None] * theta ** (-np.arange(0, d // 2) * 2.0 / d)[None, :]
    sin, cos = np.sin(angles)[:, None, :], np.cos(angles)[:, None, :]
    x1, x2 = np.split(np.asarray(x, np.float64), 2, axis=-1)
    want = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    np.testing.assert_allclose(rope(x, theta), want, atol=2e-5)
    np.testing.assert_allclose(jax.jit(rope, static_argnums=1)(x, theta), want, atol=2e-5)


def test_low_precision_matmul_gradients_on_an_explicit_mesh():
    """With Explicit mesh axes and the batch sharded, the gradients contract sharded axes:
    they take their primals' shardings (as JAX's own transposes do) and are the float64
    gradients rounded to bf16 (the kernel's summed over devices in fp32: the plain bf16
    einsum's, summed in bf16, is off by up to 2 bf16 ulps there)."""
    from jax.sharding import AxisType, PartitionSpec

    from scion_jax.model.layers import low_precision_matmul

    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(mesh):
        x = jax.device_put(
            jax.random.normal(jax.random.key(0), (8, 16, 32)).astype(jnp.bfloat16),
            NamedSharding(mesh, PartitionSpec("data")),
        )
        w = jax.device_put(
            jax.random.normal(jax.random.key(1), (32, 24)).astype(jnp.bfloat16),
            NamedSharding(mesh, PartitionSpec()),
        )

        def grads(matmul):
            f = lambda x, w: matmul(x, w).astype(jnp.float32).sum()  # noqa: E731
            return jax.jit(jax.grad(f, argnums=(0, 1)))(x, w)

        got = grads(low_precision_matmul)
        plain = grads(lambda x, w: jnp.einsum("...i,io->...o", x, w))
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    exact = (  # d/dx and d/dw of sum(x @ w)
        np.broadcast_to(w64.sum(1), x64.shape),
        np.broadcast_to(x64.sum((0, 1))[:, None], w64.shape),
    )
    for g, p, want, primal in zip(got, plain, exact, (x, w), strict=True):
        assert jax.typeof(g).sharding.spec == jax.typeof(primal).sharding.spec
        assert jax.typeof(p).sharding.spec == jax.typeof(primal).sharding.spec
        np.testing.assert_allclose(np.asarray(g, np.float64), want, rtol=2.0**-7, atol=1e-30)
