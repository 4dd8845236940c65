"""Analysis of norm-transfer sweeps (PAPER.md §5–6): collect → fit → figures.

numpy + matplotlib only; importing this package does not import jax.
"""

from scion_jax.analysis.collect import (
    SweepWarning,
    Table,
    collect,
    column,
    read_csv,
    read_run,
    write_csv,
)
from scion_jax.analysis.fits import (
    Optimum,
    ParabolaFit,
    best_per_horizon,
    by_setup,
    first_reach,
    fit_first_reach,
    fit_global,
    fit_horizon_scaling,
    fit_optima,
    fit_parabola,
    lr_scale_ranking,
    norm_vs_batch,
    optimal_norm_band,
)
from scion_jax.analysis.regression import LinearFit, line_fit, linear_fit

__all__ = [
    "LinearFit",
    "Optimum",
    "ParabolaFit",
    "SweepWarning",
    "Table",
    "best_per_horizon",
    "by_setup",
    "collect",
    "column",
    "first_reach",
    "fit_first_reach",
    "fit_global",
    "fit_horizon_scaling",
    "fit_optima",
    "fit_parabola",
    "line_fit",
    "linear_fit",
    "lr_scale_ranking",
    "norm_vs_batch",
    "optimal_norm_band",
    "read_csv",
    "read_run",
    "write_csv",
]
