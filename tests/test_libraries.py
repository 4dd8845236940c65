"""Scion in Equinox, Haiku and flax Linen models: the proposed table reads each library's
layout (Equinox ``Linear.weight [out, in]``, Haiku ``w [in, out]``), one step equals the
float64 PyTorch reference (tests/scion_reference.py) on the same arrays, the output norm is
the reference RowNorm's, `init_params` starts at ln V, and what cannot be read is refused.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from scion_reference import (
    ref_bias_rms,
    ref_col_norm_transposed,
    ref_row_norm,
    ref_spectral,
    ref_spectral_conv,
)

import scion_jax
from scion_jax import Role
from scion_jax.rules import matrix_view, path_str, resolve_roles

eqx = pytest.importorskip("equinox")  # the dev extras
hk = pytest.importorskip("haiku")

V, D, T, HEADS, HIDDEN = 48, 32, 12, 4, 64


def _tokens():
    return jnp.asarray(np.random.default_rng(0).integers(0, V, (4, T + 1)), jnp.int32)


def _loss(logits, tokens):
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _views(params, rules):
    """{path: (norm, d_in, d_out)} (d_in, d_out None for vectors)."""
    roles = resolve_roles(params, rules)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    out = {}
    for (path, x), role in zip(flat, jax.tree.structure(params).flatten_up_to(roles), strict=True):
        dims = matrix_view(role, x.shape)[1][-2:] if x.ndim >= 2 and role.norm != "bias_rms" else ()
        out[path_str(path)] = (role.norm, *dims)
    return out


def _direction(params, rules, grads):
    """−(one Scion step at η = 1, no momentum, exact polar factor): the LMO of `grads`."""
    tx = scion_jax.scion(1.0, rules, ns_coeffs="svd")
    u, _ = tx.update(grads, tx.init(params), params)
    return jax.tree.map(lambda x: -np.asarray(x, np.float64), u)


def _random_like(params, seed=1):
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return treedef.unflatten([jnp.asarray(rng.standard_normal(x.shape), x.dtype) for x in leaves])


# ----- Equinox: [out, in] read from the module types -----
class EqxBlock(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    up: eqx.nn.Linear
    down: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.ln1, self.ln2 = eqx.nn.LayerNorm(D), eqx.nn.LayerNorm(D)
        self.attn = eqx.nn.MultiheadAttention(HEADS, D, key=k1)
        self.up = eqx.nn.Linear(D, HIDDEN, key=k2)
        self.down = eqx.nn.Linear(HIDDEN, D, key=k3)

    def __call__(self, x):
        h = jax.vmap(self.ln1)(x)
        x = x + self.attn(h, h, h, mask=jnp.tril(jnp.ones((x.shape[0], x.shape[0]), bool)))
        h = jax.vmap(self.ln2)(x)
        return x + jax.vmap(self.down)(jax.nn.gelu(jax.vmap(self.up)(h)))


class EqxLM(eqx.Module):
    embed: eqx.nn.Embedding
    blocks: list
    ln_f: eqx.nn.LayerNorm
    lm_head: eqx.nn.Linear

    def __init__(self, key):
        k0, k1, k2, k3 = jax.random.split(key, 4)
        self.embed = eqx.nn.Embedding(V, D, key=k0)
        self.blocks = [EqxBlock(k1), EqxBlock(k2)]
        self.ln_f = eqx.nn.LayerNorm(D)
        self.lm_head = eqx.nn.Linear(D, V, use_bias=False, key=k3)

    def __call__(self, tokens):  # [T] -> [T, V]
        x = jax.vmap(self.embed)(tokens)
        for block in self.blocks:
            x = block(x)
        return jax.vmap(self.lm_head)(jax.vmap(self.ln_f)(x))


def _eqx_loss(params, static, tokens):
    model = eqx.combine(params, static)
    return _loss(jax.vmap(model)(tokens[:, :-1]), tokens)


EQX_RESIDUAL = (r"attn/output_proj/weight$", r"down/weight$")


def test_equinox_proposed_table():
    model = EqxLM(jax.random.key(0))
    rules = scion_jax.propose_rules(model)
    params = eqx.filter(model, eqx.is_array)
    got = _views(params, rules)
    want = {
        "embed/weight": ("l1_to_rms", V, D),
        "lm_head/weight": ("rms_to_inf", D, V),
        "ln_f/weight": ("bias_rms",),
        "ln_f/bias": ("bias_rms",),
    }
    for i in range(2):
        b = f"blocks/{i}"
        for proj in ("query_proj", "key_proj", "value_proj", "output_proj"):
            want[f"{b}/attn/{proj}/weight"] = ("rms_to_rms", D, D)
        want[f"{b}/up/weight"] = ("rms_to_rms", D, HIDDEN)  # weight [64, 32]: 32 → 64
        want[f"{b}/down/weight"] = ("rms_to_rms", HIDDEN, D)
        for name in ("up/bias", "down/bias", "ln1/weight", "ln1/bias", "ln2/weight", "ln2/bias"):
            want[f"{b}/{name}"] = ("bias_rms",)
    assert got == want
    assert dict(rules)[r"^blocks/\d+/up/weight$"] == Role("rms_to_rms", layout="out_in")
    rows = {r["path"]: r for r in scion_jax.describe_rows(params, rules)}
    assert rows["blocks/0/up/weight"]["d_in axes"] == "1 (32)"
    assert rows["blocks/0/up/weight"]["d_out axes"] == "0 (64)"
    assert rows["blocks/0/up/weight"]["weight_decay"] == "scion's"
    assert rows["blocks/0/up/bias"]["weight_decay"] == 0.0


def test_equinox_step_equals_torch_reference_and_inits_at_ln_v():
    """Equinox's arrays are in PyTorch layout: the reference LMOs apply to them as they are."""
    model = EqxLM(jax.random.key(0))
    rules = scion_jax.propose_rules(model)
    params, static = eqx.partition(model, eqx.is_array)
    grads = _random_like(params)
    got = _direction(params, rules, grads)
    for (path, g), u in zip(
        jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(got), strict=True
    ):
        p, g = path_str(path), np.asarray(g, np.float64)
        if p == "embed/weight":
            want = ref_col_norm_transposed(g)
        elif p == "lm_head/weight":
            want = ref_row_norm(g)
        elif g.ndim == 2:
            want = ref_spectral(g)
        else:
            want = ref_bias_rms(g)
        assert _rel(u, want) < 1e-5, p

    params = scion_jax.init_params(
        jax.random.key(1), params, rules, n_layers=2, residual_rules=EQX_RESIDUAL
    )
    w = np.asarray(params.lm_head.weight, np.float64)  # [V, d]
    out_norm = np.sqrt(D) * np.linalg.norm(w, axis=1).max()  # RowNorm's norm: √d_in·max‖row‖
    norms = scion_jax.layer_norms(params, rules)
    assert float(norms["rms_to_inf/lm_head/weight"]) == pytest.approx(out_norm, rel=1e-5)
    assert out_norm == pytest.approx(1.0, rel=1e-5)
    assert abs(float(_eqx_loss(params, static, _tokens())) - math.log(V)) < 0.05


