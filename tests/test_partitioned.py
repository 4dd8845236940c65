"""Partitioned Newton–Schulz (`scion(..., mesh=...)`, `axis_name=...`) on 8 fake CPU devices.

maxtext style: every sharded result is checked against the unsharded reference,
values and output shardings both.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import scion_jax
from scion_jax import hlo_stats, partitioned

RULES = [
    ("unembed", "rms_to_inf"),  # before "embed", which it contains
    ("embed", "l1_to_rms"),
    ("bias", "bias_rms"),
    ("stack", scion_jax.Role("rms_to_rms", batch_axes=0)),
    (".*", "rms_to_rms"),
]
MESHES = {(8,): ("fsdp",), (2, 4): ("fsdp", "tensor"), (4, 2): ("fsdp", "tensor")}


def make_grads(seed: int = 0) -> dict[str, np.ndarray]:
    """Five equal-shape matrices (8 does not divide 5), two other shapes, a stack, LMO rows.

    Short sides are ≥ 64: there XLA:CPU runs the same matmul kernels for one matrix and
    for a stack, so fp32 results agree to rounding. (At 32 wide they differ, and 5-step
    fp32 Newton–Schulz noise, ~1.1e-6 relative — as far from float64 — passes 1e-6.)
    """
    rng = np.random.default_rng(seed)
    shapes = {f"w{i}": (64, 96) for i in range(5)}
    shapes |= {"tall": (128, 64), "mid0": (64, 128), "mid1": (64, 128), "stack": (8, 64, 96)}
    shapes |= {"embed": (128, 64), "unembed": (64, 128), "bias": (64,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def spec_for(kind: str, shape: tuple[int, ...], names: tuple[str, ...]) -> P:
    """The PartitionSpec of `kind` for a parameter of `shape` (tensor → last mesh axis)."""
    fsdp, tensor = names[0], names[-1]
    if len(shape) == 1 or kind == "replicated":
        return P()
    if len(shape) == 3:  # the stacked [L, d_in, d_out] weight
        return {"stack_L": P(fsdp, None, None), "stack_rows": P(None, fsdp, None)}.get(
            kind, P(None, fsdp, None) if kind == "fsdp" else P(None, None, tensor)
        )
    return {"fsdp": P(fsdp, None), "tensor": P(None, tensor), "2d": P(fsdp, tensor)}.get(
        kind, P(fsdp, None)
    )


def reference(grads, **kw):
    opt = scion_jax.scion(1.0, RULES, ns_dtype="float32", **kw)
    return jax.jit(lambda g: opt.update(g, opt.init(g))[0])(grads)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def assert_close_tree(got, want):
    """The whole update within 1e-6 relative; each leaf within the fp32 NS noise floor.

    XLA:CPU may pick a different dot kernel after an all-to-all (seen for a column-split
    64×96 matrix): 5-step fp32 Muon Newton–Schulz then moves by ~1.2e-6 relative, the
    same as its distance from a float64 run (1.1e-6), so one leaf may exceed 1e-6.
    """
    flat = lambda t: np.concatenate([np.asarray(t[k], np.float64).ravel() for k in want])  # noqa: E731
    assert rel_err(flat(got), flat(want)) <= 1e-6, rel_err(flat(got), flat(want))
    for k in want:
        assert rel_err(got[k], want[k]) <= 2e-6, (k, rel_err(got[k], want[k]))


@pytest.fixture(scope="module")
def ref_update():
    grads = make_grads()
    return grads, jax.device_get(reference(grads))


# Every mesh with Explicit axes; Auto on (8,) and (2, 4) ((4, 2) adds nothing there:
# under Auto GSPMD, not the gradient's spec, decides the routing). Keeps the suite short.
@pytest.mark.parametrize(
    "axis_type, shape",
    [(AxisType.Explicit, s) for s in MESHES] + [(AxisType.Auto, (8,)), (AxisType.Auto, (2, 4))],
)
@pytest.mark.parametrize("kind", ["fsdp", "tensor", "replicated", "stack_L", "stack_rows", "2d"])
def test_mesh_update_matches_plain(ref_update, axis_type, shape, kind):
    if kind == "2d" and len(shape) == 1:
        pytest.skip("needs a 2-D mesh")
    grads, want = ref_update
    names = MESHES[shape]
    mesh = jax.make_mesh(shape, names, axis_types=(axis_type,) * len(shape))
    shardings = {k: NamedSharding(mesh, spec_for(kind, v.shape, names)) for k, v in grads.items()}
    sharded = {k: jax.device_put(v, shardings[k]) for k, v in grads.items()}
    opt = scion_jax.scion(1.0, RULES, ns_dtype="float32", mesh=mesh)
    state = opt.init(sharded)
    # Under Auto axes the layout of jit outputs is the caller's choice (out_shardings).
    out_shardings = shardings if axis_type == AxisType.Auto else None
    step = jax.jit(lambda g, s: opt.update(g, s)[0], out_shardings=out_shardings)
    got = step(sharded, state)
    assert_close_tree(got, want)
    for k in grads:
        assert got[k].sharding.is_equivalent_to(shardings[k], grads[k].ndim), (
            k,
            got[k].sharding,
            shardings[k],
        )


def test_auto_axes_without_out_shardings(ref_update):
    """Under Auto axes with no out_shardings GSPMD picks the layout; values still match."""
    grads, want = ref_update
    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(AxisType.Auto,) * 2)
    sharded = {
        k: jax.device_put(v, NamedSharding(mesh, spec_for("fsdp", v.shape, mesh.axis_names)))
        for k, v in grads.items()
    }
    opt = scion_jax.scion(1.0, RULES, ns_dtype="float32", mesh=mesh)
    assert_close_tree(jax.jit(lambda g: opt.update(g, opt.init(g))[0])(sharded), want)


@pytest.mark.parametrize("shape", list(MESHES))
def test_auto_axes_updates_keep_param_shardings(ref_update, shape):
    """Auto axes, no out_shardings, row- and column-split parameters mixed (and a
    replicated and a stacked one): each update comes back in its parameter's sharding,
    taken from `init`, with momentum and weight decay on."""
    grads, _ = ref_update
    names = MESHES[shape]
    mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))
    kinds = {
        "w0": "fsdp",
        "w1": "tensor",
        "mid0": "2d",
        "mid1": "replicated",
        "tall": "tensor",
        "stack": "stack_rows",
        "embed": "tensor",
        "unembed": "fsdp",
    }
    if len(shape) == 1:
        kinds["mid0"] = "fsdp"
    shardings = {
        k: NamedSharding(mesh, spec_for(kinds.get(k, "fsdp"), v.shape, names))
        for k, v in grads.items()
    }
    g = {k: jax.device_put(v, shardings[k]) for k, v in grads.items()}
    params = {k: jax.device_put(0.5 * v, shardings[k]) for k, v in grads.items()}
    opt = scion_jax.scion(1.0, RULES, ns_dtype="float32", mesh=mesh, momentum=0.5, weight_decay=0.1)
    got = jax.jit(opt.update)(g, opt.init(params), params)[0]
    plain = scion_jax.scion(1.0, RULES, ns_dtype="float32", momentum=0.5, weight_decay=0.1)
    host = jax.device_get(params)
    want = jax.jit(plain.update)(grads, plain.init(host), host)[0]
    assert_close_tree(jax.device_get(got), jax.device_get(want))
    for k in grads:
        assert got[k].sharding.is_equivalent_to(shardings[k], grads[k].ndim), (
            k,
            got[k].sharding.spec,
            shardings[k].spec,
        )


def test_inject_hyperparams_with_mesh(ref_update):
    """Injected learning rate and ns_steps (traced inside the shard_map) still match."""
    grads, want = ref_update
    mesh = jax.make_mesh((8,), ("fsdp",))
    sh = {k: NamedSharding(mesh, spec_for("fsdp", v.shape, ("fsdp",))) for k, v in grads.items()}
    g = {k: jax.device_put(v, sh[k]) for k, v in grads.items()}
    opt = optax.inject_hyperparams(scion_jax.scion, static_args=("mesh",))(
        learning_rate=1.0, rules=RULES, ns_steps=5, ns_dtype="float32", mesh=mesh
    )
    got = jax.jit(lambda g: opt.update(g, opt.init(g), g)[0])(g)
    assert_close_tree(got, want)


def test_explicit_with_momentum_and_decay_matches_plain():
    """Momentum buffers and weight decay keep the parameter's explicit sharding."""
    grads = make_grads(1)
    params = make_grads(2)
    kw = dict(momentum=0.5, weight_decay=0.1)
    opt = scion_jax.scion(1.0, RULES, ns_dtype="float32", **kw)
    s = opt.init(params)
    want = jax.jit(lambda g, s, p: opt.update(g, s, p)[0])(grads, s, params)
    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"))
    sh = {
        k: NamedSharding(mesh, spec_for("fsdp", v.shape, mesh.axis_names)) for k, v in grads.items()
    }
    put = functools.partial(jax.tree.map, jax.device_put)
    g2, p2 = put(grads, sh), put(params, sh)
    opt2 = scion_jax.scion(1.0, RULES, ns_dtype="float32", mesh=mesh, **kw)
    got = jax.jit(lambda g, s, p: opt2.update(g, s, p)[0])(g2, opt2.init(p2), p2)
    assert_close_tree(got, jax.device_get(want))
    for k in grads:
        assert got[k].sharding.is_equivalent_to(sh[k], grads[k].ndim)


