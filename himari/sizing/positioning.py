"""The positioning layer (L3) as pure, batched functions: one code path for training and trading.

The simulator calls these over N parallel episodes to turn a policy's output into the target position it fills; the
deployed :class:`~himari.sizing.sizer.PositionSizer` calls the same functions with N = 1. Shapes: N streams, A
assets, R = 4 regimes. Per stream and asset::

    σ_bar     = sample std (ddof 1) of the finite per-bar log returns in the trailing ``vol_lookback_bars``
                (NaN with fewer than ``vol_min_bars``)                                   rolling_vol_per_bar
    base      = min(max_position, σ_target / (σ_bar sqrt(P))), 0 where σ is unknown       vol_target_position
    m         = Σ_k P(regime_k) m_k, held inside a dead band (hysteresis)                 regime_multipliers
    discrete  : proposal = direction · base · m · confidence                direction ∈ {-1, 0, +1}
    continuous: proposal = clip(target, ±max_position) [· m]
    delta     : proposal = direction · (base + delta_max tanh(raw)) · m     (or base · (1 + δ))

and the order that is finally sent skips small resizes (:func:`apply_rebalance_band`). The per-bar σ is computed by
one compiled loop (:func:`rolling_vol_kernel`) both for a whole market column (training) and for the trailing window
of one decision (trading), so both see bit-identical numbers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from himari.errors import ConfigError
from himari.sizing.config import SizingConfig
from himari.utils.jit import njit

HOLD_CODE, LONG_CODE, SHORT_CODE = 0, 1, 2


@njit(nogil=True, error_model="numpy")
def rolling_vol_kernel(
    returns: np.ndarray, lookback: int, min_bars: int, out: np.ndarray, first_row: int = 0
) -> None:
    """``out[t, a]``: sample std (ddof 1) of the finite ``returns[t-lookback+1 .. t, a]``; NaN with < min_bars.

    Two passes per window (mean, then squared deviations) in index order, so the result for a row depends only on
    the window's values and never on how long the series before it is. Rows before ``first_row`` are not written
    (a trading decision needs only the last row: the same arithmetic, one window instead of L).
    """
    n_t, n_a = returns.shape
    need = max(min_bars, 2)
    for a in range(n_a):
        for t in range(first_row, n_t):
            lo = max(0, t - lookback + 1)
            n = 0
            s = 0.0
            for k in range(lo, t + 1):
                v = returns[k, a]
                if np.isfinite(v):
                    n += 1
                    s += v
            if n < need:
                out[t, a] = np.nan
                continue
            mean = s / n
            ss = 0.0
            for k in range(lo, t + 1):
                v = returns[k, a]
                if np.isfinite(v):
                    d = v - mean
                    ss += d * d
            out[t, a] = math.sqrt(ss / (n - 1))


def rolling_vol_per_bar(returns: np.ndarray, lookback: int, min_bars: int) -> np.ndarray:
    """(T, A) trailing σ per bar for every row of ``returns`` (T, A) (row t uses rows <= t only)."""
    r = np.ascontiguousarray(returns, dtype=np.float64)
    squeeze = r.ndim == 1
    if squeeze:
        r = r[:, None]
    out = np.empty_like(r)
    rolling_vol_kernel(r, int(lookback), int(min_bars), out)
    return out[:, 0] if squeeze else out


def trailing_vol_per_bar(returns: np.ndarray, lookback: int, min_bars: int) -> np.ndarray:
    """(A,) σ of the last row of ``returns`` (L, A): the same number :func:`rolling_vol_per_bar` gives for that row."""
    window = np.asarray(returns, dtype=np.float64)[-lookback:]
    if window.ndim == 1:
        window = window[:, None]
    if window.shape[0] == 0:
        return np.full(window.shape[1], np.nan)
    window = np.ascontiguousarray(window)
    out = np.empty_like(window)
    rolling_vol_kernel(window, int(lookback), int(min_bars), out, window.shape[0] - 1)
    return out[-1]


def vol_target_position(
    sigma_per_bar: np.ndarray, target_vol_annual: float, periods_per_year: float, max_position: float
) -> np.ndarray:
    """``min(max_position, σ_target / (σ_bar sqrt(P)))``; 0 where σ is unknown (NaN), ``max_position`` where σ = 0."""
    sigma = np.asarray(sigma_per_bar, dtype=np.float64)
    annual = sigma * math.sqrt(periods_per_year)
    raw = np.full(annual.shape, float(max_position))
    np.divide(target_vol_annual, annual, out=raw, where=annual > 0)
    return np.where(np.isfinite(sigma), np.minimum(raw, max_position), 0.0)


def bounded_delta(raw: np.ndarray, delta_max: float = 0.30, squash: str = "tanh") -> np.ndarray:
    """``delta_max · tanh(raw)`` or ``clip(raw, -delta_max, delta_max)``; NaN becomes 0."""
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
    if squash == "tanh":
        return delta_max * np.tanh(raw)
    return np.clip(raw, -delta_max, delta_max)


def apply_delta(base: np.ndarray, delta: np.ndarray, mode: str = "additive") -> np.ndarray:
    """The L3 sizer's position around its base: ``base + delta`` or ``base · (1 + delta)``."""
    b = np.asarray(base, dtype=np.float64)
    d = np.asarray(delta, dtype=np.float64)
    return b + d if mode == "additive" else b * (1.0 + d)


