"""Training: config, optimizers, checkpoints, metrics and the loop behind experiments/run.py."""

from scion_jax.train.config import base_config, validate
from scion_jax.train.trainer import model_config, train

__all__ = ["base_config", "model_config", "train", "validate"]
