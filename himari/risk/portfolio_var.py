"""Gate 5, portfolio VaR at 99 % over the trailing 100 bars, covariance-based and historical; the larger binds.

- Covariance (variance-covariance, zero mean): ``VaR = z_q · sqrt(wᵀ Σ w)`` with z_q the standard-normal quantile.
- Historical: the q-quantile (linear interpolation, as ``numpy.quantile``) of the portfolio's simple-return losses
  ``-Σ_a w_a expm1(r_a)`` over the same bars.

Both are linear in the scale of w, so ``scale = min(1, limit / VaR)`` brings the VaR exactly to the limit.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from himari.risk.gate import GateResult, scalar_scale


@lru_cache(maxsize=16)
def normal_quantile(level: float) -> float:
    return NormalDist().inv_cdf(level)


def covariance_var(weights: np.ndarray, cov: np.ndarray, level: float) -> float:
    w = np.asarray(weights, dtype=np.float64)
    return normal_quantile(level) * math.sqrt(max(float(w @ cov @ w), 0.0))


def quantile_linear(values: np.ndarray, level: float) -> float:
    """``numpy.quantile(values, level)`` (linear method) via a partial sort."""
    n = values.size
    h = (n - 1) * level
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (h - lo) * (part[hi] - part[lo]))


def historical_var(weights: np.ndarray, window_returns: np.ndarray, level: float) -> float:
    """q-quantile of portfolio losses over rows of ``window_returns`` (log returns, finite rows only)."""
    if len(window_returns) == 0:
        return float("nan")
    losses = -(np.expm1(window_returns) @ np.asarray(weights, dtype=np.float64))
    return quantile_linear(losses, level)


def portfolio_var_gate(
    proposal: np.ndarray,
    cov: np.ndarray,
    window_returns: np.ndarray,
    level: float,
    limit_per_bar: float,
    method: str = "max",
) -> GateResult:
    """Scale so that the portfolio VaR (``method``: max of both, "covariance" or "historical") meets the limit."""
    if not proposal.any():
        return GateResult("portfolio_var", np.ones(len(proposal)), "no exposure")
    v_cov = covariance_var(proposal, cov, level) if method != "historical" else math.nan
    v_hist = historical_var(proposal, window_returns, level) if method != "covariance" else math.nan
    if method == "max":
        var = max(v_cov, v_hist) if v_hist == v_hist else v_cov
    else:
        var = v_cov if method == "covariance" else v_hist
    s = scalar_scale(var, limit_per_bar)
    reason = f"VaR{level:.0%} {var:.2%}/bar (cov {v_cov:.2%}, hist {v_hist:.2%}) vs limit {limit_per_bar:.2%}"
    return GateResult("portfolio_var", np.full(len(proposal), s), reason)
