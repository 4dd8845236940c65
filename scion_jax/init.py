"""The paper's initialization (PAPER.md §4): each parameter at norm ρ in its role's norm,
ρ its role's radius, else scion's radius= (1 by default): the norm its steps are measured
against (Scion's reference initializes, then scales by the radius).

The same norm defines how a layer is initialized and how it is updated (Disco's
``Norm.init`` / ``Norm.lmo`` pairing):
  rms_to_rms   semi-orthogonal × √(d_out/d_in)           (RMS→RMS norm 1)
  conv_spectral semi-orthogonal [k²·c_in, c_out] × √(c_out/c_in)/k² (reference SpectralConv)
  l1_to_rms    Gaussian rows (per input) rescaled to L2 √d_out
  rms_to_inf   Gaussian columns (per output) rescaled to L2 1/√d_in
  sign         random signs / d_in
  bias_rms     left as given (flax initializes biases to zeros, as Scion and Disco do)
  none         left as given (e.g. frozen or learnable RMSNorm scales)
Residual-writing matrices (attention output, MLP down) are further × 1/√(2·n_layers).

A tied embedding (one table as input and output) takes `tied_embedding(d)`: the head view
of the table at RMS→∞ norm √d, i.e. rows of L2 norm 1 (see its docstring).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scion_jax import lmo as lmo_lib
from scion_jax.rules import (
    SPECTRAL_NORMS,
    Role,
    Rules,
    from_matrix,
    matrix_view,
    path_str,
    resolve_roles,
)

# Paths of the residual-writing matrices in `scion_jax.model`.
RESIDUAL_RULES = (r"attn/o(/|$)", r"mlp/w2(/|$)")


def _semi_orthogonal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Orthonormal columns or rows (whichever side is shorter) for each matrix."""
    *batch, d_in, d_out = shape
    n = int(np.prod(batch)) if batch else 1
    init = jax.nn.initializers.orthogonal(column_axis=-1)
    keys = jax.random.split(key, n)
    mats = jax.vmap(lambda k: init(k, (d_in, d_out), jnp.float32))(keys)
    return mats.reshape(shape)


def init_matrix(
    key: jax.Array, role: Role, mshape: tuple[int, ...], shape: tuple[int, ...] | None = None
) -> jax.Array:
    """A ``[*batch, d_in, d_out]`` fp32 matrix of norm exactly 1 in `role.norm`
    (`shape`: the parameter's own shape, needed by "conv_spectral")."""
    if role.norm in SPECTRAL_NORMS:
        scale = lmo_lib.spectral_scale(role, shape or mshape)
        return _semi_orthogonal(key, mshape) * scale
    if role.norm == "sign":
        return jax.random.rademacher(key, mshape, jnp.float32) / mshape[-2]
    gauss = jax.random.normal(key, mshape, jnp.float32)
    return lmo_lib.ROW_LMOS[role.norm](gauss)  # l1_to_rms / rms_to_inf: unit rows / columns


def init_params(
    key: jax.Array,
    params: Any,
    rules: Rules,
    n_layers: int | None = None,
    residual_rules: Sequence[str] = RESIDUAL_RULES,
    *,
    radius: float = 1.0,
) -> Any:
    """Re-initializes `params` (any pytree; flax NNX state works) per the paper.

    Args:
      key: PRNG key.
      params: pytree of arrays (only shapes and dtypes are used, except "none" and
        "bias_rms" leaves, which are returned unchanged).
      rules: the optimizer's rule table.
      n_layers: number of transformer blocks; when given, parameters whose path
        matches a `residual_rules` regex are scaled by 1/√(2·n_layers). A ValueError
        names the regexes if none of them matches a matrix parameter.
      residual_rules: regexes of the residual-writing matrices (defaults: this
        project's model; for another model pass its own, e.g.
        ``(r"attn/out/kernel$", r"mlp/down/kernel$")``).
      radius: the value passed to `scion`, which a role may override: each matrix starts
        at norm ρ, its role's radius, else this.

    Returns:
      A pytree like `params`.
    """
    roles = resolve_roles(params, rules)
    residual = [re.compile(r) for r in residual_rules]
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    role_leaves = treedef.flatten_up_to(roles)
    keys = jax.random.split(key, len(flat))
    out, scaled = [], 0
    for k, (path, w), role in zip(keys, flat, role_leaves, strict=True):
        if role.norm in ("none", "bias_rms"):
            out.append(w)
            continue
        _, mshape = matrix_view(role, tuple(w.shape))
        m = init_matrix(k, role, mshape, tuple(w.shape))
        m = m * (role.radius if role.radius is not None else radius)  # at norm ρ
        if n_layers is not None and any(r.search(path_str(path)) for r in residual):
            m = m / np.sqrt(2 * n_layers)
            scaled += 1
        out.append(from_matrix(m, role, tuple(w.shape)).astype(w.dtype))
    if n_layers is not None and not scaled:
        raise ValueError(
            f"init_params(n_layers={n_layers}): no matrix parameter matches the residual "
            f"rules {list(residual_rules)}, so nothing would be scaled by 1/√(2·n_layers). "
            "Pass residual_rules= the regexes of your model's residual-writing matrices "
            "(attention output, MLP down projection), or n_layers=None for no scaling."
        )
    return treedef.unflatten(out)
