"""Bars <-> per-bar rows, the representation the learned market generators (TimeGAN, Tab-DDPM) model.

A bar ``t`` (not the first of its segment) is the row ``(r_t, u_t, d_t)``::

    r_t = ln(close_t / close_{t-1})                                   log return (open_t = close_{t-1}, 24/7 market)
    u_t = ln(ln(high_t / max(open_t, close_t)) + EPS_WICK)           upper wick, log-compressed
    d_t = ln(ln(min(open_t, close_t) / low_t) + EPS_WICK)            lower wick, log-compressed

and :class:`RowScaler` standardizes the columns with the mean/std of the fit rows (frozen). :func:`rows_to_bars`
inverts the map from a start price; volume is not modelled: synthetic bars carry a seeded log-normal volume that
rises with the bar's range (as in :mod:`himari.data.synth`), so volume features stay defined.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from himari.data.bars import Bars
from himari.errors import DataError
from himari.utils.seeding import make_rng

EPS_WICK = 1e-5
ROW_NAMES: tuple[str, ...] = ("log_return", "upper_wick", "lower_wick")
ROW_CLIP = 8.0  # standardized rows are clipped to +-ROW_CLIP sd before inversion (keeps bars plausible)


def bar_rows(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             gap_before: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(T, 3)`` (see module docstring) and ``ok (T,)``: False on a segment's first bar (no previous close)
    and on non-finite rows. Row t uses bars t-1 and t only."""
    o, h, lo, c = (np.asarray(a, dtype=np.float64) for a in (open_, high, low, close))
    n = len(c)
    rows = np.full((n, 3), np.nan)
    if n == 0:
        return rows, np.zeros(0, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        rows[1:, 0] = np.log(c[1:] / c[:-1])
        top = np.maximum(o, c)
        bottom = np.minimum(o, c)
        rows[:, 1] = np.log(np.maximum(np.log(h / top), 0.0) + EPS_WICK)
        rows[:, 2] = np.log(np.maximum(np.log(bottom / lo), 0.0) + EPS_WICK)
    ok = np.isfinite(rows).all(axis=1) & ~np.asarray(gap_before, dtype=bool)
    ok[0] = False
    return rows, ok


def rows_of_bars(bars: Bars) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bar_rows` of ``bars``."""
    return bar_rows(bars.open, bars.high, bars.low, bars.close, bars.gap_before)


def segment_ids(ok: np.ndarray) -> np.ndarray:
    """Run index of consecutive ``ok`` rows (-1 where not ok): sequences never cross a gap or a warm-up row."""
    ok = np.asarray(ok, dtype=bool)
    starts = ok & ~np.concatenate([[False], ok[:-1]])
    ids = np.cumsum(starts) - 1
    return np.where(ok, ids, -1)


def sequence_windows(rows: np.ndarray, ok: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """All windows ``(N, length, C)`` of consecutive ok rows (never across a gap), every ``stride`` rows."""
    seg = segment_ids(ok)
    out = []
    for s in np.unique(seg[seg >= 0]):
        idx = np.flatnonzero(seg == s)
        if len(idx) < length:
            continue
        starts = np.arange(0, len(idx) - length + 1, stride)
        out.append(rows[idx[starts[:, None] + np.arange(length)[None, :]]])
    if not out:
        raise DataError(f"no run of {length} consecutive valid bars to learn sequences from")
    return np.concatenate(out, axis=0)


class RowScaler(NamedTuple):
    """Frozen per-column standardizer of the rows (fit rows only)."""

    mean: np.ndarray  # (C,)
    std: np.ndarray  # (C,)

    @classmethod
    def fit(cls, rows: np.ndarray) -> RowScaler:
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or len(rows) < 2 or not np.isfinite(rows).all():
            raise DataError(f"RowScaler.fit: need >= 2 finite rows of shape (N, C), got {rows.shape}")
        std = rows.std(axis=0)
        return cls(rows.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, rows: np.ndarray) -> np.ndarray:
        return (np.asarray(rows, dtype=np.float64) - self.mean) / self.std

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(z, dtype=np.float64), -ROW_CLIP, ROW_CLIP) * self.std + self.mean


def rows_to_bars(rows: np.ndarray, start_price: float, start_ns: int, timeframe: str, symbol: str,
                 seed: int, volume_scale: float = 1000.0, source: str = "synthetic") -> Bars:
    """Bars from rows ``(T, 3)`` in natural units (see module docstring): ``close_t = start_price · exp(Σ r)``,
    ``open_t = close_{t-1}``, wicks from ``u, d``; volume ``volume_scale · exp(0.5 ln(range_t / median range) +
    e_t)`` with ``e`` a seeded AR(1) (phi 0.7, sd 0.3)."""
    from himari.data.timeframe import Timeframe

    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 3 or not np.isfinite(rows).all():
        raise DataError(f"rows_to_bars: need finite rows of shape (T, 3), got {rows.shape}")
    if not (np.isfinite(start_price) and start_price > 0):
        raise DataError(f"rows_to_bars: start_price must be > 0, got {start_price}")
    tf = Timeframe.parse(timeframe)
    n = len(rows)
    close = start_price * np.exp(np.cumsum(rows[:, 0]))
    open_ = np.concatenate([[start_price], close[:-1]])
    up = np.maximum(np.exp(rows[:, 1]) - EPS_WICK, 0.0)
    down = np.maximum(np.exp(rows[:, 2]) - EPS_WICK, 0.0)
    high = np.maximum(open_, close) * np.exp(up)
    low = np.minimum(open_, close) * np.exp(-down)
    rng = make_rng(seed)
    shocks = rng.standard_normal(n) * 0.3
    ar = np.empty(n)
    level = 0.0
    for t in range(n):
        level = 0.7 * level + shocks[t]
        ar[t] = level
    bar_range = np.log(high / low) + 1e-12
    volume = volume_scale * np.exp(0.5 * np.log(bar_range / np.median(bar_range)) + ar)
    stamps = (int(start_ns) + np.arange(n, dtype=np.int64) * tf.nanoseconds).astype("datetime64[ns]")
    return Bars.from_arrays(stamps, open_, high, low, close, volume, symbol=symbol, timeframe=tf, source=source)


__all__ = ["ROW_NAMES", "RowScaler", "bar_rows", "rows_of_bars", "rows_to_bars", "segment_ids", "sequence_windows"]
