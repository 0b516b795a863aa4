"""Execution and cost kernels shared by the simulator, the backtester and paper trading (one code path).

Accounting model. A portfolio has equity E (cash + holdings marked at the mark price) and, per asset, a signed
position ``p`` = holding value / E (a fraction of equity; negative = short, cash earns nothing). All kernels are pure
functions of plain arrays: positions and prices are ``(..., A)`` and equity ``(...)`` — ``(N, A)``/``(N,)`` in the
simulator, ``(A,)``/scalar one bar at a time in a paper-trading loop.

* Price move (:func:`mark_to_market`): with per-asset gross return g = exp(log_return),
  E' = E * (1 + sum_a p_a (g_a - 1)) and p'_a = p_a g_a / (1 + sum_b p_b (g_b - 1)).
* Rebalance at a fill (:func:`rebalance`): the trade is dp = target - p (fractions of the pre-trade equity E, at
  the mark price P). Slippage per asset s = slippage_bps/1e4 + vol_slippage_coef * sigma (sigma: per-bar
  volatility known at decision time), so the effective fill price is P (1 + sign(dp) s). Paid: slippage cost
  |dp| E s and fee f |dp| E (1 + sign(dp) s) (the fee is charged on the filled notional), from cash. After the trade
  the holding value is target * E and the equity E - costs, so the new fraction is target * E / E_post.
* Funding for perpetuals (:func:`funding`): per bar, longs pay and shorts receive
  E * sum_a p_a * rate_per_8h * (bar_hours / 8).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from pydantic import Field

from himari.config import FrozenConfig

FillTiming = Literal["next_open", "next_close"]


class CostConfig(FrozenConfig):
    """Trading costs (defaults: Binance spot taker fee 10 bps, 2 bps slippage plus 0.05 x per-bar volatility)."""

    taker_fee_bps: float = Field(10.0, ge=0.0, le=1000.0)
    maker_fee_bps: float = Field(2.0, ge=-100.0, le=1000.0)
    order_type: Literal["taker", "maker"] = "taker"  # which fee the simulated (market) orders pay
    slippage_bps: float = Field(2.0, ge=0.0, le=1000.0)
    vol_slippage_coef: float = Field(0.05, ge=0.0, le=10.0)  # slippage += coef * per-bar volatility
    funding_rate_per_8h: float | None = Field(None, ge=-0.05, le=0.05)  # perpetuals only; None = spot
    fill: FillTiming = "next_open"

    @property
    def fee_rate(self) -> float:
        """Fee as a fraction of the filled notional."""
        return (self.taker_fee_bps if self.order_type == "taker" else self.maker_fee_bps) * 1e-4

    @property
    def slippage_rate(self) -> float:
        return self.slippage_bps * 1e-4

    def funding_rate_per_bar(self, bar_seconds: float) -> float:
        """Funding rate per bar (0 for spot): rate_per_8h * bar_hours / 8."""
        if self.funding_rate_per_8h is None:
            return 0.0
        return float(self.funding_rate_per_8h) * (bar_seconds / 3600.0) / 8.0


class FillResult(NamedTuple):
    position: np.ndarray  # (..., A) new position as a fraction of post-trade equity
    equity: np.ndarray  # (...) post-trade equity
    fee: np.ndarray  # (..., A) fee paid (equity units)
    slippage_cost: np.ndarray  # (..., A) slippage paid (equity units)
    fill_price: np.ndarray  # (..., A) effective fill price (mark price where nothing traded)
    turnover: np.ndarray  # (..., A) |dp|: traded notional as a fraction of pre-trade equity


class MarkResult(NamedTuple):
    position: np.ndarray  # (..., A) drifted position fractions
    equity: np.ndarray  # (...) equity after the move
    log_growth: np.ndarray  # (...) log(E' / E)


def slippage_fraction(volatility: np.ndarray, slippage_rate: float, vol_slippage_coef: float) -> np.ndarray:
    """Per-asset slippage as a fraction of price: s = slippage_bps/1e4 + coef * sigma_per_bar."""
    return slippage_rate + vol_slippage_coef * np.asarray(volatility, dtype=np.float64)


def rebalance(
    position: np.ndarray,
    target: np.ndarray,
    price: np.ndarray,
    equity: np.ndarray,
    volatility: np.ndarray,
    fee_rate: float,
    slippage_rate: float,
    vol_slippage_coef: float,
    can_fill: np.ndarray | None = None,
) -> FillResult:
    """Trade from ``position`` to ``target`` (fractions of equity) at mark ``price``; see the module docstring.

    Where ``can_fill`` is False nothing trades (the position keeps its holding value; its fraction still changes
    when costs paid on other assets change the equity). Arrays broadcast: positions/targets/prices/volatility
    (..., A), equity (...).
    """
    position = np.asarray(position, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    dp = target - position
    if can_fill is not None:
        dp = np.where(can_fill, dp, 0.0)
    side = np.sign(dp)
    slip = slippage_fraction(volatility, slippage_rate, vol_slippage_coef)
    notional = np.abs(dp) * equity[..., None]
    slip_cost = notional * slip
    fee = fee_rate * notional * (1.0 + side * slip)
    equity_post = equity - (slip_cost + fee).sum(axis=-1)
    holding = (position + dp) * equity[..., None]
    safe = np.where(equity_post > 0.0, equity_post, 1.0)
    new_position = np.where((equity_post > 0.0)[..., None], holding / safe[..., None], 0.0)
    fill_price = np.asarray(price, dtype=np.float64) * (1.0 + side * slip)
    return FillResult(new_position, equity_post, fee, slip_cost, fill_price, np.abs(dp))


def mark_to_market(position: np.ndarray, equity: np.ndarray, log_return: np.ndarray) -> MarkResult:
    """Apply per-asset log returns to a portfolio (see the module docstring). Equity is floored at 0 (ruin)."""
    position = np.asarray(position, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    gross = np.exp(np.asarray(log_return, dtype=np.float64))
    growth = 1.0 + (position * (gross - 1.0)).sum(axis=-1)
    alive = growth > 0.0
    safe = np.where(alive, growth, 1.0)
    new_position = np.where(alive[..., None], position * gross / safe[..., None], 0.0)
    new_equity = np.where(alive, equity * safe, 0.0)
    log_growth = np.log(safe)  # safe == 1 where ruined
    if not alive.all():
        log_growth = np.where(alive, log_growth, -np.inf)
    return MarkResult(new_position, new_equity, log_growth)


def funding(
    position: np.ndarray, equity: np.ndarray, rate_per_bar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Charge one bar of perpetual funding: cost = E * sum_a p_a * rate (longs pay when rate > 0).

    Returns (new position fractions, new equity, cost paid). Holding values are unchanged, so fractions rescale.
    """
    position = np.asarray(position, dtype=np.float64)
    equity = np.asarray(equity, dtype=np.float64)
    cost = equity * position.sum(axis=-1) * rate_per_bar
    new_equity = equity - cost
    safe = np.where(new_equity > 0.0, new_equity, 1.0)
    new_position = np.where((new_equity > 0.0)[..., None], position * (equity / safe)[..., None], 0.0)
    return new_position, np.maximum(new_equity, 0.0), cost
