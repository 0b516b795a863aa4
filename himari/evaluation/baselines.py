"""Baseline strategies every result is reported beside: causal target-position generators.

Each function returns a target position array ``(T,)`` (fraction of equity, in ``[-max_position, max_position]``).
``positions[t]`` is the decision taken at the close of bar t from closes ``<= t`` only; the caller (the backtester)
fills it at bar t+1 through the same execution and cost code as the strategy, so baselines pay the same costs.
Causality is tested by truncation invariance: the generator on ``close[:t+1]`` returns the same row t.

Warm-up bars (a window not yet full) get position 0: no information, no position.
"""

from __future__ import annotations

import math

import numpy as np

from himari.data.timeframe import Timeframe
from himari.errors import ConfigError, DataError

BASELINE_NAMES: tuple[str, ...] = ("buy_and_hold", "vol_target_buy_and_hold", "ma_crossover", "random")


def _closes(close: np.ndarray) -> np.ndarray:
    c = np.asarray(close, dtype=np.float64)
    if c.ndim != 1:
        raise DataError(f"baselines: close must be a 1-D array, got shape {c.shape}")
    bad = ~np.isfinite(c) | (c <= 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"baselines: close is NaN, inf or non-positive at bar {row} ({c[row]})")
    return c


def _check_max(max_position: float) -> float:
    if not (max_position > 0 and math.isfinite(max_position)):
        raise ConfigError(f"baselines: max_position must be positive and finite, got {max_position}")
    return float(max_position)


def buy_and_hold(close: np.ndarray, max_position: float = 1.0) -> np.ndarray:
    """Long ``max_position`` from the first decision on: ``p_t = max_position``."""
    c = _closes(close)
    return np.full(c.shape, _check_max(max_position))


def _log_returns(c: np.ndarray, gap_before: np.ndarray | None) -> np.ndarray:
    """``log(c_t / c_{t-1})``, NaN at bar 0 and at bars that follow a gap (never bridged as one bar)."""
    lr = np.full(c.shape, np.nan)
    lr[1:] = np.diff(np.log(c))
    if gap_before is not None:
        gaps = np.asarray(gap_before, dtype=bool)
        if gaps.shape != c.shape:
            raise DataError(f"baselines: gap_before has shape {gaps.shape}, close has {c.shape}")
        lr[gaps] = np.nan
    return lr


