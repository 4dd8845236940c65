"""A first rule table for any flax, Haiku or Equinox model, and the "which parameter got
what" view.

`propose_rules(model)` reads what each parameter is from the model's library conventions
(`scion_jax.layouts`: flax ``kernel [in, out]``, Haiku ``w [in, out]``, Equinox
``Linear.weight [out, in]`` from its module types) and returns an ordinary list of
``(regex, Role)`` pairs, one anchored regex per parameter path (layer indices, also Linen's
``blocks_0``, become ``\\d+``), to read, edit and pass to `scion`:

  embedding tables ``[V, d]``                                  → "l1_to_rms" (input)
  the output layer (a matrix whose module, or the leaf itself, is named head / lm_head /
    unembed / logits / classifier / output / output_layer)     → "rms_to_inf" (output)
  a table also used as the output (tied; no head)             → `tied_embedding(d)`, and the
    model's other tables (positions, segments: added to it)   → `tied_embedding(d)` too
  other matrices                                               → "rms_to_rms"
  DenseGeneral / Einsum kernels (query/key/value ``[d, heads, head_dim]``,
    attention out ``[heads, head_dim, d]``)                    → "rms_to_rms" with in/out axes
  conv kernels (flax, Haiku ``[*k, c_in, c_out]``; Equinox ``[c_out, c_in, *k]``) → "conv_spectral"
  biases, norm scales (RMS over all axes but a stack axis)     → "bias_rms", no weight decay
  scalars                                                      → "none"
PyTorch-layout matrices get ``layout="out_in"``. A parameter it cannot read unambiguously
raises a ValueError naming it, its shape and the ways to say what it is; so does a model in
which no parameter is the output layer. `describe(params, rules)` prints the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import jax

from scion_jax.layouts import HEAD_NAMES, Leaf, is_head, read_leaves
from scion_jax.rules import (
    MATRIX_NORMS,
    Role,
    Rules,
    compile_rules,
    matrix_axes,
    path_str,
    resolve_roles,
    tied_embedding,
)

QKV_NAMES = ("query", "key", "value", "q", "k", "v", "q_proj", "k_proj", "v_proj", "qkv")
ATTN_OUT_NAMES = ("out", "o", "o_proj", "out_proj", "attn_out")
POSITION = re.compile(r"pos|wpe")  # a table of positions, not tokens
OUTPUT_NORMS = ("rms_to_inf", "sign")
NO_DECAY = {"weight_decay": 0.0}  # biases and norm scales: never pulled towards 0


def _pattern(path: str) -> str:
    """An anchored regex for `path`, any layer index matching (``layers/\\d+/...``,
    Linen's ``blocks_\\d+/...``)."""
    parts = []
    for part in path.split("/"):
        if part.isdigit():
            parts.append(r"\d+")
        elif m := re.fullmatch(r"(.*_)(\d+)", part):
            parts.append(re.escape(m.group(1)) + r"\d+")
        else:
            parts.append(re.escape(part))
    return "^" + "/".join(parts) + "$"


def _shift(axes: int | tuple[int, ...], by: int) -> int | tuple[int, ...]:
    return axes + by if isinstance(axes, int) else tuple(a + by for a in axes)


def _kernel_axes(leaf: Leaf, d_model: int | None):
    """(in_axes, out_axes) of a DenseGeneral/Einsum kernel whose name and shape agree
    (query/key/value ``[d, ...]``, attention out ``[..., d]``, d the model width where a
    token table gives it), or None: an undeclared stack ``[L, ...]`` or an unknown name."""
    shape, ndim = leaf.core, len(leaf.core)
    if leaf.module in QKV_NAMES and d_model in (None, shape[0]):
        return 0, tuple(range(1, ndim))
    if leaf.module in ATTN_OUT_NAMES and d_model in (None, shape[-1]):
        return tuple(range(ndim - 1)), ndim - 1
    return None


def _is_head(leaf: Leaf) -> bool:
    return leaf.kind == "matrix" and is_head(leaf.module, leaf.name)


def _d_out(leaf: Leaf) -> int:
    return leaf.core[-1] if leaf.layout == "in_out" else leaf.core[-2]


def _ambiguous_error(items: list[tuple[str, tuple[int, ...]]]) -> ValueError:
    listed = ", ".join(f"{p!r} {s}" for p, s in items)
    return ValueError(
        f"Cannot tell what these parameters are: {listed}. A 2-D `weight` (or an unknown "
        "leaf name) is [d_out, d_in] in PyTorch and Equinox but [d_in, d_out] in flax and "
        "Haiku; a kernel of ≥ 3 axes may be one matrix or a stack. Say which:\n"
        "  - pass the model itself (an Equinox module: its eqx.nn.Linear / Embedding / Conv "
        "types give the layout; a flax NNX module or Haiku params: their names do),\n"
        "  - propose_rules(..., layout='out_in') for PyTorch-layout matrices ([d_out, d_in], "
        "conv [c_out, c_in, *k]) or layout='in_out' for [d_in, d_out],\n"
        "  - stacked= the path regex of layers stacked along their first axis,\n"
        "  - or a rule for each in known=, e.g. (r'^lm_head/weight$', "
        "Role('rms_to_inf', layout='out_in')), (r'^...$', Role('rms_to_rms', in_axes=0, "
        "out_axes=(1, 2))) for one matrix over several axes, or Role('rms_to_rms', "
        "batch_axes=0) for a stack."
    )


def propose_rules(
    model: Any,
    *,
    layout: str | None = None,
    stacked: str | None = None,
    tied: bool | None = None,
    known: Rules = (),
    input_lr_scale: float = 1.0,
    hidden_lr_scale: float = 1.0,
    output_lr_scale: float = 1.0,
) -> list[tuple[str, Role]]:
    """A rule table for `model`'s parameters (see the module doc).

    Args:
      model: the parameter pytree (arrays or ShapeDtypeStructs: flax Linen params, flax
        NNX state, Haiku params), a flax NNX module, or an Equinox module (or its
        ``eqx.filter(model, eqx.is_array)``): the table's paths are those of this pytree.
      layout: "out_in" (PyTorch-like ``weight [d_out, d_in]``) or "in_out": how to read
        matrices whose leaf name and module type do not say (see `scion_jax.layouts`).
      stacked: regex of the paths whose leading axis stacks layers (``nnx.scan`` /
        ``nnx.vmap`` / linen ``scan`` / ``eqx.filter_vmap`` over layers, e.g.
        ``"^layers/"``): that axis is declared ``batch_axes=0``.
      tied: the embedding table is also the output layer; None: so when there is one
        token embedding and no head (a ValueError if an unnamed matrix maps to the
        vocabulary: then say which).
      known: rules put first, as given; the parameters they match are not proposed.
      input_lr_scale, hidden_lr_scale, output_lr_scale: the groups' LR multipliers.

    Returns:
      ``[(anchored regex, Role), ...]``, known rules first, covering every parameter.
    """
    known = list(known)
    known_compiled = compile_rules(known)
    params, leaves, ambiguous = read_leaves(model, layout=layout, stacked=stacked)

    def is_known(path):
        return any(p.search(path) for p, _ in known_compiled)

    todo = [leaf for leaf in leaves if not is_known(leaf.path)]
    tables = [t for t in todo if t.kind == "table"]
    token_tables = [t for t in tables if not POSITION.search(t.module.lower())]
    vocab = max((t.core[0] for t in token_tables), default=None)
    d_model = token_tables[0].core[1] if token_tables else None
    heads = [leaf for leaf in todo if _is_head(leaf)]
    to_vocab = [
        leaf.path
        for leaf in todo
        if leaf.kind == "matrix" and not _is_head(leaf) and _d_out(leaf) == vocab
    ]
    if tied is None and len(token_tables) == 1 and not heads:
        if to_vocab:  # an unnamed head, or a hidden layer as wide as V: cannot tell
            raise ValueError(
                f"No matrix is named as an output layer ({', '.join(HEAD_NAMES)}) but "
                f"{to_vocab} map to the vocabulary size {vocab}: pass tied=True if the "
                f"table {token_tables[0].path!r} is also the output layer, else tied=False "
                "and a rule for the head in known=, e.g. (r'^Dense_3/kernel$', 'rms_to_inf')."
            )
        tied = True
    tie = bool(tied and token_tables)

    proposed: list[tuple[str, Role]] = []
    ambiguous = [(p, s) for p, s in ambiguous if not is_known(p)]
    for leaf in todo:
        lead = len(leaf.shape) - len(leaf.core)
        batch = {"batch_axes": 0} if lead else {}
        out_in = {"layout": "out_in"} if leaf.layout == "out_in" else {}
        if leaf.kind == "scalar":
            role = Role("none")
        elif leaf.kind == "vector":  # DenseGeneral biases [heads, dh]: RMS over both
            axes = {"out_axes": tuple(range(lead, len(leaf.shape)))} if len(leaf.core) > 1 else {}
            role = Role("bias_rms", hidden_lr_scale, **axes, **NO_DECAY)
        elif leaf.kind == "table" and tie:  # the tied table, and the tables added to it
            role = tied_embedding(leaf.core[1], output_lr_scale, **batch)
        elif leaf.kind == "table":
            role = Role("l1_to_rms", input_lr_scale, **batch)
        elif _is_head(leaf):
            role = Role("rms_to_inf", output_lr_scale, **batch, **out_in)
        elif leaf.kind == "matrix":
            role = Role("rms_to_rms", hidden_lr_scale, **batch, **out_in)
        elif leaf.kind == "conv":
            role = Role("conv_spectral", hidden_lr_scale, **batch, **out_in)
        else:  # "general": a DenseGeneral / Einsum kernel
            axes = _kernel_axes(leaf, d_model)
            if axes is None:
                ambiguous.append((leaf.path, leaf.shape))
                continue
            ins, outs = _shift(axes[0], lead), _shift(axes[1], lead)
            role = Role("rms_to_rms", hidden_lr_scale, in_axes=ins, out_axes=outs)
        proposed.append((leaf.path, role))
    if ambiguous:
        raise _ambiguous_error(ambiguous)
    rules = known + _merge(proposed)
    roles = jax.tree.leaves(resolve_roles(params, rules), is_leaf=lambda r: isinstance(r, Role))
    if not any(r.norm in OUTPUT_NORMS for r in roles):
        raise ValueError(
            "No parameter is proposed an output norm (rms_to_inf or sign): no matrix is named as "
            f"an output layer ({', '.join(HEAD_NAMES)})"
            + (" and tied=False" if tied is False else " and no embedding table is tied")
            + ". Scion's output norm is the one that sets the logits' scale: name the "
            "head module one of those, pass tied=True if an embedding table is the output "
            "layer, or give the head's rule in known=, e.g. (r'^Dense_3/kernel$', "
            "'rms_to_inf')."
        )
    return rules


def _merge(proposed: list[tuple[str, Role]]) -> list[tuple[str, Role]]:
    """One rule per `_pattern` (paths differing only in layer index); exact paths where
    such paths would need different roles."""
    by_pattern: dict[str, list[tuple[str, Role]]] = {}
    for path, role in proposed:
        by_pattern.setdefault(_pattern(path), []).append((path, role))
    out = []
    for pattern, members in by_pattern.items():
        roles = {role for _, role in members}
        if len(roles) == 1:
            out.append((pattern, members[0][1]))
        else:
            out.extend(("^" + re.escape(path) + "$", role) for path, role in members)
    return out


def _axes_text(axes: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """``"1 (64)"``: matrix axes and their sizes."""
    return ",".join(str(a) for a in axes) + f" ({'·'.join(str(shape[a]) for a in axes)})"


def describe_rows(
    params: Any, rules: Rules, *, radius: float = 1.0, weight_decay: float | None = None
) -> list[dict[str, Any]]:
    """Per parameter: path, shape, norm, matrix view (batch × d_in × d_out, and which axes
    are d_in and d_out), lr_scale, radius, weight decay, rule.

    `radius` / `weight_decay`: the values passed to `scion`, which a role may override;
    `weight_decay` None: "scion's" for the parameters whose role does not set its own.
    """
    roles = resolve_roles(params, rules)  # raises on unmatched paths / bad shapes
    compiled = compile_rules(rules)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    rows = []
    for (path, x), role in zip(flat, jax.tree.structure(params).flatten_up_to(roles), strict=True):
        p, shape = path_str(path), tuple(x.shape)
        d_in = d_out = "-"
        if role.norm in MATRIX_NORMS:
            axes = matrix_axes(role, shape)  # (batch, in, out)
            d_in, d_out = _axes_text(axes[1], shape), _axes_text(axes[2], shape)
            view = " × ".join(str(math.prod(shape[a] for a in ax)) for ax in axes)
        else:
            view = "vector" if role.norm == "bias_rms" else "-"
        rule = next(pat.pattern for pat, r in compiled if pat.search(p))
        frozen = role.norm == "none"
        decay = role.weight_decay if role.weight_decay is not None else weight_decay
        rows.append(
            {
                "path": p,
                "shape": shape,
                "norm": role.norm,
                "matrix": view,
                "d_in axes": d_in,
                "d_out axes": d_out,
                "lr_scale": 0.0 if frozen else role.lr_scale,
                "radius": radius if role.radius is None else role.radius,
                "weight_decay": "scion's" if decay is None else decay,
                "rule": rule,
            }
        )
    return rows


def describe(
    params: Any,
    rules: Rules,
    *,
    radius: float = 1.0,
    weight_decay: float | None = None,
    print_fn: Callable[[str], Any] = print,
) -> None:
    """Prints the "which parameter got what" table of `describe_rows` (matrix view:
    batch × d_in × d_out; the d_in and d_out axes of the parameter and their sizes)."""
    rows = describe_rows(params, rules, radius=radius, weight_decay=weight_decay)
    cols = tuple(rows[0]) if rows else ("path",)
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    print_fn("\n".join(lines))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
