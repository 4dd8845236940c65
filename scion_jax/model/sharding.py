"""Logical-axis sharding for the decoder: one table from logical to mesh axes.

Every parameter of `scion_jax.model.Transformer` carries ``logical_axes`` metadata (e.g.
``("embed", "heads")`` for the q kernel, ``("layers", "embed", "heads")`` when scanned);
`AXIS_RULES` maps those names onto the mesh axes ``("data", "fsdp", "tensor")`` (flax gemma /
maxtext style: one table, not specs scattered through the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import PartitionSpec as P

MeshAxes = str | tuple[str, ...] | None

AXIS_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("seq", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
)


MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1) -> jax.sharding.Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh with Auto (GSPMD) axes, the mode the model is
    written for: place parameters by `param_specs` and let ``jax.jit`` propagate the rest.
    ``data=-1`` takes the devices left over."""
    n = jax.device_count()
    if data == -1:
        data = n // (fsdp * tensor)
    if data * fsdp * tensor != n:
        raise ValueError(f"Mesh {data}×{fsdp}×{tensor} does not use the {n} devices.")
    auto = (jax.sharding.AxisType.Auto,) * 3
    return jax.make_mesh((data, fsdp, tensor), MESH_AXES, axis_types=auto)


def logical_to_spec(
    axes: Sequence[str | None], rules: Sequence[tuple[str, MeshAxes]] = AXIS_RULES
) -> P:
    """PartitionSpec for logical `axes`; a mesh axis is used at most once (later uses → None)."""
    table = dict(rules)
    used: set[str] = set()
    out: list[MeshAxes] = []
    for name in axes:
        if name is not None and name not in table:
            raise ValueError(f"Logical axis {name!r} has no rule; known: {sorted(table)}.")
        mesh = table.get(name) if name is not None else None
        names = (mesh,) if isinstance(mesh, str) else tuple(mesh or ())
        if any(n in used for n in names):
            mesh = None
        else:
            used.update(names)
        out.append(mesh)
    return P(*out)


def _state(model_or_state: Any) -> Any:
    if isinstance(model_or_state, nnx.Module):
        return nnx.state(model_or_state, nnx.Param)
    return model_or_state


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def logical_axes(model_or_state: Any) -> Any:
    """The ``logical_axes`` metadata of every parameter (same structure as ``nnx.state``,
    each Variable holding a tuple of names)."""

    def one(v: nnx.Variable) -> Any:
        axes = v.get_metadata().get("logical_axes")
        if axes is None or len(axes) != v.ndim:
            raise ValueError(f"Parameter of shape {v.shape} has logical_axes {axes!r}.")
        return v.replace(tuple(axes))

    return jax.tree.map(one, _state(model_or_state), is_leaf=_is_var)


def param_specs(model_or_state: Any, rules: Sequence[tuple[str, MeshAxes]] = AXIS_RULES) -> Any:
    """A pytree of `PartitionSpec` with the structure of ``nnx.state(model, nnx.Param)``
    (each Variable's value replaced by its spec, as ``nnx.get_partition_spec`` does).

    Use with ``jax.tree.map(lambda s: NamedSharding(mesh, s), specs)`` to place or jit.
    """

    def one(v: nnx.Variable) -> Any:
        axes = v.get_metadata().get("logical_axes")
        if axes is None or len(axes) != v.ndim:
            raise ValueError(f"Parameter of shape {v.shape} has logical_axes {axes!r}.")
        return v.replace(logical_to_spec(axes, rules))

    return jax.tree.map(one, _state(model_or_state), is_leaf=_is_var)