def test_one_device_mesh_is_plain_path():
    grads = make_grads()
    mesh = jax.make_mesh((1,), ("fsdp",), devices=jax.devices()[:1])
    got = reference(grads, mesh=mesh)
    want = reference(grads)
    for k in grads:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]))


def test_pmap_axis_name_matches_plain(ref_update):
    grads, want = ref_update
    opt = scion_jax.scion(1.0, RULES, ns_dtype="float32", axis_name="batch")
    n = jax.local_device_count()
    rep = jax.tree.map(lambda x: np.broadcast_to(x, (n, *x.shape)), grads)
    got = jax.pmap(lambda g: opt.update(g, opt.init(g))[0], axis_name="batch")(rep)
    for d in (0, n - 1):
        assert_close_tree(jax.tree.map(lambda x, d=d: x[d], got), want)


@pytest.mark.parametrize("axis", ["batch", ("a", "b")])
def test_shard_map_axis_name_matches_plain(ref_update, axis):
    """A data-parallel shard_map step: per-device grads averaged, then the Scion update."""
    grads, want = ref_update
    if isinstance(axis, str):
        mesh = jax.make_mesh((8,), (axis,))
    else:
        mesh = jax.make_mesh((2, 4), axis)
    opt = scion_jax.scion(1.0, RULES, ns_dtype="float32", axis_name=axis)

    def step(g):
        g = jax.tree.map(lambda x: jax.lax.pmean(x[0], axis), g)
        return opt.update(g, opt.init(g))[0]

    # Each device holds a copy of the gradient: the mean is the gradient itself.
    per_dev = jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(x, (8, *x.shape)), NamedSharding(mesh, P(axis))),
        grads,
    )
    fn = jax.shard_map(step, mesh=mesh, in_specs=P(axis), out_specs=P())
    got = jax.jit(fn)(per_dev)
    assert_close_tree(got, want)


