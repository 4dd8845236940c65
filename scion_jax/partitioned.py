"""Partitioned Newton–Schulz: each device orthogonalizes the whole matrices it owns.

Disco's scheme (PAPER.md §7) in JAX. The "rms_to_rms" matrices are grouped into
stacks of equal shape (a tall matrix joins the stack of its transpose; members
sharded unlike the stack are resharded to it); inside one `jax.shard_map` per
stack, largest matrices first, every device

  1. pads its local part of the stack to a multiple of the devices that share it,
  2. sends whole-matrix slices to their owners: one `all_to_all` over the mesh axes
     splitting the rows (FSDP), one over those splitting the columns (tensor
     parallel); on axes over which the stack is replicated it just takes its own
     slice (no communication); axes splitting a stacked ``[L, ...]`` batch axis
     already hold whole matrices (no communication),
  3. runs Newton–Schulz on its ``ceil(count / devices)`` matrices (no collective
     inside the iterations),
  4. sends the results back the same way (`all_gather` on the replicated axes,
     reverse `all_to_all`s), so each update has its parameter's own sharding.

Owners: matrix ``j`` of a device's padded local stack goes to the ``j // k``-th
device of its group (``k`` slots each). All matrices of a stack cost the same, so
every device gets exactly ``k`` of them: balanced, with zero-padding when the count
does not divide (a zero matrix orthogonalizes to zero).

Explicit mesh axes give each gradient's sharding at trace time and the routing
above follows it exactly. Under Auto axes the sharding is unknown while tracing;
the stack is then laid out matrix-split over all devices and GSPMD does the moving
(a local slice for replicated gradients, an all-to-all for sharded ones); each
update is then constrained back to its parameter's layout, recorded by `init`
(`ParamShardings`, kept static in the optimizer state).
(On 2-D meshes GSPMD may then gather a stack whole before splitting it, warning
"Involuntary full rematerialization": Explicit axes route with the least traffic.)

On CPU with many (fake) devices, run with
``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false``: XLA:CPU may
otherwise run independent collectives concurrently and deadlock (stacks are also
chained one after another there).

`axis_orthogonalizer` is the data-parallel path, for use inside a `jax.pmap` or
`jax.shard_map` step whose gradients are already averaged: each device
orthogonalizes its share, one `all_gather` completes the update.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from scion_jax.newton_schulz import Coeffs, newton_schulz

Orthogonalizer = Callable[[Sequence[jax.Array]], list[jax.Array]]
AxisName = str | tuple[str, ...]
# Maps a local stack [k, d_in, d_out] to [k, ...] (orth(), or per-matrix norms).
StackFn = Callable[[jax.Array], jax.Array]


def _axes(entry: Any) -> tuple[str, ...]:
    """Mesh axis names of one PartitionSpec entry."""
    if entry is None or entry is PartitionSpec.UNCONSTRAINED:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _group_size(mesh: Mesh, axes: Sequence[str]) -> int:
    return math.prod(mesh.shape[a] for a in axes)


def spec_of(x: jax.Array) -> PartitionSpec | None:
    """The explicit sharding spec of a traced (or concrete) array, None under Auto."""
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not any(t == AxisType.Explicit for t in mesh.axis_types):
        return None
    spec = tuple(sharding.spec)
    return PartitionSpec(*spec, *([None] * (x.ndim - len(spec))))


def _gather(x: jax.Array, axes: tuple[str, ...], invariant: bool) -> jax.Array:
    """Tiled all-gather along axis 0 over `axes`; `invariant`: typed invariant over
    them (what a caller's vma-checked `shard_map` expects of a replicated update)."""
    if invariant:
        return jax.lax.all_gather(x, axes, axis=0, tiled=True, to="invarying")
    return jax.lax.all_gather(x, axes, axis=0, tiled=True)


def _all_to_all(x: jax.Array, axes: tuple[str, ...], split: int, concat: int) -> jax.Array:
    if not axes:
        return x
    return jax.lax.all_to_all(x, axes, split, concat, tiled=True)


def route_and_apply(
    x: jax.Array,
    fn: StackFn,
    *,
    row_axes: tuple[str, ...] = (),
    col_axes: tuple[str, ...] = (),
    free_axes: tuple[str, ...] = (),
    group: int,
    reduce_out: bool = False,
    invariant: bool = False,
) -> jax.Array:
    """Inside a shard_map/pmap: apply `fn` to whole matrices on their owners.

    Args:
      x: local block ``[c, d_in/|rows|, d_out/|cols|]`` of a stack of ``c`` matrices
        per batch shard, rows split over `row_axes`, columns over `col_axes`,
        replicated over `free_axes`.
      fn: ``[k, d_in, d_out] -> [k, d_in, d_out]`` (or ``[k, m]`` with `reduce_out`).
      group: the number of devices sharing the stack (product of the three sizes).
      reduce_out: `fn` returns per-matrix values ``[k, m]``; they are gathered to
        every device of the group as ``[c, m]`` rather than sent back as shards.
      invariant: the gathered result is typed invariant over the gathered axes (for
        a caller's `shard_map` with ``check_vma=True``).

    Returns:
      ``fn`` of every matrix, laid out as `x` (or ``[c, m]`` with `reduce_out`).
    """
    count = x.shape[0]
    k = -(-count // group)
    x = jnp.pad(x, ((0, k * group - count), (0, 0), (0, 0)))
    x = _all_to_all(x, row_axes, 0, 1)  # whole rows to the owners
    x = _all_to_all(x, col_axes, 0, 2)  # whole columns to the owners
    if free_axes:  # replicated here: keep only this device's slice
        x = jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(free_axes) * k, k, 0)
    y = fn(x)
    if free_axes:
        y = _gather(y, free_axes, invariant)
    if reduce_out:
        for axes in (col_axes, row_axes):
            if axes:
                y = _gather(y, axes, invariant)
    else:
        y = _all_to_all(y, col_axes, 2, 0)
        y = _all_to_all(y, row_axes, 1, 0)
    return y[:count]


def _explicit_apply(
    stack: jax.Array, spec: PartitionSpec, mesh: Mesh, fn: StackFn, reduce_out: bool
) -> jax.Array:
    """`fn` on every matrix of ``stack [n, *batch, d_in, d_out]`` of sharding `spec`."""
    batch_axes = tuple(a for e in spec[:-2] for a in _axes(e))
    row_axes, col_axes = _axes(spec[-2]), _axes(spec[-1])
    used = set(batch_axes + row_axes + col_axes)
    free_axes = tuple(a for a in mesh.axis_names if a not in used)
    group = _group_size(mesh, row_axes + col_axes + free_axes)
    out_spec = PartitionSpec(*spec[:-2], None) if reduce_out else spec

    def body(local):
        lead = local.shape[:-2]
        flat = local.reshape(-1, *local.shape[-2:])
        y = route_and_apply(
            flat,
            fn,
            row_axes=row_axes,
            col_axes=col_axes,
            free_axes=free_axes,
            group=group,
            reduce_out=reduce_out,
        )
        return y.reshape(*lead, *y.shape[1:])

    stack = jax.sharding.reshard(stack, NamedSharding(mesh, spec))
    smap = jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=out_spec, check_vma=False)
    return smap(stack)


