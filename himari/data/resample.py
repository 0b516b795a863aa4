"""OHLCV resampling to a coarser timeframe on UTC bucket boundaries (e.g. 1h -> 4h, 1d).

Buckets are ``[k * target, (k + 1) * target)`` counted from the Unix epoch in UTC, so 4h bars open at 00, 04, ...,
20 UTC and daily bars at 00:00 UTC (weekly buckets open on Monday 00:00 UTC). Aggregation per bucket: open = first
open, high = max high, low = min low, close = last close, volume = sum.

Timing: like every bar, a resampled bar is stamped with its open time and is known only at its close (a 4h bar
stamped 04:00 is complete at 08:00). Complete buckets are truncation invariant: resampling ``bars[:k]`` gives the
same complete bars as resampling all of ``bars`` (the partial last bucket is dropped by default, never extrapolated).

Missing-bar policy: a bucket is **complete** when it holds all ``target / source`` source bars. An incomplete bucket
(a gap inside it, or the partial first/last bucket of the file) would silently misstate the range and volume, so by
default it is **dropped** (``incomplete="drop"``); ``incomplete="keep"`` keeps it. Either way every incomplete bucket
is reported (open time, bars present / expected), and the kept ones are flagged in ``ResampleResult.complete``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from himari.data.bars import OHLCV_COLUMNS, Bars
from himari.data.timeframe import Timeframe
from himari.errors import ConfigError

IncompletePolicy = Literal["drop", "keep"]
_WEEK_NS = 7 * 86400 * 1_000_000_000
_MONDAY_OFFSET_NS = 4 * 86400 * 1_000_000_000  # 1970-01-01 was a Thursday; Monday 1970-01-05 anchors weeks


@dataclass(frozen=True)
class IncompleteBucket:
    start: pd.Timestamp
    bars_present: int
    bars_expected: int


@dataclass(frozen=True)
class ResampleResult:
    bars: Bars
    complete: np.ndarray  # bool per output bar
    incomplete: tuple[IncompleteBucket, ...]
    dropped: int
    policy: str

    def report(self, max_listed: int = 20) -> str:
        lines = [
            f"resampled {self.bars.symbol} to {self.bars.timeframe}: {len(self.bars)} bars; "
            f"{len(self.incomplete)} incomplete buckets ({'dropped' if self.policy == 'drop' else 'kept, flagged'})"
        ]
        for b in self.incomplete[:max_listed]:
            lines.append(f"  {b.start:%Y-%m-%dT%H:%MZ}: {b.bars_present}/{b.bars_expected} source bars")
        if len(self.incomplete) > max_listed:
            lines.append(f"  ... and {len(self.incomplete) - max_listed} more")
        return "\n".join(lines)


def bucket_starts(timestamps_ns: np.ndarray, target: Timeframe) -> np.ndarray:
    """Open time (int64 ns, UTC) of the target bucket each timestamp falls in."""
    step = target.nanoseconds
    offset = _MONDAY_OFFSET_NS if step % _WEEK_NS == 0 else 0
    return ((timestamps_ns - offset) // step) * step + offset


def resample_bars(bars: Bars, to: str | Timeframe, incomplete: IncompletePolicy = "drop") -> ResampleResult:
    """Aggregate ``bars`` to timeframe ``to`` (a whole multiple of the source timeframe); see module docstring."""
    target = Timeframe.parse(to)
    source = bars.timeframe
    if incomplete not in ("drop", "keep"):
        raise ConfigError(f"incomplete policy must be 'drop' or 'keep', got {incomplete!r}")
    if target.seconds < source.seconds or target.seconds % source.seconds != 0:
        raise ConfigError(f"cannot resample {source} bars to {target}: target must be a whole multiple of the source")
    if target.seconds > 86400 and target.seconds % (7 * 86400) != 0:
        raise ConfigError(f"target {target} is longer than a day and not whole weeks; UTC buckets are undefined")
    expected = target.seconds // source.seconds
    ts = bars.timestamps_ns
    if len(ts) == 0:
        empty = bars.with_frame(bars.frame.iloc[:0])
        return ResampleResult(Bars(empty.frame, bars.symbol, target, bars.source), np.zeros(0, bool), (), 0, incomplete)
    keys = bucket_starts(ts, target)
    starts_idx = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts_idx, len(ts)])
    ends_idx = starts_idx + counts - 1
    o, h, low, c, v = bars.open, bars.high, bars.low, bars.close, bars.volume
    agg = {
        "open": o[starts_idx],
        "high": np.maximum.reduceat(h, starts_idx),
        "low": np.minimum.reduceat(low, starts_idx),
        "close": c[ends_idx],
        "volume": np.add.reduceat(v, starts_idx),
    }
    complete = counts == expected
    bucket_ts = keys[starts_idx]
    incomplete_list = tuple(
        IncompleteBucket(pd.Timestamp(int(bucket_ts[i]), tz="UTC"), int(counts[i]), int(expected))
        for i in np.flatnonzero(~complete)
    )
    keep = complete if incomplete == "drop" else np.ones(len(complete), dtype=bool)
    index = pd.DatetimeIndex(pd.to_datetime(bucket_ts[keep], utc=True), name="timestamp").as_unit("ns")
    frame = pd.DataFrame({k: agg[k][keep] for k in OHLCV_COLUMNS}, index=index).astype(np.float64)
    out = Bars(frame=frame, symbol=bars.symbol, timeframe=target, source=bars.source,
               repairs=(*bars.repairs, f"resampled {source} -> {target} ({incomplete} incomplete buckets)"))
    return ResampleResult(out, complete[keep], incomplete_list, int((~keep).sum()), incomplete)