def trailing_volatility(
    close: np.ndarray,
    window_bars: int,
    periods_per_year: float,
    gap_before: np.ndarray | None = None,
    min_periods: int | None = None,
) -> np.ndarray:
    """Annualized realized volatility of log returns over the trailing ``window_bars`` bars ending at t.

    ``σ_t = std(ddof=1) of the valid log returns in (t - window_bars, t] * sqrt(periods_per_year)``; returns across
    a gap are left out. NaN while fewer than ``min_periods`` (default ``window_bars // 2``) valid returns exist.
    Causal and O(T) (cumulative sums over valid returns).
    """
    c = _closes(close)
    if window_bars < 2:
        raise ConfigError(f"baselines: volatility window must be >= 2 bars, got {window_bars}")
    need = max(2, window_bars // 2 if min_periods is None else int(min_periods))
    lr = _log_returns(c, gap_before)
    valid = np.isfinite(lr)
    x = np.where(valid, lr, 0.0)
    # Raw (not demeaned) cumulative sums: per-bar log returns are small, so s2 - n*mean^2 loses no precision.
    c0 = np.concatenate([[0], np.cumsum(valid)])
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    end = np.arange(1, c.size + 1)
    start = np.maximum(end - window_bars, 0)
    n = (c0[end] - c0[start]).astype(np.float64)
    s1 = c1[end] - c1[start]
    s2 = c2[end] - c2[start]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / n
        var = np.maximum(s2 - n * mean * mean, 0.0) / (n - 1.0)
    vol = np.sqrt(var) * math.sqrt(periods_per_year)
    return np.where(n >= need, vol, np.nan)


def vol_target_buy_and_hold(
    close: np.ndarray,
    timeframe: Timeframe | str,
    target_vol_annual: float = 0.5,
    window_bars: int | None = None,
    max_position: float = 1.0,
    gap_before: np.ndarray | None = None,
) -> np.ndarray:
    """Long, sized to a volatility target: ``p_t = min(target_vol_annual / σ_t, max_position)``.

    ``σ_t`` is :func:`trailing_volatility` over ``window_bars`` (default: 30 days of bars of ``timeframe``);
    annualization from the timeframe. ``max_position`` caps the leverage. Position 0 during warm-up.
    """
    tf = Timeframe.parse(timeframe)
    cap = _check_max(max_position)
    if not target_vol_annual > 0:
        raise ConfigError(f"baselines: target_vol_annual must be > 0, got {target_vol_annual}")
    window = window_bars if window_bars is not None else max(2, round(30 * 86400 / tf.seconds))
    vol = trailing_volatility(close, window, tf.periods_per_year, gap_before)
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.where(vol > 0, np.minimum(target_vol_annual / vol, cap), cap)
    return np.where(np.isfinite(vol), position, 0.0)


def _sma(c: np.ndarray, window: int) -> np.ndarray:
    """Trailing simple moving average over ``window`` bars ending at t (NaN before ``window`` bars exist)."""
    cs = np.concatenate([[0.0], np.cumsum(c)])
    out = np.full(c.shape, np.nan)
    out[window - 1 :] = (cs[window:] - cs[:-window]) / window
    return out


def ma_crossover(
    close: np.ndarray,
    fast_bars: int = 50,
    slow_bars: int = 200,
    max_position: float = 1.0,
    allow_short: bool = False,
) -> np.ndarray:
    """Trend following: long ``max_position`` while ``SMA_fast(close)_t > SMA_slow(close)_t``, else flat (or short
    when ``allow_short``). Position 0 until the slow average has ``slow_bars`` closes. SMAs are of price levels, so a
    data gap only widens the time a window spans; no return is bridged.
    """
    c = _closes(close)
    cap = _check_max(max_position)
    if not 1 <= fast_bars < slow_bars:
        raise ConfigError(f"baselines: need 1 <= fast_bars < slow_bars, got {fast_bars}, {slow_bars}")
    fast = _sma(c, fast_bars)
    slow = _sma(c, slow_bars)
    ready = np.isfinite(slow)
    low = -cap if allow_short else 0.0
    position = np.where(fast > slow, cap, low)
    return np.where(ready, position, 0.0)


def random_positions(
    n_bars: int,
    seed: int,
    mean_holding_bars: float = 24.0,
    max_position: float = 1.0,
    allow_short: bool = True,
) -> np.ndarray:
    """A seeded random trader with a plausible holding period: a Markov chain over {-max, 0, +max} ({0, +max} when
    long-only) that, at each bar, redraws its state uniformly with probability ``1 / mean_holding_bars`` (so a
    redraw happens every ``mean_holding_bars`` bars on average). Starts flat.

    Uses no market data at all; its row t depends only on the seed and t (draws are made row by row from one
    ``(T, 2)`` uniform array, so a shorter run is a prefix of a longer one).
    """
    if n_bars < 0:
        raise ConfigError(f"baselines: n_bars must be >= 0, got {n_bars}")
    if not mean_holding_bars >= 1:
        raise ConfigError(f"baselines: mean_holding_bars must be >= 1, got {mean_holding_bars}")
    cap = _check_max(max_position)
    levels = np.array([-cap, 0.0, cap]) if allow_short else np.array([0.0, cap])
    u = np.random.default_rng(seed).random((n_bars, 2))
    redraw = u[:, 0] < 1.0 / mean_holding_bars
    choice = np.minimum((u[:, 1] * levels.size).astype(np.int64), levels.size - 1)
    # Position = level chosen at the most recent redraw (flat before the first one).
    idx = np.where(redraw, np.arange(n_bars), -1)
    last = np.maximum.accumulate(idx) if n_bars else idx
    return np.where(last >= 0, levels[choice[np.maximum(last, 0)]], 0.0)


def baseline_positions(
    close: np.ndarray,
    timeframe: Timeframe | str,
    seed: int,
    max_position: float = 1.0,
    gap_before: np.ndarray | None = None,
    target_vol_annual: float = 0.5,
    fast_bars: int = 50,
    slow_bars: int = 200,
    mean_holding_bars: float = 24.0,
) -> dict[str, np.ndarray]:
    """All four baselines' target positions (keys :data:`BASELINE_NAMES`) with shared defaults."""
    c = _closes(close)
    return {
        "buy_and_hold": buy_and_hold(c, max_position),
        "vol_target_buy_and_hold": vol_target_buy_and_hold(
            c, timeframe, target_vol_annual, max_position=max_position, gap_before=gap_before
        ),
        "ma_crossover": ma_crossover(c, fast_bars, slow_bars, max_position),
        "random": random_positions(c.size, seed, mean_holding_bars, max_position),
    }