def test_errors():
    mesh = jax.make_mesh((8,), ("fsdp",))
    with pytest.raises(ValueError, match="at most one"):
        scion_jax.scion(1.0, RULES, mesh=mesh, axis_name="fsdp")
    with pytest.raises(ValueError, match="jax.sharding.Mesh"):
        scion_jax.scion(1.0, RULES, mesh="fsdp")
    with pytest.raises(ValueError, match="axis_name"):
        scion_jax.scion(1.0, RULES, axis_name=3)
    opt = scion_jax.scion(1.0, RULES, axis_name="nope")
    grads = make_grads()
    with pytest.raises(ValueError, match="not bound"):
        opt.update(grads, opt.init(grads))
    other = jax.make_mesh((8,), ("data",))
    sharded = {
        k: jax.device_put(v, NamedSharding(other, spec_for("fsdp", v.shape, ("data",))))
        for k, v in grads.items()
    }
    opt = scion_jax.scion(1.0, RULES, mesh=mesh)
    with pytest.raises(ValueError, match="does not have"):
        jax.jit(lambda g: opt.update(g, opt.init(g))[0])(sharded)


def test_route_and_apply_owner_sees_whole_matrices():
    """Each owner's fn input is a whole matrix of the stack: check via per-matrix sums."""
    mesh = jax.make_mesh((2, 4), ("r", "c"))
    x = np.arange(3 * 16 * 8, dtype=np.float32).reshape(3, 16, 8)
    xs = jax.device_put(x, NamedSharding(mesh, P(None, "r", "c")))
    out = partitioned.owner_apply([xs], mesh, lambda m: jnp.sum(m, axis=(1, 2))[:, None])[0]
    np.testing.assert_allclose(np.asarray(out)[:, 0], x.sum(axis=(1, 2)))


