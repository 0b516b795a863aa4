"""Volatility-targeted base position and the bounded delta of the L3 sizer.

Base position (Moreira & Muir 2017, "Volatility-managed portfolios"; Harvey et al. 2018)::

    x_base = min(max_position, σ_target / (σ_bar · sqrt(P)))

with σ_bar the per-bar standard deviation of log returns over a trailing window and P = bars per year from the bar
timeframe (``Timeframe.periods_per_year``: 8760 for 1h, 365 for 1d), so σ_bar·sqrt(P) is the annualized volatility.

Bounded delta (the L3 sizer policy's action): ``delta = delta_max · tanh(raw)`` (or ``clip(raw, ±delta_max)``), applied
additively, ``x = x_base + delta`` (as the simulator's delta action does, so training and trading agree: at most
±0.30 of equity around the base by default), or multiplicatively, ``x = x_base · (1 + delta)`` (±30 % of the base).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np


def trailing_vol_per_bar(returns: np.ndarray, lookback: int, min_bars: int) -> np.ndarray:
    """Sample std (ddof=1) of the finite values among the last ``lookback`` rows, per column; NaN if < ``min_bars``."""
    window = np.asarray(returns, dtype=np.float64)[-lookback:]
    if window.ndim == 1:
        window = window[:, None]
    finite = np.isfinite(window)
    rows = window.shape[0]
    if finite.all():  # common case: no gaps in the window
        if rows < max(min_bars, 2):
            return np.full(window.shape[1], np.nan)
        centered = window - window.sum(0) / rows
        return np.sqrt(np.einsum("ij,ij->j", centered, centered) / (rows - 1))
    n = finite.sum(0)
    x = np.where(finite, window, 0.0)
    s1 = x.sum(0)
    s2 = np.einsum("ij,ij->j", x, x)
    ok = n >= max(min_bars, 2)
    var = np.full(n.shape, np.nan)
    np.divide(s2 - s1 * s1 / np.maximum(n, 1), n - 1, out=var, where=ok)
    return np.sqrt(np.maximum(var, 0.0), where=ok, out=np.full(n.shape, np.nan))


def vol_target_position(
    sigma_per_bar: np.ndarray, target_vol_annual: float, periods_per_year: float, max_position: float
) -> np.ndarray:
    """``min(max_position, σ_target / (σ_bar sqrt(P)))``; 0 where σ is unknown (NaN), ``max_position`` where σ = 0."""
    sigma = np.asarray(sigma_per_bar, dtype=np.float64)
    annual = sigma * math.sqrt(periods_per_year)
    raw = np.full(annual.shape, float(max_position))
    np.divide(target_vol_annual, annual, out=raw, where=annual > 0)
    return np.where(np.isfinite(sigma), np.minimum(raw, max_position), 0.0)


def bounded_delta(
    raw: np.ndarray, delta_max: float = 0.30, squash: Literal["tanh", "clip"] = "tanh"
) -> np.ndarray:
    """``delta_max · tanh(raw)`` or ``clip(raw, -delta_max, delta_max)``; NaN becomes 0."""
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
    if squash == "tanh":
        return delta_max * np.tanh(raw)
    return np.clip(raw, -delta_max, delta_max)


def apply_delta(
    base: np.ndarray, delta: np.ndarray, mode: Literal["additive", "multiplicative"] = "additive"
) -> np.ndarray:
    """The L3 sizer's position around its base: ``base + delta`` or ``base · (1 + delta)``."""
    b = np.asarray(base, dtype=np.float64)
    d = np.asarray(delta, dtype=np.float64)
    return b + d if mode == "additive" else b * (1.0 + d)
