"""Operator norms of weights and updates (PAPER.md §1), and per-layer logging.

A `role`'s axes or layout give each parameter's matrix view ``[*batch, d_in, d_out]`` (flax /
Haiku ``[d_in, d_out]`` as is; ``layout="out_in"``: PyTorch / Equinox ``[d_out, d_in]``), and
each norm is returned per matrix (shape ``batch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from scion_jax import partitioned
from scion_jax.rules import Role, Rules, conv_kernel_area, path_str, resolve_roles, to_matrix

VALID = (
    "l1_to_rms",
    "rms_to_rms",
    "rms_to_inf",
    "sign",
    "conv_spectral",
    "bias_rms",
    "supremum",
    "frobenius",
    "condition_number",
    "stable_rank",
)
# `which` entry meaning "each parameter's own role norm" in `layer_norms`.
ROLE = "role"
# Norms that need the whole matrix (an SVD or power iteration): under a mesh they are
# computed on the matrix's owner device, as partitioned Newton–Schulz does.
WHOLE_MATRIX = ("rms_to_rms", "conv_spectral", "condition_number", "stable_rank")


def _col_norms(m):  # L2 norm of each column (over d_in): one per output
    return jnp.sqrt(jnp.sum(jnp.square(m), axis=-2))


def _row_norms(m):  # L2 norm of each row (over d_out): one per input
    return jnp.sqrt(jnp.sum(jnp.square(m), axis=-1))


def _sigma_max(m: jax.Array, power_iters: int | None) -> jax.Array:
    if power_iters is None:
        return jnp.linalg.svd(m, compute_uv=False)[..., 0]
    # Power iteration on MᵀM from a fixed pseudo-random start (deterministic logs).
    v = jax.random.normal(jax.random.key(0), (*m.shape[:-2], m.shape[-1], 1), m.dtype)

    def body(_, v):
        v = jnp.swapaxes(m, -1, -2) @ (m @ v)
        return v / (jnp.linalg.norm(v, axis=(-2, -1), keepdims=True) + 1e-30)

    v = jax.lax.fori_loop(0, power_iters, body, v)
    return jnp.linalg.norm(m @ v, axis=(-2, -1))


def operator_norm(
    w: jax.Array, name: str, role: Role | None = None, *, power_iters: int | None = None
) -> jax.Array:
    """The norm `name` of `w` (per matrix over leading batch axes).

    Args:
      w: a parameter (or update); 1-D only for "bias_rms", "supremum", "frobenius".
      name: one of `VALID`. "rms_to_rms" is √(d_in/d_out)·σ_max (exact via SVD, or a
        power-iteration estimate with `power_iters` steps); "conv_spectral" is
        k²·√(c_in/c_out)·σ_max (the reference SpectralConv's norm), i.e. k × "rms_to_rms".
      role: its axes give the matrix view; defaults to the last two axes (other axes
        batch). For a tied embedding's `tied_embedding(d)` role, "rms_to_inf" is the
        paper's output norm of its head view.
      power_iters: use power iteration instead of SVD for σ_max.
    """
    if name not in VALID:
        raise ValueError(f"Unknown norm {name!r}; valid: {', '.join(VALID)}.")
    w = jnp.asarray(w, jnp.promote_types(w.dtype, jnp.float32))
    if name == "bias_rms":
        return jnp.sqrt(jnp.mean(jnp.square(w), axis=-1))
    if w.ndim < 2:
        if name in ("supremum", "frobenius"):
            return jnp.max(jnp.abs(w)) if name == "supremum" else jnp.linalg.norm(w)
        raise ValueError(f"Norm {name!r} needs a matrix; got shape {w.shape}.")
    role = role or Role("conv_spectral" if name == "conv_spectral" else "none")
    m = to_matrix(w, role)
    d_in, d_out = m.shape[-2:]
    if name == "l1_to_rms":
        return jnp.max(_row_norms(m), axis=-1) / np.sqrt(d_out)
    if name == "rms_to_inf":
        return jnp.max(_col_norms(m), axis=-1) * np.sqrt(d_in)
    if name == "sign":
        return jnp.max(jnp.abs(m), axis=(-2, -1)) * d_in
    if name == "supremum":
        return jnp.max(jnp.abs(m), axis=(-2, -1))
    if name == "frobenius":
        return jnp.sqrt(jnp.sum(jnp.square(m), axis=(-2, -1)))
    if name == "rms_to_rms":
        return np.sqrt(d_in / d_out) * _sigma_max(m, power_iters)
    if name == "conv_spectral":
        area = conv_kernel_area(role, w.shape)
        return np.sqrt(area * d_in / d_out) * _sigma_max(m, power_iters)
    s = jnp.linalg.svd(m, compute_uv=False)
    if name == "condition_number":
        return s[..., 0] / s[..., -1]
    return jnp.sum(jnp.square(s), axis=-1) / jnp.square(s[..., 0])  # stable_rank


def layer_norms(
    tree: Any,
    rules: Rules,
    which: Sequence[str] = (ROLE,),
    *,
    power_iters: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, jax.Array]:
    """``{f"{norm}/{path}": scalar}`` for every parameter (jit-able).

    Args:
      tree: params or updates.
      rules: the optimizer's rule table (gives each parameter's role and axes).
      which: norm names to compute, or "role" for each parameter's own norm.
        Norms that do not apply to a parameter's shape are skipped; frozen
        ("none") parameters get only the explicitly named norms.
      power_iters: estimate σ_max by power iteration rather than SVD.
      mesh: the mesh `tree` is sharded over: the whole-matrix norms (`WHOLE_MATRIX`)
        are then computed where the whole matrix is, each matrix on one owner device
        (`partitioned.owner_apply`, the same assignment as partitioned Newton–Schulz);
        the row/column/elementwise norms are reductions GSPMD splits as it likes.
        (With `power_iters`, owners start the iteration from per-stack random vectors,
        so estimates differ slightly from the unpartitioned ones before convergence.)

    Stacked parameters ``[L, d_in, d_out]`` give one entry per matrix,
    ``f"{norm}/{path}/{i}"``.
    """
    for name in which:
        if name != ROLE and name not in VALID:
            raise ValueError(f"Unknown norm {name!r}; valid: {ROLE!r}, {', '.join(VALID)}.")
    roles = resolve_roles(tree, rules)
    values = {}
    # norm names -> leaves (path, matrix, √k² of a conv_spectral kernel)
    owned: dict[tuple[str, ...], list[tuple[str, jax.Array, float]]] = {}
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    role_leaves = jax.tree.structure(tree).flatten_up_to(roles)
    for (path, w), role in zip(flat, role_leaves, strict=True):
        p = path_str(path)
        on_owner = []
        for name in which:
            norm = role.norm if name == ROLE else name
            if norm == "none" or not _applies(norm, w.ndim) or f"{norm}/{p}" in values:
                continue
            if mesh is not None and norm in WHOLE_MATRIX and w.ndim >= 2:
                on_owner.append(norm)
                values[f"{norm}/{p}"] = None  # placeholder: keeps the key order
            else:
                values[f"{norm}/{p}"] = operator_norm(w, norm, role, power_iters=power_iters)
        if on_owner:
            m = to_matrix(jnp.asarray(w, jnp.promote_types(w.dtype, jnp.float32)), role)
            area = conv_kernel_area(role, w.shape) if "conv_spectral" in on_owner else 1
            owned.setdefault(tuple(on_owner), []).append((p, m, float(np.sqrt(area))))
    for names, leaves in owned.items():

        def fn(x, names=names):  # [k, d_in, d_out] -> [k, len(names)]
            # conv_spectral: rms_to_rms on the owner, × √k² below (needs the kernel shape)
            own = ["rms_to_rms" if n == "conv_spectral" else n for n in names]
            return jnp.stack([operator_norm(x, n, power_iters=power_iters) for n in own], -1)

        results = partitioned.owner_apply([m for _, m, _ in leaves], mesh, fn)
        for (p, _, k), r in zip(leaves, results, strict=True):
            for j, n in enumerate(names):
                values[f"{n}/{p}"] = r[..., j] * k if n == "conv_spectral" else r[..., j]
    out = {}
    for key, value in values.items():
        if value.ndim == 0:
            out[key] = value
        else:
            if mesh is not None and partitioned.spec_of(value) is not None:  # Explicit axes
                value = jax.sharding.reshard(value, jax.sharding.NamedSharding(mesh, P()))
            for i, v in enumerate(value.reshape(-1)):
                out[f"{key}/{i}"] = v
    return out


def _applies(norm: str, ndim: int) -> bool:
    return ndim >= 2 or norm in ("bias_rms", "supremum", "frobenius")
