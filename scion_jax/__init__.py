"""scion-jax: the Scion optimizer (norm-constrained LMOs) for JAX, as an optax transform.

Without jax installed only `scion_jax.analysis` (numpy + matplotlib) is usable: the optimizer
names below are then absent, and importing the analysis package still works.
"""

try:
    import jax as _jax  # noqa: F401
except ImportError:  # an analysis-only environment
    __all__: list[str] = []
else:
    from scion_jax import norms, partitioned
    from scion_jax.init import init_params
    from scion_jax.newton_schulz import newton_schulz, polar_svd
    from scion_jax.norms import layer_norms, operator_norm
    from scion_jax.optimizer import ScionState, scale_by_scion, scion
    from scion_jax.partitioned import axis_orthogonalizer, mesh_orthogonalizer
    from scion_jax.propose import describe, describe_rows, propose_rules
    from scion_jax.rules import NORMS, Role, tied_embedding

    __all__ = [
        "NORMS",
        "Role",
        "ScionState",
        "axis_orthogonalizer",
        "describe",
        "describe_rows",
        "init_params",
        "layer_norms",
        "mesh_orthogonalizer",
        "newton_schulz",
        "norms",
        "operator_norm",
        "partitioned",
        "polar_svd",
        "propose_rules",
        "scale_by_scion",
        "scion",
        "tied_embedding",
    ]
