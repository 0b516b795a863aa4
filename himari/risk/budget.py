"""Gate 8, risk budget: a multiplier in [budget_min, budget_max] (0.5-1.2) that adapts to realized performance.

Target from the strategy's realized per-bar log returns over a trailing window (at least ``min_bars`` finite)::

    S = mean / std · sqrt(P)                     (annualized Sharpe of the realized returns)
    target = clip(1 + sensitivity · S, budget_min, budget_max)

and the budget moves towards it once per bar with an exponential smoother of half-life h bars,
``b <- b + (1 - 2^(-1/h)) (target - b)``. A budget below 1 scales positions by b (this gate's scale); above 1 it
loosens the loss limits of the EVT, volatility and VaR gates by b (a gate's scale itself never exceeds 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# realized strategy returns a trading session keeps for the budget (and the simulator per episode)
STRATEGY_RETURN_MEMORY = 500


def budget_targets(
    strategy_returns: np.ndarray,
    periods_per_year: float,
    *,
    window: int,
    min_bars: int,
    sensitivity: float,
    budget_min: float,
    budget_max: float,
) -> np.ndarray:
    """(N,) ``clip(1 + sensitivity · annualized Sharpe, min, max)`` of each row of ``strategy_returns`` (N, L)
    (the last ``window`` columns, finite values only; NaN = no return); 1 where a row has too little history."""
    r = np.asarray(strategy_returns, dtype=np.float64)[:, -window:]
    finite = np.isfinite(r)
    n = finite.sum(axis=1)
    x = np.where(finite, r, 0.0)
    mean = x.sum(axis=1) / np.maximum(n, 1)
    centered = np.where(finite, r - mean[:, None], 0.0)
    var = np.einsum("nl,nl->n", centered, centered) / np.maximum(n - 1, 1)
    ok = (n >= max(min_bars, 2)) & (var > 0)
    sharpe = np.where(ok, mean / np.sqrt(np.where(ok, var, 1.0)), 0.0) * np.sqrt(periods_per_year)
    return np.where(ok, np.clip(1.0 + sensitivity * sharpe, budget_min, budget_max), 1.0)


def budget_target(
    strategy_returns: np.ndarray | None,
    periods_per_year: float,
    **kwargs: float,
) -> float:
    """One stream's :func:`budget_targets` (``None``: no history, 1)."""
    if strategy_returns is None:
        return 1.0
    r = np.asarray(strategy_returns, dtype=np.float64).reshape(1, -1)
    if r.shape[1] == 0:
        return 1.0
    return float(budget_targets(r, periods_per_year, **kwargs)[0])  # type: ignore[arg-type]


def budget_step(value: np.ndarray, target: np.ndarray, halflife_bars: float, budget_min: float,
                budget_max: float) -> np.ndarray:
    """One bar of the budget's smoother: ``clip(b + (1 - 2^(-1/h)) (target - b), min, max)``."""
    alpha = 1.0 - 2.0 ** (-1.0 / halflife_bars)
    return np.clip(value + alpha * (target - value), budget_min, budget_max)


class RiskBudget:
    """Stateful, smoothed risk budget of one stream; updates once per new bar timestamp."""

    def __init__(self, halflife_bars: float, budget_min: float, budget_max: float) -> None:
        self.halflife_bars = float(halflife_bars)
        self.budget_min = budget_min
        self.budget_max = budget_max
        self.value = 1.0
        self.last_timestamp_ns: int | None = None

    def update(self, timestamp_ns: int, target: float) -> float:
        if self.last_timestamp_ns is None or timestamp_ns > self.last_timestamp_ns:
            self.value = float(budget_step(np.array([self.value]), np.array([target]), self.halflife_bars,
                                           self.budget_min, self.budget_max)[0])
            self.last_timestamp_ns = int(timestamp_ns)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "last_timestamp_ns": self.last_timestamp_ns}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        ts = state["last_timestamp_ns"]
        self.last_timestamp_ns = None if ts is None else int(ts)
