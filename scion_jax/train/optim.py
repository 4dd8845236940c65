"""Learning-rate schedules and the optimizers a run can use (scion, adamw, muon).

Per-group learning rates (PAPER.md §2, Fig. 4) are the same for every optimizer:
input (embedding), hidden (attention and MLP matrices), output (unembedding),
taken from the model's Scion rule table.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

import scion_jax
from scion_jax.model import ModelConfig, scion_rules
from scion_jax.rules import resolve_roles
from scion_jax.train.config import decay_start

GROUP_OF_NORM = {"l1_to_rms": "input", "rms_to_inf": "output"}  # everything else: hidden


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """η(step) for `config.schedule.name` (PAPER.md §5: constant LR by default; the
    decayed variant decays linearly to 0 over the last `decay_fraction` of the steps)."""
    lr, steps, s = config.optimizer.learning_rate, config.steps, config.schedule
    warmup = s.warmup_steps if s.name in ("warmup", "wsd") else 0
    start = decay_start(steps, s.decay_fraction) if s.name in ("linear_decay", "wsd") else steps
    pieces, boundaries = [], []
    if warmup:
        pieces.append(optax.linear_schedule(0.0, lr, warmup))
        boundaries.append(warmup)
    pieces.append(optax.constant_schedule(lr))
    if start < steps:
        boundaries.append(start)
        pieces.append(optax.linear_schedule(lr, 0.0, steps - start))
    return optax.join_schedules(pieces, boundaries) if boundaries else pieces[0]


def model_rules(config: ml_collections.ConfigDict, model_cfg: ModelConfig):
    scales = config.optimizer.lr_scales
    return scion_rules(
        model_cfg,
        hidden_lr_scale=scales.hidden,
        input_lr_scale=scales.input,
        output_lr_scale=scales.output,
    )


def _group_labels(rules) -> Any:
    def labels(params):
        return jax.tree.map(
            lambda r: GROUP_OF_NORM.get(r.norm, "hidden"), resolve_roles(params, rules)
        )

    return labels


def make_optimizer(
    config: ml_collections.ConfigDict, model_cfg: ModelConfig, mesh: jax.sharding.Mesh | None
) -> optax.GradientTransformation:
    """The run's optimizer, gradient clipping first when `optimizer.grad_clip` > 0."""
    o = config.optimizer
    schedule = make_schedule(config)
    rules = model_rules(config, model_cfg)
    if o.name == "scion":
        extra = {"mesh": mesh} if (o.partitioned and mesh is not None and mesh.size > 1) else {}
        tx = scion_jax.scion(
            schedule,
            rules,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
            ns_coeffs=o.ns_coeffs,
            ns_steps=o.ns_steps,
            ns_dtype=o.ns_dtype,
            ns_gram=o.ns_gram,
            ns_preconditioning=o.ns_preconditioning,
            **extra,
        )
    else:
        scales = dict(o.lr_scales)

        def group(name: str) -> optax.GradientTransformation:
            lr = lambda step, k=scales[name]: k * schedule(step)
            if o.name == "adamw":
                return optax.adamw(lr, o.b1, o.b2, o.eps, weight_decay=o.weight_decay)
            if name == "hidden":  # muon on the hidden matrices (stacked ones per matrix)
                dims = lambda p: jax.tree.map(
                    lambda x: optax.contrib.MuonDimensionNumbers(x.ndim - 2, x.ndim - 1), p
                )
                return optax.contrib.muon(
                    lr, weight_decay=o.weight_decay, muon_weight_dimension_numbers=dims
                )
            return optax.adamw(lr, o.b1, o.b2, o.eps, weight_decay=o.weight_decay)

        tx = optax.partition(
            {g: group(g) for g in ("input", "hidden", "output")}, _group_labels(rules)
        )
    if o.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
    return tx