def test_equinox_conv_and_stack():
    conv = eqx.nn.Conv2d(4, 8, 3, key=jax.random.key(0))  # weight OIHW [8, 4, 3, 3]
    rules = scion_jax.propose_rules(
        {"conv": conv, "head": eqx.nn.Linear(8, 10, key=jax.random.key(1))}
    )
    assert dict(rules)[r"^conv/weight$"] == Role("conv_spectral", layout="out_in")
    g = {"w": jnp.asarray(np.random.default_rng(2).standard_normal((8, 4, 3, 3)), jnp.float32)}
    u = _direction(g, [(".*", Role("conv_spectral", layout="out_in"))], g)["w"]
    assert _rel(u, ref_spectral_conv(np.asarray(g["w"], np.float64))) < 1e-5
    # Linears stacked by eqx.filter_vmap: [L, out, in] needs stacked=.
    stack = eqx.filter_vmap(lambda k: eqx.nn.Linear(D, HIDDEN, key=k))(
        jax.random.split(jax.random.key(0), 3)
    )
    model = {"layers": stack, "lm_head": eqx.nn.Linear(D, V, key=jax.random.key(1))}
    with pytest.raises(ValueError, match=r"(?s)'layers/weight' \(3, 64, 32\).*stacked="):
        scion_jax.propose_rules(model)
    roles = dict(scion_jax.propose_rules(model, stacked="^layers/"))
    assert roles[r"^layers/weight$"] == Role("rms_to_rms", batch_axes=0, layout="out_in")
    assert _views(eqx.filter(model, eqx.is_array), list(roles.items()))["layers/weight"] == (
        "rms_to_rms",
        D,
        HIDDEN,
    )
    # Conv2ds stacked likewise: [L, c_out, c_in, kh, kw] is not one conv with c_out = L.
    convs = eqx.filter_vmap(lambda k: eqx.nn.Conv2d(4, 8, 3, key=k))(
        jax.random.split(jax.random.key(0), 3)
    )
    model = {"convs": convs, "head": eqx.nn.Linear(8, 10, key=jax.random.key(1))}
    with pytest.raises(ValueError, match=r"(?s)'convs/weight' \(3, 8, 4, 3, 3\).*stacked="):
        scion_jax.propose_rules(model)
    roles = dict(scion_jax.propose_rules(model, stacked="^convs/"))
    assert roles[r"^convs/weight$"] == Role("conv_spectral", batch_axes=0, layout="out_in")
    gs = np.random.default_rng(3).standard_normal((3, 8, 4, 3, 3))
    u = _direction({"w": gs}, [(".*", roles[r"^convs/weight$"])], {"w": jnp.asarray(gs)})["w"]
    for u_layer, g_layer in zip(u, gs, strict=True):
        assert _rel(u_layer, ref_spectral_conv(g_layer)) < 1e-5


