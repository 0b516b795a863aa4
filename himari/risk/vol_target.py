"""Gate 3, volatility targeting: the annualized volatility of the proposed portfolio stays within a cap.

``σ_p = sqrt(wᵀ Σ w) · sqrt(P)`` with Σ the covariance of per-bar log returns over the trailing window and P the bars
per year of the timeframe; scale = ``min(1, σ_cap / σ_p)`` (one scale for all assets, which keeps the mix).
"""

from __future__ import annotations

import numpy as np

from himari.risk.gate import GateResult, scalar_scale


def portfolio_vol_annual(weights: np.ndarray, cov: np.ndarray, periods_per_year: float) -> float:
    w = np.asarray(weights, dtype=np.float64)
    return float(np.sqrt(max(float(w @ cov @ w), 0.0) * periods_per_year))


def vol_target_gate(
    proposal: np.ndarray, cov: np.ndarray, periods_per_year: float, cap_annual: float
) -> GateResult:
    vol = portfolio_vol_annual(proposal, cov, periods_per_year)
    s = scalar_scale(vol, cap_annual)
    return GateResult(
        "vol_target", np.full(len(proposal), s), f"portfolio vol {vol:.1%}/yr vs cap {cap_annual:.1%}"
    )