def _compile_update(opt, shapes, shardings=None):
    abstract = {
        k: jax.ShapeDtypeStruct(
            s, jnp.float32, sharding=None if shardings is None else shardings[k]
        )
        for k, s in shapes.items()
    }
    return jax.jit(lambda g: opt.update(g, opt.init(g))[0]).lower(abstract).compile()


@pytest.mark.parametrize(
    "spec, expected",
    [
        (P("fsdp", None), {"all-to-all": 2}),
        (P(), {"all-gather": 1}),
        (P(None, "fsdp"), {"all-to-all": 2}),
    ],
)
def test_per_device_flops_and_collectives(spec, expected):
    """Per-device FLOPs ≤ 1.25 × ideal; whole matrices move once, nothing inside NS."""
    rules = [(".*", "rms_to_rms")]
    shapes = {f"w{i}": (128, 256) for i in range(16)}
    total = hlo_stats.flops(_compile_update(scion_jax.scion(1.0, rules), shapes))
    mesh = jax.make_mesh((8,), ("fsdp",))
    shardings = {k: NamedSharding(mesh, spec) for k in shapes}
    part = hlo_stats.summary(
        _compile_update(scion_jax.scion(1.0, rules, mesh=mesh), shapes, shardings)
    )
    ideal = total / 8
    assert part["flops"] <= 1.25 * ideal, part["flops"] / ideal
    counts = {op: c["count"] for op, c in part["collectives"].items()}
    assert counts == expected, part["collectives"]
    # The GSPMD-only version (plain scion, sharded params, Auto axes): reported, not asserted.
    auto = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))
    gspmd = hlo_stats.summary(
        _compile_update(
            scion_jax.scion(1.0, rules), shapes, {k: NamedSharding(auto, spec) for k in shapes}
        )
    )
    print(
        f"{spec}: partitioned {part['flops'] / ideal:.3f}x ideal, "
        f"GSPMD-only {gspmd['flops'] / ideal:.3f}x ideal, {gspmd['collectives']}"
    )


def test_stacked_along_layers_needs_no_communication():
    rules = [(".*", scion_jax.Role("rms_to_rms", batch_axes=0))]
    shapes = {"stack": (16, 64, 96)}
    mesh = jax.make_mesh((8,), ("fsdp",))
    sh = {"stack": NamedSharding(mesh, P("fsdp", None, None))}
    part = hlo_stats.summary(_compile_update(scion_jax.scion(1.0, rules, mesh=mesh), shapes, sh))
    assert part["collectives"] == {}


def test_row_lmos_reduce_only_when_split():
    """l1_to_rms normalises rows (over d_out): local for row-split, a psum for col-split."""
    rules = [(".*", "l1_to_rms")]
    shapes = {"embed": (256, 64)}
    mesh = jax.make_mesh((8,), ("fsdp",))
    opt = scion_jax.scion(1.0, rules, mesh=mesh)
    rows = _compile_update(opt, shapes, {"embed": NamedSharding(mesh, P("fsdp", None))})
    assert hlo_stats.collectives(rows.as_text()) == {}
    cols = hlo_stats.collectives(
        _compile_update(opt, shapes, {"embed": NamedSharding(mesh, P(None, "fsdp"))}).as_text()
    )
    assert set(cols) == {"all-reduce"}
    assert cols["all-reduce"]["bytes"] <= 256 * 4  # one squared norm per row


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_layer_norms_under_mesh_match_plain(axis_type):
    """Whole-matrix norms computed on owners equal the unpartitioned ones."""
    grads = make_grads(3)
    which = ("role", "condition_number", "stable_rank", "frobenius")
    want = jax.device_get(jax.jit(lambda t: scion_jax.layer_norms(t, RULES, which))(grads))
    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=(axis_type,) * 2)
    kinds = {"w0": "fsdp", "w1": "tensor", "w2": "2d", "stack": "stack_L", "mid0": "replicated"}
    sh = {
        k: NamedSharding(mesh, spec_for(kinds.get(k, "fsdp"), v.shape, mesh.axis_names))
        for k, v in grads.items()
    }
    sharded = {k: jax.device_put(v, sh[k]) for k, v in grads.items()}
    fn = jax.jit(lambda t: scion_jax.layer_norms(t, RULES, which, mesh=mesh))
    got = jax.device_get(fn(sharded))
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
    hlo = fn.lower(sharded).compile().as_text()
    assert "all-to-all" in hlo  # FSDP-split matrices travel to their owners
