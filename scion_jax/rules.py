"""Which norm (and LR multiplier) each parameter gets: ordered regex rules on its path.

A rule table is a sequence of ``(regex, role)`` pairs; the first regex that
``re.search``-es a parameter's path wins (big_vision style). A path is the
pytree keys joined by "/", e.g. ``"layers/0/attn/q/kernel"``.

A matrix norm reads a parameter as ``[*batch, d_in, d_out]`` (flax and Haiku's layout).
A PyTorch-layout matrix (Equinox ``Linear.weight`` ``[d_out, d_in]``, conv ``[c_out, c_in,
*k]``) is declared with ``Role(norm, layout="out_in")``. Nothing is guessed for
parameters of three or more axes: their extra axes must be declared, as separate
matrices stacked along them (``batch_axes``: scanned layers, experts) or as part of one
matrix (``in_axes`` / ``out_axes``: a DenseGeneral kernel ``[d, heads, head_dim]``).
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Sequence
from typing import Any

import jax

NORMS = ("l1_to_rms", "rms_to_rms", "rms_to_inf", "sign", "conv_spectral", "bias_rms", "none")
# Norms whose LMO treats the parameter as a matrix (or a batch of matrices).
MATRIX_NORMS = ("l1_to_rms", "rms_to_rms", "rms_to_inf", "sign", "conv_spectral")
# Norms whose LMO orthogonalizes the matrix (Newton–Schulz), differing only in scale.
SPECTRAL_NORMS = ("rms_to_rms", "conv_spectral")
# Matrix layouts: flax / Haiku ``[d_in, d_out]`` (conv ``[*k, c_in, c_out]``), and
# PyTorch / Equinox ``[d_out, d_in]`` (conv ``[c_out, c_in, *k]``).
LAYOUTS = ("in_out", "out_in")

Axes = int | tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Role:
    """How one parameter is normed and updated.

    Attributes:
      norm: one of ``NORMS``. "conv_spectral" is the reference Scion's ``SpectralConv``
        (Disco's conv_spectral) for a conv kernel ``[*spatial, c_in, c_out]``: the same
        orthogonalized ``[k²·c_in, c_out]`` matrix as "rms_to_rms" with
        ``in_axes=(0, 1, 2)`` (the matrix view), scaled by √(c_out/c_in)/k² instead of
        √(c_out/(k²·c_in)), i.e. k× smaller.
      lr_scale: multiplier on the learning rate for this parameter (its group's η / η);
        it scales the whole step, weight decay included.
      in_axes: axis or axes forming the matrix's input dimension (flattened, in order);
        None: the second-to-last axis ("conv_spectral": every axis but `out_axes` and
        `batch_axes`, the last being c_in).
      out_axes: axis or axes forming the output dimension; None: the last axis.
      batch_axes: axes along which separate matrices are stacked (scanned layers
        ``[L, d_in, d_out]``: ``batch_axes=0``); the LMO is applied to each matrix.
        A matrix norm on a parameter of ndim ≥ 3 needs its extra axes declared here,
        or explicit `in_axes` / `out_axes` (then every other axis is a batch axis).
      radius: ρ for this parameter (overrides `scion(radius=...)`): its LMO direction
        has norm ρ; e.g. the reference Scion's per-group ``scale``.
      weight_decay: λ for this parameter (overrides `scion(weight_decay=...)`); 0.0
        masks decay off (norm scales, biases).
      layout: "in_out" (flax, Haiku: ``[*batch, d_in, d_out]``, conv ``[*k, c_in, c_out]``)
        or "out_in" (PyTorch, Equinox: ``[*batch, d_out, d_in]``, conv ``[*batch, c_out,
        c_in, *k]``): which default axes are d_in and d_out (give either a layout or
        explicit `in_axes` / `out_axes`). A ``[V, d]`` embedding table is "in_out" in
        every library (V is its input); its tied head view ``[d, V]`` is "out_in".
    """

    norm: str
    lr_scale: float = 1.0
    in_axes: Axes | None = None
    out_axes: Axes | None = None
    batch_axes: Axes | None = None
    radius: float | None = None
    weight_decay: float | None = None
    layout: str = "in_out"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"Unknown norm {self.norm!r}; valid norms: {', '.join(NORMS)}.")
        if self.layout not in LAYOUTS:
            raise ValueError(f"Unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}.")
        if self.layout == "out_in" and (self.in_axes is not None or self.out_axes is not None):
            raise ValueError(
                f"Role({self.norm!r}, layout='out_in') with in_axes={self.in_axes}, "
                f"out_axes={self.out_axes}: give either the layout or the axes."
            )


Rules = Sequence[tuple[str, "str | Role"]]


def tied_embedding(d_model: int, lr_scale: float = 1.0, **kwargs: Any) -> Role:
    """The role of a table ``[V, d]`` used as both input embedding and output layer
    (``logits = h @ tableᵀ``: nanodo, Gemma, flax ``Embed.attend``), and of the tables
    added to it (a learned position embedding: the same scale and step as its tokens).

    Its norm is the output layer's, RMS→∞, on the table read as the head's weight in
    PyTorch layout (``layout="out_in"``: d_out = V, d_in = d), so `layer_norms` reports
    the paper's output norm ‖W_out‖_{RMS→∞} for it as "rms_to_inf/<path>"; its radius is
    √d (it overrides `scion(radius=...)` for the table; pass radius= to change it), the
    geometric mean of the two uses' scales: the output norm wants token rows of L2
    1/√d (logits O(1/√d)), the input norm rows of L2 √d (embedded tokens of RMS 1). So
      - `init_params`: rows of L2 norm 1 (RMS 1/√d, as nanodo's and flax's default
        initializers give): logits O(1), the loss at init ≈ ln V + ½;
      - update: each token's row moves by L2 η (the input norm's 1→RMS step gives √d·η,
        the output norm's η/√d; the same per-token direction).
    At the output norm's own scale the embedded tokens start at RMS 1/d against blocks
    writing O(1) to the residual stream, and a model whose first pre-norm sees tokens plus
    positions learns little beyond unigram statistics (PORTING.md, "Tied embeddings").

    Args:
      d_model: the table's width d (its last axis), an int ≥ 1.
      lr_scale: the table's learning-rate multiplier.
      **kwargs: other `Role` fields (radius, weight_decay, batch_axes).
    """
    if not isinstance(d_model, numbers.Integral) or d_model < 1:
        raise ValueError(
            f"tied_embedding(d_model={d_model!r}): d_model is the table's width d (its last "
            "axis), an int ≥ 1; the learning-rate multiplier is the second argument, "
            "tied_embedding(d, lr_scale)."
        )
    kwargs.setdefault("radius", float(d_model) ** 0.5)
    return Role("rms_to_inf", lr_scale, layout="out_in", **kwargs)


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
    if callable(rules):
        raise ValueError(
            f"rules is a function ({getattr(rules, '__name__', rules)!r}), not a table: "
            "scion takes a sequence of (regex, role) pairs matched on each parameter's "
            "'/'-joined path. For an optax-style label function, write its labels as a "
            "table (one (regex, role) pair per label) or let scion_jax.propose_rules(params) "
            "write one."
        )
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


def _normalize(axes: Axes | None, ndim: int) -> tuple[int, ...]:
    if axes is None:
        return ()
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    return tuple(a % ndim for a in axes)


def _axes_of(role: Role, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(declared batch axes, in axes, out axes) of `role` on an `ndim`-axis parameter."""
    n = max(ndim, 1)
    batch = _normalize(role.batch_axes, n)
    if role.layout == "out_in":
        if role.norm == "conv_spectral":  # [*batch, c_out, c_in, *k]: in axes (*k, c_in)
            rest = [a for a in range(ndim) if a not in batch]
            return batch, (*rest[2:], *rest[1:2]), tuple(rest[:1])
        return batch, _normalize(-1, n), _normalize(-2, n)
    outs = _normalize(-1 if role.out_axes is None else role.out_axes, n)
    if role.in_axes is not None:
        ins = _normalize(role.in_axes, n)
    elif role.norm == "conv_spectral":  # a conv kernel [*spatial, c_in, c_out]
        ins = tuple(a for a in range(ndim) if a not in outs + batch)
    else:
        ins = _normalize(-2, n)
    return batch, ins, outs


def _out_of_range(axes: Axes | None, ndim: int) -> list[int]:
    if axes is None:
        return []
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    return [a for a in axes if not -ndim <= a < ndim]


def check_shape(path: str, role: Role, shape: tuple[int, ...]) -> None:
    """Raises ValueError if `role` cannot be applied to a parameter of `shape`."""
    if role.norm not in MATRIX_NORMS:
        return
    ndim, norm = len(shape), role.norm
    where = f"Parameter {path!r} of shape {shape} (norm {norm!r})"
    if ndim < 2:
        raise ValueError(
            f"{where} is not a matrix: the matrix norm {norm!r} needs ≥ 2 axes. "
            "Vectors take 'bias_rms' or 'none'."
        )
    bad = {
        name: _out_of_range(getattr(role, name), ndim)
        for name in ("in_axes", "out_axes", "batch_axes")
    }
    bad = {k: v for k, v in bad.items() if v}
    if bad:
        raise ValueError(f"{where}: axes {bad} are out of range for {ndim} axes.")
    batch, ins, outs = _axes_of(role, ndim)
    for (a_name, a), (b_name, b) in (
        (("in_axes", ins), ("out_axes", outs)),
        (("in_axes", ins), ("batch_axes", batch)),
        (("out_axes", outs), ("batch_axes", batch)),
    ):
        common = sorted(set(a) & set(b))
        if common or len(set(a)) != len(a):
            raise ValueError(
                f"{where}: {a_name} {a} and {b_name} {b} overlap (axis {common or a}); "
                "each axis must be in exactly one of in_axes, out_axes, batch_axes."
            )
    if not ins or not outs:
        raise ValueError(f"{where}: in_axes {ins} and out_axes {outs} must both be non-empty.")
    undeclared = tuple(a for a in range(ndim) if a not in batch + ins + outs)
    if undeclared and role.in_axes is None and role.out_axes is None:
        raise ValueError(
            f"{where}: axes {undeclared} are neither matrix nor declared batch axes; "
            f"the matrix view would be axes {ins} × {outs} with {undeclared} silently "
            "taken as a stack. Declare them, either\n"
            f"  - as a stack of separate matrices (scanned layers, experts): "
            f"Role({norm!r}, batch_axes={undeclared if len(undeclared) > 1 else undeclared[0]}"
            f"{', layout=' + repr(role.layout) if role.layout != 'in_out' else ''}), or\n"
            f"  - as part of one matrix (a DenseGeneral/Einsum kernel such as "
            f"[d_model, heads, head_dim]): give in_axes/out_axes, e.g. "
            f"Role({norm!r}, in_axes=0, out_axes={tuple(range(1, ndim))}).\n"
            "scion_jax.propose_rules(model or params) proposes a table from the model's "
            "module types or its flax / Haiku / Equinox names and shapes."
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


def matrix_axes(
    role: Role, shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(batch, in, out) axes of `role`'s matrix view; undeclared axes count as batch
    (`check_shape` has already refused them where they would be a silent guess)."""
    ndim = len(shape)
    declared, ins, outs = _axes_of(role, ndim)
    batch = tuple(a for a in range(ndim) if a in declared or a not in ins + outs)
    return batch, ins, outs


def matrix_view(role: Role, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(permutation, matrix shape) bringing a param to ``[*batch, d_in, d_out]``."""
    batch, ins, outs = matrix_axes(role, shape)
    d_in = 1
    for a in ins:
        d_in *= shape[a]
    d_out = 1
    for a in outs:
        d_out *= shape[a]
    return batch + ins + outs, (*(shape[a] for a in batch), d_in, d_out)


def conv_kernel_area(role: Role, shape: tuple[int, ...]) -> int:
    """k² of a "conv_spectral" kernel: the product of its in axes but the last (c_in)."""
    _, ins, _ = matrix_axes(role, shape)
    area = 1
    for a in ins[:-1]:
        area *= shape[a]
    return area


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