def _auto_apply(stack: jax.Array, mesh: Mesh, fn: StackFn, reduce_out: bool) -> jax.Array:
    """`fn` on every matrix of ``stack [c, d_in, d_out]``, matrix-split over all devices.

    Per-matrix values (`reduce_out`) are all-gathered inside (a few bytes): slicing
    them out of a device-split array makes GSPMD emit one-to-one collective-permutes,
    which can deadlock XLA:CPU's concurrently executed collectives.
    """
    count, n = stack.shape[0], mesh.size
    k = -(-count // n)
    stack = jnp.pad(stack, ((0, k * n - count), (0, 0), (0, 0)))
    spec = PartitionSpec(mesh.axis_names)
    if reduce_out:

        def gathered(x):
            return _gather(fn(x), mesh.axis_names, invariant=False)

        smap = jax.shard_map(
            gathered, mesh=mesh, in_specs=spec, out_specs=PartitionSpec(), check_vma=False
        )
        out = smap(stack)
        return out[:count]
    out = jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec)(stack)
    # Back to a row- (or column-) split layout before unstacking: from there each
    # matrix reaches any parameter layout with at most one collective of its size.
    names = mesh.axis_names
    for dim in (1, 2):
        if out.ndim == 3 and out.shape[dim] % n == 0:
            target = PartitionSpec(None, *([None] * (dim - 1)), names)
            out = jax.lax.with_sharding_constraint(out, NamedSharding(mesh, target))
            break
    return out[:count]


