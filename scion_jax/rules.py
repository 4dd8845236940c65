"""Which norm (and LR multiplier) each parameter gets: ordered regex rules on its path.

A rule table is a sequence of ``(regex, role)`` pairs; the first regex that
``re.search``-es a parameter's path wins (big_vision style). A path is the
pytree keys joined by "/", e.g. ``"layers/0/attn/q/kernel"``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import jax

NORMS = ("l1_to_rms", "rms_to_rms", "rms_to_inf", "sign", "bias_rms", "none")
# Norms whose LMO treats the parameter as a matrix (or a batch of matrices).
MATRIX_NORMS = ("l1_to_rms", "rms_to_rms", "rms_to_inf", "sign")

Axes = int | tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Role:
    """How one parameter is normed and updated.

    Attributes:
      norm: one of ``NORMS``.
      lr_scale: multiplier on the learning rate for this parameter (its group's η / η).
      in_axes: axis or axes forming the matrix's input dimension (flattened, in order).
      out_axes: axis or axes forming the output dimension. All remaining axes are
        batch axes: the LMO is applied to each matrix independently (stacked or
        scanned layers ``[L, d_in, d_out]`` work with the defaults; a conv kernel
        ``[h, w, c_in, c_out]`` uses ``in_axes=(0, 1, 2)``).
    """

    norm: str
    lr_scale: float = 1.0
    in_axes: Axes = -2
    out_axes: Axes = -1

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"Unknown norm {self.norm!r}; valid norms: {', '.join(NORMS)}.")


Rules = Sequence[tuple[str, "str | Role"]]


def key_name(key: Any) -> str | None:
    """One pytree key as a path component; None for flax NNX's `.value` attribute."""
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return None if key.name == "value" else key.name
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_str(path: Sequence[Any]) -> str:
    return "/".join(n for n in map(key_name, path) if n is not None)


def _as_role(role: str | Role) -> Role:
    return role if isinstance(role, Role) else Role(role)


def compile_rules(rules: Rules) -> list[tuple[re.Pattern, Role]]:
    if isinstance(rules, (str, bytes)) or not all(
        isinstance(r, (tuple, list)) and len(r) == 2 for r in rules
    ):
        raise ValueError("rules must be a sequence of (regex, role) pairs.")
    return [(re.compile(pattern), _as_role(role)) for pattern, role in rules]


def match_role(path: str, compiled: list[tuple[re.Pattern, Role]]) -> Role:
    for pattern, role in compiled:
        if pattern.search(path):
            return role
    raise ValueError(
        f"Parameter {path!r} matches no rule; patterns tried: "
        f"{[p.pattern for p, _ in compiled]}. Add a rule (e.g. ('.*', 'none') to freeze the rest)."
    )


def _normalize(axes: Axes, ndim: int) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    return tuple(a % ndim for a in axes)


def check_shape(path: str, role: Role, shape: tuple[int, ...]) -> None:
    """Raises ValueError if `role` cannot be applied to a parameter of `shape`."""
    if role.norm in MATRIX_NORMS:
        ndim = len(shape)
        axes = [*_normalize(role.in_axes, max(ndim, 1)), *_normalize(role.out_axes, max(ndim, 1))]
        if ndim < 2 or len(set(axes)) != len(axes):
            raise ValueError(
                f"Parameter {path!r} of shape {shape} cannot take the matrix norm "
                f"{role.norm!r} (in_axes={role.in_axes}, out_axes={role.out_axes}); "
                "Vectors take 'bias_rms' or 'none'; set in_axes/out_axes for other layouts."
            )


def resolve_roles(tree: Any, rules: Rules) -> Any:
    """A pytree of `Role`s with the structure of `tree` (arrays or ShapeDtypeStructs)."""
    compiled = compile_rules(rules)

    def one(path, leaf):
        p = path_str(path)
        role = match_role(p, compiled)
        check_shape(p, role, tuple(leaf.shape))
        return role

    return jax.tree_util.tree_map_with_path(one, tree)


def matrix_view(role: Role, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(permutation, matrix shape) bringing a param to ``[*batch, d_in, d_out]``."""
    ndim = len(shape)
    ins, outs = _normalize(role.in_axes, ndim), _normalize(role.out_axes, ndim)
    batch = tuple(a for a in range(ndim) if a not in ins + outs)
    d_in = 1
    for a in ins:
        d_in *= shape[a]
    d_out = 1
    for a in outs:
        d_out *= shape[a]
    return batch + ins + outs, (*(shape[a] for a in batch), d_in, d_out)


def to_matrix(x: jax.Array, role: Role) -> jax.Array:
    """Reshapes a parameter to ``[*batch, d_in, d_out]`` (see `Role`)."""
    perm, mshape = matrix_view(role, x.shape)
    return x.transpose(perm).reshape(mshape)


def from_matrix(m: jax.Array, role: Role, shape: tuple[int, ...]) -> jax.Array:
    """Inverse of `to_matrix` for a parameter of `shape`."""
    perm, _ = matrix_view(role, shape)
    permuted_shape = tuple(shape[a] for a in perm)
    inverse = [0] * len(perm)
    for i, a in enumerate(perm):
        inverse[a] = i
    return m.reshape(permuted_shape).transpose(inverse)