def deadband_update(held: np.ndarray, target: np.ndarray, deadband: float) -> np.ndarray:
    """Move ``held`` to ``target`` where they differ by at least ``deadband`` (or ``held`` is NaN); keep it otherwise."""
    move = ~np.isfinite(held) | (np.abs(target - held) >= deadband)
    return np.where(move, target, held)


def regime_multipliers(
    regime_posterior: np.ndarray, held: np.ndarray, multipliers: tuple[float, ...], deadband: float
) -> tuple[np.ndarray, np.ndarray]:
    """(applied multiplier, new held state), both (..., A), from posteriors (..., A, R).

    ``m = Σ_k p_k m_k`` moved into the held value only when it leaves the dead band. Where the posterior is not a
    finite vector the held value is kept and the most cautious multiplier (the smallest) is applied.
    """
    post = np.asarray(regime_posterior, dtype=np.float64)
    finite = np.isfinite(post).all(axis=-1)
    target = np.where(finite[..., None], post, 0.0) @ np.asarray(multipliers, dtype=np.float64)
    new_held = np.where(finite, deadband_update(held, target, deadband), held)
    applied = np.where(finite, new_held, float(min(multipliers)))
    return applied, new_held


def discrete_directions(
    action: np.ndarray, position: np.ndarray, hold_mode: str = "keep", allow_short: bool = True
) -> np.ndarray:
    """Directions -1/0/+1 (..., A) from HOLD/LONG/SHORT codes.

    HOLD keeps the current direction when ``hold_mode == "keep"`` (the size still follows the base), else goes flat;
    without shorting, SHORT means "no position".
    """
    act = np.asarray(action)
    pos = np.asarray(position, dtype=np.float64)
    direction = np.where(act == LONG_CODE, 1.0, np.where(act == SHORT_CODE, -1.0, 0.0))
    if hold_mode == "keep":
        direction = np.where(act == HOLD_CODE, np.sign(pos), direction)
    if not allow_short:
        direction = np.maximum(direction, 0.0)
    return direction


class Proposal(NamedTuple):
    """The positioning layer's output for N streams (arrays (N, A))."""

    proposal: np.ndarray  # signed proposed position, fraction of equity
    direction: np.ndarray  # sign of the signal (-1, 0, +1)
    base: np.ndarray  # vol-targeted base size (>= 0)
    multiplier: np.ndarray  # applied regime multiplier
    held: np.ndarray  # new hysteresis state of the multiplier
    confidence: np.ndarray