def _apply_grouped(
    mats: Sequence[jax.Array], mesh: Mesh, fn: StackFn, reduce_out: bool
) -> list[jax.Array]:
    """`fn` on every matrix of every ``[*batch, d_in, d_out]`` in `mats`, stack by stack.

    For orth() (not `reduce_out`) tall matrices join the stack of their transposes,
    as Newton–Schulz works on the short side anyway: e.g. an MLP's w2 ``[h, d]``
    shares owners with w1, w3 ``[d, h]``, which balances the devices better. A
    member whose sharding differs from its stack's (most common) one is resharded
    to it first and back after. With `reduce_out` each result is ``[*batch, m]``.
    """
    flip = [not reduce_out and m.shape[-2] > m.shape[-1] for m in mats]
    mats = [jnp.swapaxes(m, -1, -2) if f else m for m, f in zip(mats, flip, strict=True)]
    specs = [spec_of(m) for m in mats]
    groups: dict[Any, list[int]] = {}
    for i, (m, s) in enumerate(zip(mats, specs, strict=True)):
        key = ("auto", m.shape[-2:]) if s is None else ("explicit", m.shape)
        groups.setdefault(key, []).append(i)
    # Largest matrices first (only the dispatch order: each stack is balanced alone).
    order = sorted(groups, key=lambda key: -math.prod(mats[groups[key][0]].shape[-2:]))
    out: list[jax.Array] = list(mats)
    # On CPU, stacks run one after another: XLA:CPU runs independent collectives
    # concurrently on its thread pool, and enough of them at once deadlock (seen with 8
    # fake devices). GPU/TPU order collectives on their streams: no chaining there.
    serial = mesh.devices.flat[0].platform == "cpu"
    prev = None  # the previous stack's result
    for key in order:
        idx = groups[key]
        if serial and prev is not None:  # this stack's inputs wait for it
            tied, _ = jax.lax.optimization_barrier(([mats[i] for i in idx], prev))
            for i, m in zip(idx, tied, strict=True):
                mats[i] = m
        if key[0] == "auto":
            flat = [mats[i].reshape(-1, *mats[i].shape[-2:]) for i in idx]
            res = prev = _auto_apply(jnp.concatenate(flat, axis=0), mesh, fn, reduce_out)
            start = 0
            for i, f in zip(idx, flat, strict=True):
                piece = res[start : start + f.shape[0]]
                out[i] = piece.reshape(*mats[i].shape[:-2], *piece.shape[1:])
                start += f.shape[0]
            continue
        # Sub-stacks of equal sharding, each resharded (if needed) to the common one.
        by_spec: dict[tuple, list[int]] = {}
        for i in idx:
            by_spec.setdefault(tuple(specs[i]), []).append(i)
        common = max(by_spec, key=lambda sp: len(by_spec[sp]))
        parts = []
        for sp, sub in by_spec.items():
            _check_axes(PartitionSpec(*sp), mesh)
            part = jnp.stack([mats[i] for i in sub])
            parts.append(_reshard(part, (None, *sp), (None, *common), mesh))
        spec = PartitionSpec(None, *common)
        res = prev = _explicit_apply(jnp.concatenate(parts), spec, mesh, fn, reduce_out)
        start = 0
        for sp, sub in by_spec.items():
            part = res[start : start + len(sub)]
            if not reduce_out:
                part = _reshard(part, (None, *common), (None, *sp), mesh)
            for j, i in enumerate(sub):
                out[i] = part[j]
            start += len(sub)
    return [jnp.swapaxes(o, -1, -2) if f else o for o, f in zip(out, flip, strict=True)]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class ParamShardings:
    """The NamedShardings of a parameter tree's leaves on an Auto-axes mesh (static).

    Under Auto axes a jitted update does not know its parameters' layouts while
    tracing, and GSPMD may return an update laid out like the partitioned
    Newton–Schulz stack rather than like its parameter. Kept (as static pytree data)
    in the optimizer state, these constrain each update back to its parameter's layout.
    """

    leaves: tuple[NamedSharding, ...]

    def constrain(self, updates: Sequence[jax.Array]) -> list[jax.Array]:
        if len(updates) != len(self.leaves):
            raise ValueError(
                f"The updates have {len(updates)} leaves but init saw {len(self.leaves)} "
                "parameters: call init on the parameters this optimizer updates."
            )
        return [
            jax.lax.with_sharding_constraint(u, s)
            for u, s in zip(updates, self.leaves, strict=True)
        ]


