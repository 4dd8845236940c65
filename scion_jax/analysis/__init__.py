"""Analysis of norm-transfer sweeps (PAPER.md §5–6): collect → fit → figures.

numpy + matplotlib only; works where jax is not installed. The command line:

    python experiments/plot.py --sweep_dir=workdirs/sweep --out_dir=workdirs/sweep_plots

From Python, on a synthetic sweep with known optima (`synthetic.Truth`):

    from scion_jax.analysis import collect, fit_optima, fit_global, fit_horizon_scaling
    from scion_jax.analysis.synthetic import make_sweep

    make_sweep("/tmp/sweep")                            # 371 runs: 53 LRs × 7 batch sizes
    table = collect("/tmp/sweep", horizons=range(24, 33, 2))  # a row per run × D = 2^k tokens
    optima = fit_optima(table)                          # loss = a·x² + b·x + ln V, x = log2 norm
    print(fit_global(optima).describe())                # log2 η* = α·log2 B + β·log2 D + γ
    print(fit_horizon_scaling(optima)["b_star"].describe())   # B* ∝ D^e
"""

from scion_jax.analysis.collect import (
    SweepWarning,
    Table,
    collect,
    column,
    read_csv,
    read_run,
    read_table,
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
    "read_table",
    "write_csv",
]
