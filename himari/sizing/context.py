"""What the sizing and risk layers see at a decision: the policy's signal and the market/account context.

The same two NamedTuples are built by the backtester, the paper-trading loop and the API server, so a decision is
made by one code path everywhere. Shapes: A = assets, L = trailing bars, R = 4 regimes (order
:data:`himari.env.protocol.REGIME_NAMES`).

Timing: a decision at bar t sees data with timestamps <= t only; ``returns[-1]`` is bar t's log return
``log(close_t / close_{t-1})`` (NaN when bar t follows a gap) and the resulting position is filled at t+1.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from himari.data.timeframe import Timeframe
from himari.errors import DataError

SignalKind = Literal["discrete", "continuous", "delta"]


class PolicySignal(NamedTuple):
    """A policy's output for one decision, per asset.

    - ``discrete``: ``values`` are directions in {-1, 0, +1} (SHORT, HOLD, LONG; see :func:`direction_from_action`),
      ``probs`` optionally (A, 3) action probabilities in the order HOLD, LONG, SHORT.
    - ``continuous``: ``values`` are target positions (fraction of equity, signed).
    - ``delta``: ``values`` are raw deltas of the L3 sizer (squashed to ±``delta_max`` by the sizer), applied around
      the volatility-targeted base position whose sign is ``direction`` (default +1, long base).
    """

    kind: SignalKind
    values: np.ndarray  # (A,) float64
    probs: np.ndarray | None = None  # (A, 3) for discrete signals
    direction: np.ndarray | None = None  # (A,) base direction for delta signals


class DecisionContext(NamedTuple):
    """Market and account state at decision bar t (all data with timestamps <= t)."""

    timestamp_ns: int  # open time of bar t (UTC ns)
    timeframe: Timeframe
    returns: np.ndarray  # (L, A) per-bar log returns for bars t-L+1..t; NaN across gaps / before listing
    regime_posterior: np.ndarray  # (A, 4) P(regime_t | data <= t)
    equity: float  # current equity (any currency unit, > 0)
    position: np.ndarray  # (A,) current signed position, fraction of equity
    peak_equity: float | None = None  # running peak of equity; the risk engine tracks it when None
    data_age_bars: float = 0.0  # age of the newest bar relative to the decision time, in bars
    is_stale: bool = False  # the caller's own staleness flag (feed down, missing bar ...)
    strategy_returns: np.ndarray | None = (
        None  # (Ls,) realized per-bar log returns of the strategy (risk budget)
    )
    returns_timestamps_ns: np.ndarray | None = None  # (L,) bar times of ``returns`` rows (None: contiguous bars)


def direction_from_action(action: np.ndarray) -> np.ndarray:
    """Map discrete action codes (HOLD=0, LONG=1, SHORT=2, see :mod:`himari.env.protocol`) to directions 0/+1/-1."""
    action = np.asarray(action)
    return np.select([action == 1, action == 2], [1.0, -1.0], 0.0)


def discrete_signal(action: np.ndarray, probs: np.ndarray | None = None) -> PolicySignal:
    """A :class:`PolicySignal` from discrete action codes (and optional (A, 3) probabilities)."""
    return PolicySignal(
        "discrete", direction_from_action(action), None if probs is None else np.asarray(probs, float)
    )


def continuous_signal(target: np.ndarray) -> PolicySignal:
    return PolicySignal("continuous", np.asarray(target, dtype=np.float64))


def delta_signal(delta_raw: np.ndarray, direction: np.ndarray | None = None) -> PolicySignal:
    return PolicySignal(
        "delta",
        np.asarray(delta_raw, dtype=np.float64),
        None,
        None if direction is None else np.asarray(direction, float),
    )


def shape_of(value: object) -> tuple[int, ...]:
    return value.shape if isinstance(value, np.ndarray) else np.shape(value)


def check_context_shapes(ctx: DecisionContext, n_assets: int) -> None:
    """Raise :class:`~himari.errors.DataError` naming the field when an array of ``ctx`` has the wrong shape."""
    a = n_assets
    returns_shape = shape_of(ctx.returns)
    if len(returns_shape) != 2 or returns_shape[1] != a:
        raise DataError(f"decision context: returns have shape {returns_shape}, expected (L, {a})")
    if shape_of(ctx.regime_posterior) != (a, 4):
        raise DataError(
            f"decision context: regime_posterior has shape {shape_of(ctx.regime_posterior)}, expected ({a}, 4)"
        )
    if shape_of(ctx.position) != (a,):
        raise DataError(f"decision context: position has shape {shape_of(ctx.position)}, expected ({a},)")
    if ctx.strategy_returns is not None and len(shape_of(ctx.strategy_returns)) != 1:
        raise DataError(
            f"decision context: strategy_returns has shape {shape_of(ctx.strategy_returns)}, expected (Ls,)"
        )
