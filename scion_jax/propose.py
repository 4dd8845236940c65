"""A first rule table for any flax (or pytree) model, and the "which parameter got what" view.

`propose_rules(params)` reads flax naming and shapes and returns an ordinary list of
``(regex, Role)`` pairs, one anchored regex per parameter path (layer indices become
``\\d+``), to read, edit and pass to `scion`:

  embedding tables ``.../embedding [V, d]``                    → "l1_to_rms" (input)
  the LM head (a 2-D kernel of a module named head / lm_head / unembed / logits /
    classifier / output / output_layer)                        → "rms_to_inf" (output)
  a table also used as the output (tied; no head kernel)       → `tied_embedding()`
  other 2-D kernels                                            → "rms_to_rms"
  DenseGeneral / Einsum kernels (query/key/value ``[d, heads, head_dim]``,
    attention out ``[heads, head_dim, d]``)                    → "rms_to_rms" with in/out axes
  conv kernels ``[*spatial, c_in, c_out]`` (a "conv" module)   → "conv_spectral"
  biases, norm scales (RMS over all axes but a stack axis)     → "bias_rms", no weight decay
  scalars                                                      → "none"
A parameter it cannot read unambiguously raises a ValueError naming it; pass a rule
for it in `known`. `describe(params, rules)` prints the result per parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax

from scion_jax.rules import (
    MATRIX_NORMS,
    Role,
    Rules,
    compile_rules,
    matrix_view,
    path_str,
    resolve_roles,
    tied_embedding,
)

HEAD_NAMES = ("head", "lm_head", "unembed", "logits", "classifier", "output", "output_layer")
QKV_NAMES = ("query", "key", "value", "q", "k", "v", "q_proj", "k_proj", "v_proj", "qkv")
ATTN_OUT_NAMES = ("out", "o", "o_proj", "out_proj", "attn_out")
NO_DECAY = {"weight_decay": 0.0}  # biases and norm scales: never pulled towards 0


def _pattern(path: str) -> str:
    """An anchored regex for `path`, any layer index matching (``layers/\\d+/...``)."""
    parts = [r"\d+" if part.isdigit() else re.escape(part) for part in path.split("/")]
    return "^" + "/".join(parts) + "$"


def _shift(axes: int | tuple[int, ...], by: int) -> int | tuple[int, ...]:
    return axes + by if isinstance(axes, int) else tuple(a + by for a in axes)


def _kernel_axes(path: str, shape: tuple[int, ...], d_model: int | None):
    """(in_axes, out_axes) of a DenseGeneral/Einsum kernel, or None if ambiguous."""
    module = path.split("/")[-2] if "/" in path else ""
    ndim = len(shape)
    if module in QKV_NAMES or (d_model is not None and shape[0] == d_model):
        return 0, tuple(range(1, ndim))
    if module in ATTN_OUT_NAMES or (d_model is not None and shape[-1] == d_model):
        return tuple(range(ndim - 1)), ndim - 1
    return None


def propose_rules(
    params: Any,
    *,
    stacked: str | None = None,
    tied: bool | None = None,
    known: Rules = (),
    input_lr_scale: float = 1.0,
    hidden_lr_scale: float = 1.0,
    output_lr_scale: float = 1.0,
) -> list[tuple[str, Role]]:
    """A rule table for `params` from flax parameter names and shapes (see the module doc).

    Args:
      params: the parameter pytree (arrays or ShapeDtypeStructs; flax NNX state works).
      stacked: regex of the paths whose leading axis stacks layers (``nnx.scan`` /
        ``nnx.vmap`` / linen ``scan`` over layers, e.g. ``"^layers/"``): that axis is
        declared ``batch_axes=0``.
      tied: the embedding table is also the output layer; None: so when there is one
        token embedding and no head kernel (a ValueError if an unnamed kernel maps to
        the vocabulary: then say which).
      known: rules put first, as given; the parameters they match are not proposed.
      input_lr_scale, hidden_lr_scale, output_lr_scale: the groups' LR multipliers.

    Returns:
      ``[(anchored regex, Role), ...]``, known rules first, covering every parameter.
    """
    known = list(known)
    known_compiled = compile_rules(known)
    flat = [
        (path_str(p), tuple(x.shape)) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    stack_re = re.compile(stacked) if stacked else None

    def core(path, shape):  # the shape without a declared stack axis
        return shape[1:] if stack_re and stack_re.search(path) else shape

    def is_known(path):
        return any(p.search(path) for p, _ in known_compiled)

    todo = [(p, s) for p, s in flat if not is_known(p)]
    tables = [(p, core(p, s)) for p, s in todo if p.endswith("embedding") and len(core(p, s)) == 2]
    token_tables = [t for t in tables if "pos" not in t[0].split("/")[-2 if "/" in t[0] else 0]]
    vocab = max((s[0] for _, s in token_tables), default=None)
    d_model = token_tables[0][1][1] if token_tables else None

    def is_head(path, shape):
        module = path.split("/")[-2] if "/" in path else path
        return path.endswith("kernel") and len(shape) == 2 and module in HEAD_NAMES

    heads = [p for p, s in todo if is_head(p, core(p, s))]
    to_vocab = [p for p, s in todo if len(core(p, s)) == 2 and core(p, s)[-1] == vocab]
    to_vocab = [p for p in to_vocab if not p.endswith("embedding") and p not in heads]
    if tied is None and len(token_tables) == 1 and not heads:
        if to_vocab:  # an unnamed head, or a hidden layer as wide as V: cannot tell
            raise ValueError(
                f"No kernel is named as an output layer ({', '.join(HEAD_NAMES)}) but "
                f"{to_vocab} map to the vocabulary size {vocab}: pass tied=True if the "
                f"table {token_tables[0][0]!r} is also the output layer, else tied=False "
                "and a rule for the head in known=, e.g. (r'^Dense_3/kernel$', 'rms_to_inf')."
            )
        tied = True
    tied_path = max(token_tables, key=lambda t: t[1][0])[0] if tied and token_tables else None

    proposed: list[tuple[str, Role]] = []
    ambiguous = []
    for path, shape in todo:
        c = core(path, shape)
        lead = len(shape) - len(c)
        batch = {"batch_axes": 0} if lead else {}
        name = path.split("/")[-1]
        if len(c) == 0:
            role = Role("none")
        elif len(c) == 1 or name in ("bias", "scale"):  # DenseGeneral biases: [heads, dh]
            axes = {"out_axes": tuple(range(lead, len(shape)))} if len(c) > 1 else {}
            role = Role("bias_rms", hidden_lr_scale, **axes, **NO_DECAY)
        elif path == tied_path:
            role = tied_embedding(output_lr_scale, **batch)
        elif name == "embedding" and len(c) == 2:
            role = Role("l1_to_rms", input_lr_scale, **batch)
        elif is_head(path, c):
            role = Role("rms_to_inf", output_lr_scale, **batch)
        elif len(c) == 2:
            role = Role("rms_to_rms", hidden_lr_scale, **batch)
        elif "conv" in path.lower():
            role = Role("conv_spectral", hidden_lr_scale, **batch)
        else:
            axes = _kernel_axes(path, c, d_model)
            if axes is None:
                ambiguous.append((path, shape))
                continue
            ins, outs = _shift(axes[0], lead), _shift(axes[1], lead)
            role = Role("rms_to_rms", hidden_lr_scale, in_axes=ins, out_axes=outs)
        proposed.append((path, role))
    if ambiguous:
        raise ValueError(
            "Cannot tell the matrix view of "
            + ", ".join(f"{p!r} {s}" for p, s in ambiguous)
            + ": pass a rule for each in known=, e.g. (r'^...$', Role('rms_to_rms', "
            "in_axes=0, out_axes=(1, 2))) for one matrix over several axes, or "
            "Role('rms_to_rms', batch_axes=0) for a stack (or stacked= its path regex)."
        )
    return known + _merge(proposed)


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


def describe_rows(
    params: Any, rules: Rules, *, radius: float = 1.0, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Per parameter: path, shape, norm, matrix view, lr_scale, radius, weight decay, rule.

    `radius` / `weight_decay`: the values passed to `scion`, which a role may override.
    """
    roles = resolve_roles(params, rules)  # raises on unmatched paths / bad shapes
    compiled = compile_rules(rules)
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    rows = []
    for (path, x), role in zip(flat, jax.tree.structure(params).flatten_up_to(roles), strict=True):
        p, shape = path_str(path), tuple(x.shape)
        if role.norm in MATRIX_NORMS:
            _, mshape = matrix_view(role, shape)
            n_batch = 1
            for b in mshape[:-2]:
                n_batch *= b
            view = f"{n_batch} × {mshape[-2]} × {mshape[-1]}"
        else:
            view = "vector" if role.norm == "bias_rms" else "-"
        rule = next(pat.pattern for pat, r in compiled if pat.search(p))
        frozen = role.norm == "none"
        rows.append(
            {
                "path": p,
                "shape": shape,
                "norm": role.norm,
                "matrix": view,
                "lr_scale": 0.0 if frozen else role.lr_scale,
                "radius": radius if role.radius is None else role.radius,
                "weight_decay": weight_decay if role.weight_decay is None else role.weight_decay,
                "rule": rule,
            }
        )
    return rows


def describe(
    params: Any,
    rules: Rules,
    *,
    radius: float = 1.0,
    weight_decay: float = 0.0,
    print_fn: Callable[[str], Any] = print,
) -> None:
    """Prints the "which parameter got what" table of `describe_rows` (matrix view:
    batch × d_in × d_out)."""
    rows = describe_rows(params, rules, radius=radius, weight_decay=weight_decay)
    cols = ("path", "shape", "norm", "matrix", "lr_scale", "radius", "weight_decay", "rule")
    cells = [[_fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    print_fn("\n".join(lines))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