def auto_shardings(params: Any) -> ParamShardings | None:
    """`ParamShardings` of `params` when every leaf is a concrete array placed on a
    multi-device Auto-axes mesh (None otherwise: traced, one device, Explicit axes)."""
    leaves = jax.tree.leaves(params)
    shardings = [getattr(x, "sharding", None) for x in leaves]
    if not leaves or any(isinstance(x, jax.core.Tracer) for x in leaves):
        return None
    if not all(
        isinstance(s, NamedSharding)
        and s.mesh.size > 1
        and all(t == AxisType.Auto for t in s.mesh.axis_types)
        for s in shardings
    ):
        return None
    return ParamShardings(tuple(shardings))


def _reshard(x: jax.Array, have: tuple, want: tuple, mesh: Mesh) -> jax.Array:
    if tuple(have) == tuple(want):
        return x
    return jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec(*want)))


def _check_axes(spec: PartitionSpec, mesh: Mesh) -> None:
    unknown = [a for e in spec for a in _axes(e) if a not in mesh.axis_names]
    if unknown:
        raise ValueError(
            f"A gradient is sharded over mesh axes {unknown} that the optimizer's mesh "
            f"{dict(mesh.shape)} does not have: pass scion(..., mesh=) the parameters' mesh."
        )


def _wire_ns(ns_coeffs: Coeffs, ns_steps: int | jax.Array, ns_dtype: Any, **ns_kw) -> StackFn:
    """Newton–Schulz returning its result in the matmul dtype (exact: it was computed in
    it), so the return trip moves bf16, not fp32; "svd" stays fp32. `ns_kw`: the
    variant options of `newton_schulz` (gram, preconditioning)."""
    dtype = jnp.dtype(ns_dtype)
    wire = jnp.float32 if isinstance(ns_coeffs, str) and ns_coeffs == "svd" else dtype

    def ns(x):
        return newton_schulz(x, ns_coeffs, ns_steps, dtype, **ns_kw).astype(wire)

    return ns


def _check_mesh(mesh: Any) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((8,), ('fsdp',))); got "
            f"{type(mesh).__name__}."
        )
    if mesh.size == 0:
        raise ValueError("mesh has no devices.")
    return mesh


def mesh_orthogonalizer(
    mesh: Mesh,
    ns_coeffs: Coeffs = "muon",
    ns_steps: int | jax.Array = 5,
    ns_dtype: Any = jnp.bfloat16,
    ns_gram: bool = False,
    ns_preconditioning: str = "frobenius",
) -> Orthogonalizer:
    """orth() of each matrix, partitioned over `mesh` (for jit code with sharded params).

    Args:
      mesh: the mesh the parameters (and gradients) are sharded over; 1-D or 2-D,
        Auto or Explicit axis types, possibly spanning processes.
      ns_coeffs, ns_steps, ns_dtype, ns_gram, ns_preconditioning: Newton–Schulz
        settings (see `newton_schulz`).

    Returns:
      An orthogonalizer for `scale_by_scion`: takes fp32 ``[*batch, d_in, d_out]``
      matrices and returns orth() of each, sharded as its input (Explicit axes).
      A one-device mesh gives the plain per-matrix computation.
    """
    mesh = _check_mesh(mesh)
    kw = dict(gram=ns_gram, preconditioning=ns_preconditioning)
    ns = _wire_ns(ns_coeffs, ns_steps, ns_dtype, **kw)

    def orthogonalize(mats):
        if mesh.size == 1:
            return [newton_schulz(m, ns_coeffs, ns_steps, jnp.dtype(ns_dtype), **kw) for m in mats]
        out = _apply_grouped(list(mats), mesh, ns, reduce_out=False)
        return [o.astype(jnp.float32) for o in out]

    return orthogonalize