def propose_positions(
    kind: str,
    values: np.ndarray,
    base: np.ndarray,
    regime_posterior: np.ndarray,
    held: np.ndarray,
    position: np.ndarray,
    config: SizingConfig,
    probs: np.ndarray | None = None,
    direction: np.ndarray | None = None,
) -> Proposal:
    """Proposed positions (N, A) for a batch of policy outputs (see the module docstring).

    ``values``: directions -1/0/+1 (``discrete``), target positions (``continuous``) or raw deltas (``delta``);
    ``probs`` (N, A, 3) HOLD/LONG/SHORT probabilities for confidence sizing; ``direction`` (N, A) the base direction
    of a delta signal (default +1, long). ``position`` is the current position (HOLD with ``hold_keeps_position``).
    """
    cfg = config
    mult, new_held = regime_multipliers(regime_posterior, held, cfg.regime_multipliers, cfg.regime_deadband)
    vals = np.asarray(values, dtype=np.float64)
    vals = np.where(np.isfinite(vals), vals, 0.0)
    conf = np.ones(vals.shape)
    if kind == "discrete":
        sign = np.sign(vals)
        if cfg.use_confidence and probs is not None:
            p = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0)
            p_long, p_short = p[..., 1], p[..., 2]
            conf = np.clip(np.where(sign > 0, p_long - p_short, p_short - p_long), 0.0, 1.0)
        proposal = sign * base * mult * conf
        if cfg.hold_keeps_position:
            proposal = np.where(sign == 0, np.asarray(position, dtype=np.float64), proposal)
    elif kind == "continuous":
        target = np.clip(vals, -cfg.max_position, cfg.max_position)
        sign = np.sign(target)
        proposal = target * mult if cfg.scale_continuous_by_regime else target
    elif kind == "delta":
        delta = bounded_delta(vals, cfg.delta_max, cfg.delta_squash)
        sign = np.ones(vals.shape) if direction is None else np.sign(np.asarray(direction, dtype=np.float64))
        proposal = sign * apply_delta(base, delta, cfg.delta_mode) * mult
    else:
        raise ConfigError(f"policy signal: unknown kind {kind!r} (expected discrete, continuous or delta)")
    return Proposal(proposal, sign, base, mult, new_held, conf)


def apply_cost_controls(
    target: np.ndarray,
    pre_fill: np.ndarray,
    time_in_position: np.ndarray,
    decision_timestamp_ns: np.ndarray,
    bar_ns: int,
    config: SizingConfig,
) -> np.ndarray:
    """The order actually sent for targets (N, A) decided at ``decision_timestamp_ns`` (N,): positions change only on
    decision bars (``decision_every_bars``; a flat target always goes through), are not flipped before
    ``min_hold_bars`` (``time_in_position`` (N, A)), and small resizes are skipped (:func:`apply_rebalance_band`).
    "Keep" means the target becomes the drifted position just before the fill (``pre_fill``), so nothing trades."""
    keep = np.zeros(np.shape(target), dtype=bool)
    if config.decision_every_bars > 1:
        bars = np.asarray(decision_timestamp_ns, dtype=np.int64) // int(bar_ns)
        off = (bars % config.decision_every_bars) != 0
        keep |= off[:, None] & (target != 0)
    if config.min_hold_bars > 0:
        flip = np.sign(target) * np.sign(pre_fill) < 0
        keep |= flip & (np.asarray(time_in_position) < config.min_hold_bars)
    return apply_rebalance_band(np.where(keep, pre_fill, target), pre_fill, config.rebalance_band)


def apply_rebalance_band(target: np.ndarray, pre_fill: np.ndarray, band: float) -> np.ndarray:
    """Skip small resizes: where ``|target - position| < band``, the sign is unchanged and the target is not flat,
    the order becomes "keep" (target = the drifted position before the fill, so nothing trades)."""
    if band <= 0:
        return target
    small = (np.abs(target - pre_fill) < band) & (np.sign(target) == np.sign(pre_fill)) & (target != 0)
    return np.where(small, pre_fill, target)
