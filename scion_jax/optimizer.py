"""Scion as an optax `GradientTransformation` (Pethick et al. 2025; PAPER.md §2).

Per parameter, with role (norm, lr_scale = s, radius ρ, weight_decay λ) from the rule
table (a role's ρ / λ override the global ones):
    m ← (1 − μ)·m + μ·g                      (Scion momentum convention; μ ∈ {0, 1}: m = g)
    u = LMO_norm(m)                            (unit norm in the layer's own norm)
    W ← W − η·s·(ρ·u + λ·W)                   (λ: decoupled weight decay, ρ: radius)
λ = 0, ρ = 1 is the paper's unconstrained default. With λ > 0 each layer's norm
converges to ρ/λ; λ = 1 is Scion's constrained variant W ← (1 − ηs)W − ηsρ·u.

Momentum: μ is the weight of the *new* gradient, as in the reference Scion and Disco.
optax.trace / torch SGD's β (m ← βm + g) and an EMA's β (m ← βm + (1 − β)g) are the
same direction as μ = 1 − β (the LMO is scale-free): β = 0.9 is ``momentum=0.1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scion_jax import lmo as lmo_lib
from scion_jax import partitioned
from scion_jax.newton_schulz import Coeffs, check_preconditioning, newton_schulz, resolve_coeffs
from scion_jax.rules import (
    SPECTRAL_NORMS,
    Rules,
    compile_rules,
    from_matrix,
    resolve_roles,
    to_matrix,
)

# Takes matrices [*batch, d_in, d_out] (the momentum, fp32) and returns orth() of each.
Orthogonalizer = Callable[[Sequence[jax.Array]], list[jax.Array]]


class ScionState(NamedTuple):
    """Momentum buffers (`None` when momentum is statically off: μ ∈ {0, 1}), and the
    parameters' shardings on an Auto-axes mesh as seen by `init` (static, no arrays;
    `partitioned.ParamShardings`), to which the updates are constrained."""

    mu: Any
    shardings: Any = None


def _is_static(x: Any) -> bool:
    return isinstance(x, (int, float))


def _check_momentum(momentum: Any) -> None:
    if _is_static(momentum) and not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"momentum must be in [0, 1] (Scion convention m ← (1-μ)m + μg; 0 or 1 = no "
            f"momentum), got {momentum}."
        )


def per_matrix_orthogonalizer(
    ns_coeffs: Coeffs = "muon",
    ns_steps: int | jax.Array = 5,
    ns_dtype: Any = jnp.bfloat16,
    ns_gram: bool = False,
    ns_preconditioning: str = "frobenius",
) -> Orthogonalizer:
    """orth() of each matrix in turn (stacked `[L, d_in, d_out]` ones as one batch)."""
    kw = dict(gram=ns_gram, preconditioning=ns_preconditioning)

    def orthogonalize(mats):
        return [newton_schulz(m, ns_coeffs, ns_steps, ns_dtype, **kw) for m in mats]

    return orthogonalize


def scale_by_scion(
    rules: Rules,
    *,
    momentum: float | jax.Array = 0.0,
    nesterov: bool = False,
    weight_decay: float | jax.Array = 0.0,
    radius: float | jax.Array = 1.0,
    orthogonalizer: Orthogonalizer | None = None,
    mu_dtype: Any = "float32",
) -> optax.GradientTransformation:
    """The Scion direction s·(ρ·LMO(m) + λ·W) per parameter, before the learning rate.

    Args:
      rules: ordered ``(regex, role)`` pairs, see `scion_jax.rules`.
      momentum: μ in the Scion convention m ← (1 − μ)m + μg (μ = 0 or 1: raw gradient);
        μ = 1 − β of optax.trace / torch SGD.
      nesterov: use (1 − μ)·m + μ·g as the LMO's input.
      weight_decay: λ, decoupled and scaled by the parameter's learning rate
        (a `Role`'s own `weight_decay` overrides it for its parameters).
      radius: ρ, the norm of each LMO direction (a `Role`'s `radius` overrides it).
      orthogonalizer: computes orth() for the "rms_to_rms" parameters; defaults to
        Newton–Schulz ("muon", 5 steps, bf16) one matrix (or stack) at a time.
      mu_dtype: dtype of the momentum buffers.
    """
    _check_momentum(momentum)
    compiled = compile_rules(rules)  # validate eagerly: bad regex, unknown norm
    orthogonalizer = orthogonalizer or per_matrix_orthogonalizer()
    mu_dtype = jnp.dtype(mu_dtype)
    use_buffer = not (_is_static(momentum) and momentum in (0.0, 1.0))
    use_decay = not (_is_static(weight_decay) and weight_decay == 0.0) or any(
        role.weight_decay not in (None, 0.0) for _, role in compiled
    )

    def init_fn(params):
        resolve_roles(params, rules)  # fail early on unmatched paths / bad shapes
        shardings = partitioned.auto_shardings(params)
        if not use_buffer:
            return ScionState(mu=None, shardings=shardings)
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params)
        return ScionState(mu=mu, shardings=shardings)

    def update_fn(updates, state, params=None):
        if use_decay and params is None:
            raise ValueError("scion with weight_decay != 0 needs `params` in update().")
        roles = resolve_roles(updates, rules)
        mu = state.mu
        if use_buffer:
            rate = jnp.where(momentum == 0, 1.0, momentum).astype(mu_dtype)
            mu = jax.tree.map(
                lambda g, m: (1 - rate) * m + rate * g.astype(mu_dtype), updates, mu
            )
            if nesterov:
                lmo_input = jax.tree.map(
                    lambda g, m: (1 - rate) * m + rate * g.astype(mu_dtype), updates, mu
                )
            else:
                lmo_input = mu
        else:
            lmo_input = jax.tree.map(lambda g: g.astype(mu_dtype), updates)

        leaves, treedef = jax.tree.flatten(lmo_input)
        role_leaves = treedef.flatten_up_to(roles)
        spectral = [i for i, r in enumerate(role_leaves) if r.norm in SPECTRAL_NORMS]
        mats = [to_matrix(leaves[i], role_leaves[i]) for i in spectral]
        spectral_dirs = {
            i: from_matrix(
                o * lmo_lib.spectral_scale(role_leaves[i], leaves[i].shape),
                role_leaves[i],
                leaves[i].shape,
            )
            for i, o in zip(spectral, orthogonalizer(mats), strict=True)
        }

        param_leaves = treedef.flatten_up_to(params) if use_decay else [None] * len(leaves)
        grad_leaves = treedef.flatten_up_to(updates)
        out = []
        for i, (x, role, w, g) in enumerate(
            zip(leaves, role_leaves, param_leaves, grad_leaves, strict=True)
        ):
            if role.norm == "none":
                out.append(jnp.zeros_like(g))
                continue
            u = spectral_dirs[i] if i in spectral_dirs else lmo_lib.local_lmo(x, role)
            rho = radius if role.radius is None else role.radius
            lam = weight_decay if role.weight_decay is None else role.weight_decay
            d = rho * u
            if use_decay and not (_is_static(lam) and lam == 0.0):
                d = d + lam * w.astype(d.dtype)
            out.append((role.lr_scale * d).astype(g.dtype))
        if state.shardings is not None:  # Auto axes: each update in its parameter's layout
            out = state.shardings.constrain(out)
        return treedef.unflatten(out), ScionState(mu=mu, shardings=state.shardings)

    return optax.GradientTransformation(init_fn, update_fn)


def scion(
    learning_rate: optax.ScalarOrSchedule,
    rules: Rules,
    *,
    momentum: float | jax.Array = 0.0,
    nesterov: bool = False,
    weight_decay: float | jax.Array = 0.0,
    radius: float | jax.Array = 1.0,
    ns_coeffs: Coeffs = "muon",
    ns_steps: int | jax.Array = 5,
    ns_dtype: Any = "bfloat16",
    ns_gram: bool = False,
    ns_preconditioning: str = "frobenius",
    mu_dtype: Any = "float32",
    orthogonalizer: Orthogonalizer | None = None,
    mesh: jax.sharding.Mesh | None = None,
    axis_name: str | tuple[str, ...] | None = None,
) -> optax.GradientTransformation:
    """Scion: per-layer norm-constrained LMO steps (PAPER.md §2).

    Args:
      learning_rate: η, a float or an optax schedule.
      rules: ordered ``(regex, role)`` pairs; the first `re.search` match on a
        parameter's "/"-joined path wins; a role is a norm name or a `Role`.
      momentum: μ in the Scion convention m ← (1 − μ)m + μg (0 or 1: none); the
        reference Scion's ``momentum`` as is, and μ = 1 − β of optax.trace / torch
        SGD (β = 0.9 is ``momentum=0.1``).
      nesterov: Nesterov momentum.
      weight_decay: λ in W ← (1 − ληs)W − ηs·ρu (decoupled, scaled by each
        parameter's learning rate η·s, so norms converge to ρ/λ); a `Role`'s own
        ``weight_decay`` overrides it (``Role(..., weight_decay=0.0)`` masks it off).
      radius: ρ (Scion's constrained variant is ``weight_decay=1, radius=ρ``); a
        `Role`'s ``radius`` overrides it (the reference's per-group ``scale``).
      ns_coeffs: "muon", "polar_express", "svd" (exact polar factor) or triples.
      ns_steps: Newton–Schulz iterations.
      ns_dtype: Newton–Schulz matmul operand dtype (fp32 accumulation).
      ns_gram: Gram Newton–Schulz (iterating on the m×m Gram matrix) on the matrices
        where it needs fewer FLOPs (aspect ratio > 1.5: SwiGLU's w1, w3, w2);
        the same result in exact arithmetic (`scion_jax.newton_schulz`).
      ns_preconditioning: "frobenius" (PAPER.md §3) or "aol" (Turbo-Muon's row
        rescaling: at equal steps closer to the polar factor; about equal with one
        step fewer for the "muon" coefficients).
      mu_dtype: momentum dtype.
      orthogonalizer: overrides how "rms_to_rms" matrices are orthogonalized
        (e.g. `scion_jax.partitioned` ones); the ns_* arguments are then unused.
      mesh: partition Newton–Schulz over this mesh (jit code whose params carry
        NamedShardings on it): each device orthogonalizes the whole matrices it
        owns (`scion_jax.partitioned.mesh_orthogonalizer`). Each update comes back
        in its parameter's sharding: read from the gradient under Explicit axes, and
        under Auto axes from the parameters `init` was given (call it on the placed
        parameters, outside jit, as `nnx.Optimizer` does). A Mesh is callable, so
        under `optax.inject_hyperparams` pass ``static_args=("mesh",)``.
      axis_name: inside a data-parallel `jax.pmap` / `jax.shard_map` step over this
        axis (gradients already averaged): each device orthogonalizes its share and
        one all_gather completes the update (`partitioned.axis_orthogonalizer`).

    Returns:
      An `optax.GradientTransformation`; works under `optax.inject_hyperparams`
      (learning_rate, momentum, weight_decay, radius, ns_steps injectable).
    """
    resolve_coeffs(ns_coeffs)  # validate eagerly
    check_preconditioning(ns_preconditioning)
    ns_kw = dict(ns_gram=ns_gram, ns_preconditioning=ns_preconditioning)
    chosen = [n for n, v in (("orthogonalizer", orthogonalizer), ("mesh", mesh),
                             ("axis_name", axis_name)) if v is not None]
    if len(chosen) > 1:
        raise ValueError(
            f"scion takes at most one of orthogonalizer, mesh, axis_name; got {chosen}."
        )
    if mesh is not None:
        orthogonalizer = partitioned.mesh_orthogonalizer(
            mesh, ns_coeffs, ns_steps, ns_dtype, **ns_kw
        )
    elif axis_name is not None:
        orthogonalizer = partitioned.axis_orthogonalizer(
            axis_name, ns_coeffs, ns_steps, ns_dtype, **ns_kw
        )
    orthogonalizer = orthogonalizer or per_matrix_orthogonalizer(
        ns_coeffs, ns_steps, jnp.dtype(ns_dtype), **ns_kw
    )
    return optax.chain(
        scale_by_scion(
            rules,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            radius=radius,
            orthogonalizer=orthogonalizer,
            mu_dtype=mu_dtype,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