def owner_apply(
    mats: Sequence[jax.Array], mesh: Mesh, fn: StackFn, *, reduce_out: bool = True
) -> list[jax.Array]:
    """Applies `fn` to each whole matrix on its owner device (as `mesh_orthogonalizer`).

    Args:
      mats: ``[*batch, d_in, d_out]`` arrays.
      mesh: the mesh they are sharded over.
      fn: ``[k, d_in, d_out] -> [k, m]`` per-matrix values (``reduce_out``) or
        ``[k, d_in, d_out] -> [k, d_in, d_out]``.
      reduce_out: see above.

    Returns:
      One ``[*batch, m]`` (or ``[*batch, d_in, d_out]``) array per input.
    """
    mesh = _check_mesh(mesh)
    if mesh.size == 1:
        return [
            fn(m.reshape(-1, *m.shape[-2:])).reshape(*m.shape[:-2], -1) if reduce_out else fn(m)
            for m in mats
        ]
    return _apply_grouped(list(mats), mesh, fn, reduce_out)


def _invariant(x: jax.Array, axes: tuple[str, ...]) -> bool:
    """Whether `x` is typed invariant over `axes` (averaged gradients in a vma-checked
    shard_map; always so under pmap): its update must then be invariant too."""
    mat = getattr(jax.typeof(x), "mat", None)
    if mat is None or getattr(mat, "varying", None) is None:
        return False
    return not set(axes) & set(mat.varying)


def _axis_size(axis_name: AxisName) -> int:
    try:
        return jax.lax.axis_size(axis_name)
    except NameError as e:
        raise ValueError(
            f"axis_name {axis_name!r} is not bound: scion(..., axis_name=...) must run inside "
            "jax.pmap(..., axis_name=...) or jax.shard_map over a mesh with that axis."
        ) from e


def axis_orthogonalizer(
    axis_name: AxisName,
    ns_coeffs: Coeffs = "muon",
    ns_steps: int | jax.Array = 5,
    ns_dtype: Any = jnp.bfloat16,
    ns_gram: bool = False,
    ns_preconditioning: str = "frobenius",
) -> Orthogonalizer:
    """orth() of each matrix inside a data-parallel `pmap`/`shard_map` step (Disco's DP path).

    The matrices must be equal on every device of `axis_name` (gradients already
    averaged). Each device orthogonalizes ``ceil(count / devices)`` of every stack of
    equal-shape matrices and one `all_gather` per stack gives every device all of them.

    Args:
      axis_name: the data-parallel axis name (or a tuple of names).
      ns_coeffs, ns_steps, ns_dtype, ns_gram, ns_preconditioning: Newton–Schulz
        settings (see `newton_schulz`).
    """
    axes = (axis_name,) if isinstance(axis_name, str) else axis_name
    if not (isinstance(axes, tuple) and axes and all(isinstance(a, str) for a in axes)):
        raise ValueError(f"axis_name must be a str or a tuple of str; got {axis_name!r}.")
    kw = dict(gram=ns_gram, preconditioning=ns_preconditioning)
    ns = _wire_ns(ns_coeffs, ns_steps, ns_dtype, **kw)

    def orthogonalize(mats):
        size = _axis_size(axes)
        if size == 1:
            return [newton_schulz(m, ns_coeffs, ns_steps, jnp.dtype(ns_dtype), **kw) for m in mats]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, m in enumerate(mats):
            groups.setdefault(tuple(m.shape[-2:]), []).append(i)
        out: list[jax.Array | None] = [None] * len(mats)
        for idx in groups.values():
            flat = [mats[i].reshape(-1, *mats[i].shape[-2:]) for i in idx]
            stack = jnp.concatenate(flat, axis=0)
            res = route_and_apply(
                stack, ns, free_axes=axes, group=size, invariant=_invariant(stack, axes)
            )
            start = 0
            for i, f in zip(idx, flat, strict=True):
                piece = res[start : start + f.shape[0]].astype(jnp.float32)
                out[i] = piece.reshape(mats[i].shape)
                start += f.shape[0]
        return out  # type: ignore[return-value]

    return orthogonalize