def test_equinox_partitioned_equals_plain():
    model = EqxLM(jax.random.key(0))
    rules = scion_jax.propose_rules(model)
    grads = _random_like(eqx.filter(model, eqx.is_array))
    plain = scion_jax.scion(1.0, rules, ns_dtype="float32")
    want = plain.update(grads, plain.init(grads))[0]
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Explicit,))

    def place(x):  # rows split where they divide, else replicated
        spec = P("fsdp") if x.shape[0] % 8 == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    sharded = jax.tree.map(place, grads)
    tx = scion_jax.scion(1.0, rules, ns_dtype="float32", mesh=mesh)
    got = jax.jit(lambda g: tx.update(g, tx.init(g))[0])(sharded)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert _rel(a, b) < 2e-6


# ----- Haiku: w [in, out], embeddings, b / scale / offset -----
def _haiku_lm(tokens):
    x = hk.Embed(V, D, name="embed")(tokens)
    for _ in range(2):
        h = hk.LayerNorm(-1, True, True)(x)
        x = x + hk.MultiHeadAttention(HEADS, D // HEADS, w_init=hk.initializers.VarianceScaling())(
            h, h, h, mask=jnp.tril(jnp.ones((1, 1, tokens.shape[-1], tokens.shape[-1])))
        )
        h = hk.LayerNorm(-1, True, True)(x)
        x = x + hk.Linear(D, name="down")(jax.nn.gelu(hk.Linear(HIDDEN, name="up")(h)))
    return hk.Linear(V, with_bias=False, name="lm_head")(hk.LayerNorm(-1, True, True)(x))


