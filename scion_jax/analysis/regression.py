"""Ordinary least squares with standard errors and R² (the scaling-law fits of PAPER.md §6.5).

The paper reports its fits as coefficient ± standard error with R², e.g.
log2 η* = 0.62·log2 B − 0.56·log2 D + 9.8 (±0.05, ±0.05, ±1.6; R² 0.92) (Fig. 3b).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class LinearFit:
    """y ≈ X @ coef. `se`: standard errors √(σ²·diag((XᵀX)⁻¹)), σ² = RSS/(n − p) (NaN if n ≤ p)."""

    names: tuple[str, ...]
    coef: tuple[float, ...]
    se: tuple[float, ...]
    r2: float
    n: int
    residual_std: float

    def __getitem__(self, name: str) -> float:
        return self.coef[self.names.index(name)]

    def stderr(self, name: str) -> float:
        return self.se[self.names.index(name)]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ np.asarray(self.coef)

    def describe(self) -> str:
        terms = ", ".join(f"{n} = {c:.3g} ± {s:.2g}" for n, c, s in zip(self.names, self.coef,
                                                                       self.se, strict=True))
        return f"{terms}; R² = {self.r2:.3f} (n = {self.n})"


def linear_fit(X: np.ndarray, y: np.ndarray, names: Sequence[str]) -> LinearFit:
    """Least squares of y `[n]` on the columns of X `[n, p]` (include a ones column yourself).

    Raises ValueError when n < p or X is rank deficient (e.g. one batch size only).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, p = X.shape
    if len(names) != p:
        raise ValueError(f"{len(names)} names for {p} columns")
    if n < p:
        raise ValueError(f"{n} points cannot determine {p} coefficients ({', '.join(names)})")
    if np.linalg.matrix_rank(X) < p:
        raise ValueError(f"the design for ({', '.join(names)}) is rank deficient: a regressor "
                         "does not vary")
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    rss = float(resid @ resid)
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - rss / tss if tss > 0 else (1.0 if rss == 0 else math.nan)
    if n > p:
        sigma2 = rss / (n - p)
        se = np.sqrt(np.maximum(sigma2 * np.diag(np.linalg.inv(X.T @ X)), 0.0))
        rstd = math.sqrt(sigma2)
    else:
        se, rstd = np.full(p, math.nan), math.nan
    return LinearFit(tuple(names), tuple(float(c) for c in coef), tuple(float(s) for s in se),
                     float(r2), int(n), rstd)


def line_fit(x: np.ndarray, y: np.ndarray, slope: str = "slope",
             intercept: str = "const") -> LinearFit:
    """y ≈ slope·x + intercept (a power law when x, y are log2 values)."""
    x = np.asarray(x, dtype=np.float64)
    return linear_fit(np.stack([x, np.ones_like(x)], axis=1), y, (slope, intercept))
