"""scion-jax: the Scion optimizer (norm-constrained LMOs) for JAX, as an optax transform.

The names below are imported on first use (PEP 562), so that tools which need no JAX — the
data preparation CLI and its worker processes, `scion_jax.analysis` (numpy + matplotlib) —
start without importing it; without jax installed, using an optimizer name raises ImportError.
"""

import importlib
import sys
import types

# public name -> the submodule that defines it
_EXPORTS = {
    "NORMS": "rules",
    "Role": "rules",
    "tied_embedding": "rules",
    "ScionState": "optimizer",
    "scale_by_scion": "optimizer",
    "scion": "optimizer",
    "axis_orthogonalizer": "partitioned",
    "mesh_orthogonalizer": "partitioned",
    "describe": "propose",
    "describe_rows": "propose",
    "propose_rules": "propose",
    "init_params": "init",
    "layer_norms": "norms",
    "operator_norm": "norms",
    "newton_schulz": "newton_schulz",
    "polar_svd": "newton_schulz",
}
_SUBMODULES = ("norms", "partitioned")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


class _Package(types.ModuleType):
    """Keeps `scion_jax.newton_schulz` the function: importing a submodule sets it as an
    attribute of its package, and the submodule `newton_schulz` shares the function's name."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
