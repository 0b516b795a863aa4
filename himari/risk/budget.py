"""Gate 8, risk budget: a multiplier in [budget_min, budget_max] (0.5-1.2) that adapts to realized performance.

Target from the strategy's realized per-bar log returns over a trailing window (at least ``min_bars`` finite)::

    S = mean / std · sqrt(P)                     (annualized Sharpe of the realized returns)
    target = clip(1 + sensitivity · S, budget_min, budget_max)

and the budget moves towards it once per bar with an exponential smoother of half-life h bars,
``b <- b + (1 - 2^(-1/h)) (target - b)``. A budget below 1 scales positions by b (this gate's scale); above 1 it
loosens the loss limits of the EVT, volatility and VaR gates by b (a gate's scale itself never exceeds 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from himari.risk.gate import GateResult


def budget_target(
    strategy_returns: np.ndarray | None,
    periods_per_year: float,
    *,
    window: int,
    min_bars: int,
    sensitivity: float,
    budget_min: float,
    budget_max: float,
) -> float:
    """``clip(1 + sensitivity · annualized Sharpe, min, max)``; 1 when there is too little history."""
    if strategy_returns is None:
        return 1.0
    r = np.asarray(strategy_returns, dtype=np.float64)[-window:]
    finite = np.isfinite(r)
    if not finite.all():
        r = r[finite]
    n = r.size
    if n < max(min_bars, 2):
        return 1.0
    mean = float(r.sum()) / n
    centered = r - mean
    var = float(centered @ centered) / (n - 1)
    if var <= 0:
        return 1.0
    sharpe = mean / math.sqrt(var) * math.sqrt(periods_per_year)
    return min(max(1.0 + sensitivity * sharpe, budget_min), budget_max)


class RiskBudget:
    """Stateful, smoothed risk budget; updates once per new bar timestamp."""

    def __init__(self, halflife_bars: float, budget_min: float, budget_max: float) -> None:
        self.alpha = 1.0 - 2.0 ** (-1.0 / halflife_bars)
        self.budget_min = budget_min
        self.budget_max = budget_max
        self.value = 1.0
        self.last_timestamp_ns: int | None = None

    def update(self, timestamp_ns: int, target: float) -> float:
        if self.last_timestamp_ns is None or timestamp_ns > self.last_timestamp_ns:
            value = self.value + self.alpha * (target - self.value)
            self.value = min(max(value, self.budget_min), self.budget_max)
            self.last_timestamp_ns = int(timestamp_ns)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "last_timestamp_ns": self.last_timestamp_ns}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        ts = state["last_timestamp_ns"]
        self.last_timestamp_ns = None if ts is None else int(ts)


def budget_gate(n_assets: int, budget: float, target: float) -> GateResult:
    s = min(1.0, budget)
    return GateResult("risk_budget", np.full(n_assets, s), f"risk budget {budget:.2f} (target {target:.2f})")
