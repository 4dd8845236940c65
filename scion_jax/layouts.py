"""What each parameter of a model is, read from its library's conventions.

Every leaf becomes a `Leaf` of one kind, with the layout of its matrix axes:

  flax     matrix ``kernel [d_in, d_out]``, table ``embedding [V, d]``, conv ``kernel
           [*k, c_in, c_out]``, DenseGeneral ``kernel`` of ≥ 3 axes, ``bias``, ``scale``
  Haiku    matrix ``w [d_in, d_out]``, table ``embeddings [V, d]``, conv ``w`` HWIO, ``b``,
           ``scale``, ``offset``
  (a ``kernel`` / ``w`` of ≥ 3 axes is a conv when its path says "conv": flax ``Conv_0``,
  Haiku ``conv2_d``; else "general", e.g. a DenseGeneral kernel or an undeclared stack)
  Equinox  ``Linear.weight [d_out, d_in]`` (layout "out_in"), ``Embedding.weight [V, d]``,
           ``Conv.weight`` OIHW ("out_in"), ``bias``, norms' ``weight`` / ``bias``
  PyTorch-like names: ``weight`` (a table if its module is named ``*embed*``, wte, wpe)

The Equinox rows are read from the model's module types (`eqx.nn.Linear`, `Embedding`, `Conv`,
norms; `MultiheadAttention` and `MLP` are made of them), so pass the model itself (or
``eqx.filter(model, eqx.is_array)``, which keeps the types); such a weight with an extra
axis (modules stacked by ``eqx.filter_vmap``) needs ``stacked=``. A 2-D ``weight`` or an
unknown leaf name outside such a module says nothing about its layout: it needs a declared
``layout=`` ("in_out" or "out_in"), else it is reported as ambiguous.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any

import jax

from scion_jax.rules import LAYOUTS, path_str

TABLE_NAMES = ("embedding", "embeddings")  # flax, Haiku
MATRIX_NAMES = ("kernel", "w")  # flax, Haiku: [d_in, d_out], conv [*k, c_in, c_out]
VECTOR_NAMES = ("bias", "scale", "b", "offset")  # DenseGeneral biases [heads, dh] included
EMBED_MODULE = re.compile(r"embed|^wte$|^wpe$")  # a table's module in PyTorch-like naming
# An output layer's module (or raw array) name, whatever its leaf is called.
HEAD_NAMES = ("head", "lm_head", "unembed", "logits", "classifier", "output", "output_layer")


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One parameter: its path, shape (without a declared stack axis: `core`), kind
    ("table", "matrix", "conv", "vector", "scalar", or "general": a DenseGeneral / Einsum
    kernel of ≥ 3 axes), layout, and its module's name (the path component before the
    leaf; the leaf's own for a raw array)."""

    path: str
    shape: tuple[int, ...]
    core: tuple[int, ...]
    kind: str
    layout: str = "in_out"

    @property
    def name(self) -> str:
        return _module_and_name(self.path)[1]

    @property
    def module(self) -> str:
        return _module_and_name(self.path)[0]


def _module_and_name(path: str) -> tuple[str, str]:
    """A leaf's module (the path component before it; its own name for a raw array) and name."""
    parts = path.split("/")
    return parts[-2] if len(parts) > 1 else parts[-1], parts[-1]


def is_head(module: str, name: str) -> bool:
    """Whether a leaf's module (or the leaf itself) is named as an output layer."""
    return module in HEAD_NAMES or name in HEAD_NAMES


def _has_equinox(model: Any) -> bool:
    eqx = sys.modules.get("equinox")
    if eqx is None:  # never imported: `model` holds no Equinox module
        return False
    is_module = lambda x: isinstance(x, eqx.Module)  # noqa: E731
    return any(map(is_module, jax.tree.leaves(model, is_leaf=is_module)))


