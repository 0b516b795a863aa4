"""``RiskConfig``: parameters of the eight risk gates and of the input checks.

Loss limits are given for a one-day horizon and converted to the bar horizon with the square-root-of-time rule,
``limit_bar = limit_day · sqrt(bar_seconds / 86400)`` (:func:`per_bar_limit`), so the same config works on 1h and 1d
bars. Volatility limits are annualized with ``Timeframe.periods_per_year``.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Literal

from pydantic import Field, model_validator

from himari.config import FrozenConfig

SECONDS_PER_DAY = 86400.0


def per_bar_limit(limit_daily: float, bar_seconds: float) -> float:
    """Square-root-of-time conversion of a one-day loss limit to one bar."""
    return float(limit_daily) * math.sqrt(bar_seconds / SECONDS_PER_DAY)


class RiskConfig(FrozenConfig):
    """Risk gates. Every gate can be switched off; a gate that is off reports scale 1."""

    # input checks (stale / invalid -> flat)
    max_data_age_bars: float = Field(1.0, ge=0.0, description="newest bar older than this many bars -> flat")
    min_history_bars: int = Field(
        50, ge=2, description="finite returns needed in the trailing window per asset"
    )
    posterior_tolerance: float = Field(1e-3, gt=0.0, description="|Σ posterior - 1| allowed")
    flat_after_gap: bool = Field(
        True, description="flat on a bar whose return is NaN (first bar after a gap)"
    )
    # 1. EVT tail risk (POT + GPD)
    evt_enabled: bool = True
    evt_window_bars: int = Field(2000, ge=50, description="trailing bars used for each GPD fit")
    evt_min_bars: int = Field(250, ge=20, description="fewer finite returns -> empirical ES instead of GPD")
    evt_threshold_quantile: float = Field(
        0.95, gt=0.5, lt=1.0, description="threshold u = this quantile of losses"
    )
    evt_min_exceedances: int = Field(25, ge=5)
    evt_level: float = Field(0.99, gt=0.5, lt=1.0, description="q of VaR_q / ES_q")
    evt_refit_every_bars: int = Field(168, ge=1)
    evt_es_limit_daily: float = Field(
        0.15, gt=0.0, description="max ES_q of each position, fraction of equity per day"
    )
    # 2. Kelly cap
    kelly_cap_enabled: bool = True
    # 3. volatility targeting (portfolio)
    vol_enabled: bool = True
    vol_cap_annual: float = Field(0.60, gt=0.0, description="max annualized portfolio volatility")
    cov_window_bars: int = Field(100, ge=10, description="trailing bars for σ and the covariance")
    # 4. drawdown brake
    drawdown_enabled: bool = True
    drawdown_thresholds: tuple[float, ...] = (0.03, 0.06, 0.10)
    drawdown_cuts: tuple[float, ...] = (0.30, 0.60, 0.95)
    drawdown_peak_halflife_days: float | None = Field(
        30.0,
        gt=0.0,
        description="the brake's reference peak decays towards equity with this half-life, so a strategy held "
        "near flat by the brake is not locked out forever; None = all-time peak",
    )
    # 5. portfolio VaR
    portfolio_var_enabled: bool = True
    portfolio_var_level: float = Field(0.99, gt=0.5, lt=1.0)
    portfolio_var_window_bars: int = Field(100, ge=10)
    portfolio_var_limit_daily: float = Field(0.10, gt=0.0, description="max VaR, fraction of equity per day")
    portfolio_var_method: Literal["max", "covariance", "historical"] = Field(
        "max", description="max of covariance and historical VaR, or one of them"
    )
    # 6. safe margin
    margin_enabled: bool = True
    maintenance_margin_rate: float = Field(0.005, ge=0.0, lt=1.0)
    margin_sigma_k: float = Field(3.0, ge=0.0, description="expected adverse move = k σ over the horizon")
    margin_horizon_bars: int = Field(24, ge=1)
    execution_cost_bps: float = Field(10.0, ge=0.0, description="fees + slippage to close, bps of notional")
    margin_buffer: float = Field(0.20, ge=0.0, lt=1.0, description="fraction of equity that must stay unused")
    # 7. leverage controller
    leverage_enabled: bool = True
    max_leverage: float = Field(3.0, gt=0.0, le=100.0, description="hard cap on gross exposure Σ|x|")
    leverage_by_regime: tuple[float, float, float, float] = (3.0, 2.5, 1.5, 0.5)
    # 8. risk budget
    budget_enabled: bool = True
    budget_min: float = Field(0.5, gt=0.0)
    budget_max: float = Field(1.2, gt=0.0)
    budget_window_bars: int = Field(720, ge=2)
    budget_min_bars: int = Field(48, ge=2)
    budget_sensitivity: float = Field(
        0.25, ge=0.0, description="budget target = 1 + sensitivity · annualized Sharpe"
    )
    budget_halflife_bars: float = Field(168.0, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> RiskConfig:
        th, cuts = self.drawdown_thresholds, self.drawdown_cuts
        if len(th) != len(cuts) or not th:
            raise ValueError("drawdown_thresholds and drawdown_cuts need the same, non-zero length")
        if any(b <= a for a, b in pairwise(th)) or any(not 0 < t < 1 for t in th):
            raise ValueError("drawdown_thresholds must be increasing, within (0, 1)")
        if any(b < a for a, b in pairwise(cuts)) or any(not 0 <= c <= 1 for c in cuts):
            raise ValueError("drawdown_cuts must be non-decreasing, within [0, 1]")
        lev = self.leverage_by_regime
        if any(v < 0 or v > self.max_leverage for v in lev):
            raise ValueError("leverage_by_regime must lie in [0, max_leverage]")
        if any(b > a for a, b in pairwise(lev)):
            raise ValueError(
                "leverage_by_regime must be non-increasing LOW_VOL >= TRENDING >= HIGH_VOL >= CRISIS"
            )
        if not self.budget_min <= 1.0 <= self.budget_max:
            raise ValueError("risk budget bounds must satisfy budget_min <= 1 <= budget_max")
        if self.evt_min_bars > self.evt_window_bars:
            raise ValueError("evt_min_bars must be <= evt_window_bars")
        return self