HK_RESIDUAL = (r"multi_head_attention(_\d+)?/linear/w$", r"down(_\d+)?/w$")


def test_haiku_proposed_table_step_and_init():
    lm = hk.without_apply_rng(hk.transform(_haiku_lm))
    tokens = _tokens()
    params = lm.init(jax.random.key(0), tokens[:, :-1])
    rules = scion_jax.propose_rules(params)
    got = _views(params, rules)
    assert got["embed/embeddings"] == ("l1_to_rms", V, D)
    assert got["lm_head/w"] == ("rms_to_inf", D, V)
    for i in ("", "_1"):
        assert got[f"up{i}/w"] == ("rms_to_rms", D, HIDDEN)
        assert got[f"down{i}/w"] == ("rms_to_rms", HIDDEN, D)
        for proj in ("query", "key", "value", "linear"):
            assert got[f"multi_head_attention{i}/{proj}/w"] == ("rms_to_rms", D, D)
    vectors = [p for p in got if re.search(r"/(b|scale|offset)$", p)]
    assert len(vectors) == 10 * 2 + 2 and all(got[p] == ("bias_rms",) for p in vectors)
    assert len(got) == 1 + 6 * 2 + 1 + len(vectors)  # embed, 6 w per block, head
    assert r"^up_\d+/w$" in dict(rules)  # haiku's up, up_1: one rule each

    grads = _random_like(params)
    u = _direction(params, rules, grads)
    for module, leaves in grads.items():
        for name, g in leaves.items():
            g, got_u = np.asarray(g, np.float64), u[module][name]
            if name == "embeddings":
                want = ref_col_norm_transposed(g)
            elif module == "lm_head":
                want = ref_row_norm(g.T).T  # the reference on torch's [V, d] = haiku's wᵀ
            elif name == "w":
                want = ref_spectral(g.T).T
            else:
                want = ref_bias_rms(g)
            assert _rel(got_u, want) < 1e-5, (module, name)

    params = scion_jax.init_params(
        jax.random.key(1), params, rules, n_layers=2, residual_rules=HK_RESIDUAL
    )
    w = np.asarray(params["lm_head"]["w"], np.float64).T  # torch layout [V, d]
    assert float(scion_jax.layer_norms(params, rules)["rms_to_inf/lm_head/w"]) == pytest.approx(
        np.sqrt(D) * np.linalg.norm(w, axis=1).max(), rel=1e-5
    )
    assert abs(float(_loss(lm.apply(params, tokens[:, :-1]), tokens)) - math.log(V)) < 0.05
    conv = hk.transform(lambda x: hk.Linear(10, name="head")(hk.Conv2D(8, 3)(x)))
    conv_params = conv.init(jax.random.key(0), jnp.ones((1, 5, 5, 4)))  # w HWIO [3, 3, 4, 8]
    assert dict(scion_jax.propose_rules(conv_params))[r"^conv2_d/w$"] == Role("conv_spectral")


def test_haiku_layer_stack_is_not_a_conv():
    """hk.layer_stack's w [L, d_in, d_out]: refused undeclared, a stack of matrices with
    stacked=."""

    def f(tokens):
        x = hk.Embed(V, D, name="embed")(tokens)
        x = hk.layer_stack(3)(lambda x: x + hk.Linear(D, name="mlp")(x))(x)
        return hk.Linear(V, name="lm_head")(x)

    params = hk.transform(f).init(jax.random.key(0), _tokens())
    with pytest.raises(
        ValueError, match=r"(?s)'__layer_stack_no_per_layer/mlp/w' \(3, 32, 32\).*stacked="
    ):
        scion_jax.propose_rules(params)
    rules = scion_jax.propose_rules(params, stacked="^__layer_stack")
    assert dict(rules)[r"^__layer_stack_no_per_layer/mlp/w$"] == Role("rms_to_rms", batch_axes=0)