def _equinox_types(model: Any) -> dict[str, tuple[str, int | None]]:
    """``{path: (kind, rank)}`` of the leaves of the known Equinox modules in `model`; rank:
    a weight's number of axes (Linear, Embedding 2, Conv its spatial dims + 2), None for
    vectors."""
    nn = sys.modules["equinox"].nn
    known = {
        nn.Linear: {"weight": "matrix", "bias": "vector"},
        nn.Embedding: {"weight": "table"},
        nn.Conv: {"weight": "conv", "bias": "vector"},
        nn.LayerNorm: {"weight": "vector", "bias": "vector"},
        nn.RMSNorm: {"weight": "vector", "bias": "vector"},
        nn.GroupNorm: {"weight": "vector", "bias": "vector"},
    }
    kinds = {}
    modules = jax.tree_util.tree_flatten_with_path(
        model, is_leaf=lambda x: isinstance(x, tuple(known))
    )[0]
    for path, module in modules:
        for cls, fields in known.items():
            if isinstance(module, cls):
                prefix = path_str(path)
                for field, kind in fields.items():
                    rank = None if kind == "vector" else 2
                    if kind == "conv":
                        rank = module.num_spatial_dims + 2
                    kinds[f"{prefix}/{field}" if prefix else field] = kind, rank
    return kinds


def _params_of(model: Any) -> Any:
    """The parameter pytree of a model holding no Equinox module: a flax NNX module's
    `nnx.Param` state; else `model` itself."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        return nnx.state(model, nnx.Param)
    return model


def _by_name(module: str, name: str, path: str, core: tuple[int, ...], layout: str | None):
    """(kind, layout) from the leaf's name, or None when it does not say."""
    ndim = len(core)
    if ndim == 0:
        return "scalar", "in_out"
    if ndim == 1 or name in VECTOR_NAMES:
        return "vector", "in_out"
    if name in TABLE_NAMES and ndim == 2:
        return "table", "in_out"
    if name in MATRIX_NAMES:
        if ndim == 2:
            return "matrix", "in_out"
        if "conv" in path.lower():  # flax Conv_0, Haiku conv2_d
            return "conv", "in_out"
        return "general", "in_out"
    if layout is None:  # `weight` (PyTorch / Equinox without types) or an unknown name
        return None
    if ndim == 2:
        if EMBED_MODULE.search(module.lower()) and not is_head(module, name):
            return "table", "in_out"  # [V, d] in every library
        return "matrix", layout
    if "conv" in path.lower():
        return "conv", layout
    return None


def read_leaves(
    model: Any, *, layout: str | None = None, stacked: str | None = None
) -> tuple[Any, list[Leaf], list[tuple[str, tuple[int, ...]]]]:
    """(params, leaves, ambiguous ``(path, shape)``) of `model` (see the module doc).

    Args:
      model: a parameter pytree (flax Linen / NNX state, Haiku params, a PyTorch-like
        dict), a flax NNX module, or an Equinox module (its module types are read).
      layout: "in_out" or "out_in": the layout of matrices whose name does not say it.
      stacked: regex of paths whose leading axis stacks layers (not part of `core`).
    """
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}.")
    if _has_equinox(model):
        eqx = sys.modules["equinox"]
        typed, params = _equinox_types(model), eqx.filter(model, eqx.is_array)
    else:
        typed, params = {}, _params_of(model)
    stack_re = re.compile(stacked) if stacked else None
    leaves, ambiguous = [], []
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        path, shape = path_str(p), tuple(x.shape)
        core = shape[1:] if stack_re and stack_re.search(path) else shape
        if path in typed:
            kind, rank = typed[path]
            if kind == "vector":
                found = ("vector" if core else "scalar"), "in_out"
            elif len(core) == rank:
                found = kind, "in_out" if kind == "table" else "out_in"
            else:  # a stack (eqx.filter_vmap), undeclared
                found = None
        else:
            found = _by_name(*_module_and_name(path), path, core, layout)
        if found is None:
            ambiguous.append((path, shape))
            continue
        leaves.append(Leaf(path, shape, core, *found))
    return params, leaves, ambiguous
