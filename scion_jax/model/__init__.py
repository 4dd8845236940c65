"""The paper's Llama-style decoder with "norm everywhere" (PAPER.md §4)."""

from scion_jax.model.config import SIZES, ModelConfig, matmul_params, model_flops_per_token
from scion_jax.model.sharding import AXIS_RULES, logical_axes, make_mesh, param_specs
from scion_jax.model.transformer import (
    MLP,
    Attention,
    Block,
    Transformer,
    init_model,
    scion_rules,
)

__all__ = [
    "AXIS_RULES",
    "MLP",
    "SIZES",
    "Attention",
    "Block",
    "ModelConfig",
    "Transformer",
    "init_model",
    "logical_axes",
    "make_mesh",
    "matmul_params",
    "model_flops_per_token",
    "param_specs",
    "scion_rules",
]