# ----- flax NNX: layers stacked by nnx.vmap -----
class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.q = nnx.Linear(D, D, rngs=rngs)
        self.mlp_down = nnx.Linear(HIDDEN, D, rngs=rngs)


class NnxStackLM(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(V, D, rngs=rngs)

        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def blocks(rngs):
            return NnxBlock(rngs)

        self.layers = blocks(rngs)  # kernels [3, d_in, d_out]
        self.lm_head = nnx.Linear(D, V, rngs=rngs)


def test_nnx_undeclared_stack_is_refused():
    """A stack's kernel [L, d_in, d_out] is not read as one DenseGeneral matrix, whether its
    name is a query's (q [3, 32, 32]: axis 0 is not d) or its out axis is d (mlp_down)."""
    model = NnxStackLM(nnx.Rngs(0))
    with pytest.raises(
        ValueError,
        match=r"(?s)'layers/mlp_down/kernel' \(3, 64, 32\), 'layers/q/kernel' \(3, 32, 32\)"
        ".*stacked=.*known=",
    ):
        scion_jax.propose_rules(model)
    roles = dict(scion_jax.propose_rules(model, stacked="^layers/"))
    assert (
        roles[r"^layers/q/kernel$"]
        == roles[r"^layers/mlp_down/kernel$"]
        == Role("rms_to_rms", batch_axes=0)
    )


def test_nnx_module_gives_its_params_rules():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(V, D, rngs=rngs)
            self.bn = nnx.BatchNorm(D, rngs=rngs)  # its batch statistics are not parameters
            self.lm_head = nnx.Linear(D, V, rngs=rngs)

    model = Net(nnx.Rngs(0))
    rules = scion_jax.propose_rules(model)
    assert rules == scion_jax.propose_rules(nnx.state(model, nnx.Param))
    assert [p for p, _ in rules] == [
        r"^bn/bias$",
        r"^bn/scale$",
        r"^embed/embedding$",
        r"^lm_head/bias$",
        r"^lm_head/kernel$",
    ]


# ----- refusals and smaller mends -----
def test_ambiguous_layouts_raise_with_the_ways_to_say():
    bare = {"embed": {"weight": jnp.zeros((V, D))}, "lm_head": {"weight": jnp.zeros((V, D))}}
    with pytest.raises(
        ValueError, match=r"'embed/weight' \(48, 32\), 'lm_head/weight' \(48, 32\)"
    ) as e:
        scion_jax.propose_rules(bare)
    for way in (
        "layout='out_in'",
        "known=",
        "Equinox module",
        "Role('rms_to_inf', layout='out_in')",
    ):
        assert way in str(e.value), way
    roles = dict(scion_jax.propose_rules(bare, layout="out_in"))
    assert roles[r"^embed/weight$"] == Role("l1_to_rms")  # a table, [V, d] in every library
    assert roles[r"^lm_head/weight$"] == Role("rms_to_inf", layout="out_in")
    readable = {"embed": {"embedding": jnp.zeros((V, D))}, "lm_head": {"kernel": jnp.zeros((D, V))}}
    with pytest.raises(ValueError, match=r"are: 'mlp/mat' \(32, 64\)\. "):  # an unknown name
        scion_jax.propose_rules({"mlp": {"mat": jnp.zeros((D, 2 * D))}, **readable})

    class Raw(eqx.Module):  # a raw array in an Equinox model: no module type says its layout
        unembed: jax.Array
        embed: eqx.nn.Embedding

    raw = Raw(jnp.zeros((V, D)), eqx.nn.Embedding(V, D, key=jax.random.key(0)))
    with pytest.raises(ValueError, match=r"'unembed' \(48, 32\)"):
        scion_jax.propose_rules(raw)
    roles = dict(scion_jax.propose_rules(raw, layout="out_in"))
    assert roles[r"^unembed$"] == Role("rms_to_inf", layout="out_in")  # head by its own name
    with pytest.raises(ValueError, match=r"rules is a function \('label_fn'\)"):

        def label_fn(params):
            return jax.tree.map(lambda _: "rms_to_rms", params)

        scion_jax.scion(0.1, label_fn)
    no_head = {"embed": {"embedding": jnp.zeros((V, D))}, "mlp": {"kernel": jnp.zeros((D, D))}}
    with pytest.raises(ValueError, match=r"No parameter is proposed an output norm.*tied=False"):
        scion_jax.propose_rules(no_head, tied=False)


def test_linen_layer_names_merge_into_one_rule():
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x + nn.Dense(D, name="mlp")(nn.LayerNorm()(x))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            x = nn.Embed(V, D, name="embed")(tokens)
            for i in range(3):
                x = Block(name=f"blocks_{i}")(x)
            return nn.Dense(V, name="lm_head")(x)

    params = Net().init(jax.random.key(0), jnp.zeros((1, T), jnp.int32))["params"]
    rules = scion_jax.propose_rules(params)
    assert [p for p, _ in rules] == [
        r"^blocks_\d+/LayerNorm_\d+/bias$",
        r"^blocks_\d+/LayerNorm_\d+/scale$",
        r"^blocks_\d+/mlp/bias$",
        r"^blocks_\d+/mlp/kernel$",
        r"^embed/embedding$",
        r"^lm_head/bias$",
        r"^lm_head/kernel$",
    ]


class NanodoLike(nn.Module):
    """nanodo's layout: a tied table (`attend`), learned positions added before the first
    pre-norm, DenseGeneral attention."""

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(V, D, name="embed")
        x = embed(tokens) + nn.Embed(T, D, name="pos_embed")(jnp.arange(tokens.shape[-1]))
        h = nn.LayerNorm()(x)
        q, k, v = (
            nn.DenseGeneral((HEADS, D // HEADS), name=n)(h) for n in ("query", "key", "value")
        )
        att = nn.dot_product_attention(q, k, v, mask=nn.make_causal_mask(tokens))
        x = x + nn.DenseGeneral(D, axis=(-2, -1), name="out")(att)
        return embed.attend(nn.LayerNorm()(x))


def test_tied_linen_model_tokens_and_positions_at_one_scale():
    """The tied table and the positions added to it get one role: init_params starts both at
    rows of L2 1 (RMS 1/√d: neither drowns the other before the first pre-norm), logits O(1),
    and the first steps move token rows and position rows by the same L2 η."""
    tokens = _tokens()
    model = NanodoLike()
    params = model.init(jax.random.key(0), tokens[:, :-1])["params"]
    rules = scion_jax.propose_rules(params)
    roles = dict(rules)
    assert (
        roles[r"^embed/embedding$"]
        == roles[r"^pos_embed/embedding$"]
        == (scion_jax.tied_embedding(D))
    )
    params = scion_jax.init_params(jax.random.key(1), params, rules, 1, (r"out/kernel$",))
    for table in ("embed", "pos_embed"):
        rows = np.linalg.norm(np.asarray(params[table]["embedding"]), axis=1)
        np.testing.assert_allclose(rows, 1.0, rtol=1e-5)
    loss = _loss(model.apply({"params": params}, tokens[:, :-1]), tokens)
    assert math.log(V) < float(loss) < math.log(V) + 1
    tx = scion_jax.scion(0.01, rules)
    grads = jax.grad(lambda p: _loss(model.apply({"params": p}, tokens[:, :-1]), tokens))(params)
    u, _ = tx.update(grads, tx.init(params), params)
    seen = np.unique(np.asarray(tokens[:, :-1]))
    for table, rows in (("embed", seen), ("pos_embed", np.arange(T))):
        step = np.linalg.norm(np.asarray(u[table]["embedding"])[rows], axis=1)
        np.testing.assert_allclose(step, 0.01, rtol=1e-4)
