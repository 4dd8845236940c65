"""scion-jax: the Scion optimizer (norm-constrained LMOs) for JAX, as an optax transform.

The public names load lazily (PEP 562), so `scion_jax.analysis` (numpy + matplotlib only)
imports without jax; `import scion_jax; scion_jax.scion(...)` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scion_jax import norms
    from scion_jax.init import init_params
    from scion_jax.newton_schulz import newton_schulz, polar_svd
    from scion_jax.norms import layer_norms, operator_norm
    from scion_jax.optimizer import ScionState, scale_by_scion, scion
    from scion_jax.rules import NORMS, Role

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "NORMS": ("scion_jax.rules", "NORMS"),
    "Role": ("scion_jax.rules", "Role"),
    "ScionState": ("scion_jax.optimizer", "ScionState"),
    "init_params": ("scion_jax.init", "init_params"),
    "layer_norms": ("scion_jax.norms", "layer_norms"),
    "newton_schulz": ("scion_jax.newton_schulz", "newton_schulz"),
    "norms": ("scion_jax.norms", None),
    "operator_norm": ("scion_jax.norms", "operator_norm"),
    "polar_svd": ("scion_jax.newton_schulz", "polar_svd"),
    "scale_by_scion": ("scion_jax.optimizer", "scale_by_scion"),
    "scion": ("scion_jax.optimizer", "scion"),
}

__all__ = [
    "NORMS",
    "Role",
    "ScionState",
    "init_params",
    "layer_norms",
    "newton_schulz",
    "norms",
    "operator_norm",
    "polar_svd",
    "scale_by_scion",
    "scion",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'scion_jax' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
