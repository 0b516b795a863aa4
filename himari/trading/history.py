"""A bounded, validated history of closed bars per symbol (the server's kept bars and the paper loop's buffer).

Appending checks what a single bar cannot: timestamps on the timeframe grid, strictly increasing, no duplicates and
(unless ``allow_gaps``) no missing bars. Every problem raises :class:`~himari.errors.DataError` naming the symbol,
the row and the problem. The history keeps the last ``capacity`` bars (oldest dropped), so the work per decision is
bounded however long the process runs. :meth:`BarHistory.bars` builds a :class:`~himari.data.bars.Bars` once per
change and caches it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from himari.data.bars import Bars
from himari.data.timeframe import Timeframe
from himari.data.validate import DEFAULT_PLAUSIBILITY, PlausibilityConfig, implausible_rows
from himari.errors import DataError


def _fmt(ts_ns: int) -> str:
    return f"{pd.Timestamp(int(ts_ns), tz='UTC'):%Y-%m-%dT%H:%M:%SZ}"


def check_bar_sequence(
    ts_ns: np.ndarray, timeframe: Timeframe, symbol: str, allow_gaps: bool, previous_ts_ns: int | None = None
) -> None:
    """Raise :class:`DataError` for off-grid, unsorted, duplicate or (unless allowed) gapped timestamps.

    Rows are 0-based positions in ``ts_ns``; ``previous_ts_ns`` is the last bar already held (if any).
    """
    step = timeframe.nanoseconds
    off_grid = np.flatnonzero(ts_ns % step != 0)
    if len(off_grid):
        i = int(off_grid[0])
        raise DataError(f"timestamp {_fmt(ts_ns[i])} is not aligned to {timeframe} bars", f"bars[{symbol}]", i)
    prev = np.empty_like(ts_ns)
    if len(ts_ns):
        prev[1:] = ts_ns[:-1]
        prev[0] = previous_ts_ns if previous_ts_ns is not None else ts_ns[0] - step
    diffs = ts_ns - prev
    bad = np.flatnonzero(diffs <= 0)
    if len(bad):
        i = int(bad[0])
        kind = "duplicates" if diffs[i] == 0 else "is earlier than"
        raise DataError(
            f"timestamp {_fmt(ts_ns[i])} {kind} the previous bar's {_fmt(prev[i])} (bars must be sorted, oldest first)",
            f"bars[{symbol}]",
            i,
        )
    if not allow_gaps:
        gaps = np.flatnonzero(diffs != step)
        if len(gaps):
            i = int(gaps[0])
            missing = int(diffs[i] // step) - 1
            raise DataError(
                f"gap: {missing} bar(s) missing between {_fmt(prev[i])} and {_fmt(ts_ns[i])}",
                f"bars[{symbol}]",
                i,
            )


def check_plausible(
    ohlcv: np.ndarray, symbol: str, plausibility: PlausibilityConfig, previous_close: float | None = None
) -> None:
    """Raise :class:`DataError` naming the first implausible row (price range, one-bar move; see
    :class:`~himari.data.validate.PlausibilityConfig`). ``previous_close``: the last held bar's close."""
    found = implausible_rows(ohlcv, plausibility, previous_close)
    if found:
        row, column, message = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DataError(f"{column}: {message}{more}", f"bars[{symbol}]", row)


class BarHistory:
    """The last ``capacity`` closed bars of one symbol, as preallocated arrays (oldest first)."""

    def __init__(
        self,
        symbol: str,
        timeframe: Timeframe | str,
        capacity: int,
        allow_gaps: bool = False,
        plausibility: PlausibilityConfig = DEFAULT_PLAUSIBILITY,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.symbol = symbol
        self.plausibility = plausibility
        self.timeframe = Timeframe.parse(timeframe)
        self.capacity = int(capacity)
        self.allow_gaps = allow_gaps
        self._ts = np.zeros(2 * self.capacity, dtype=np.int64)
        self._ohlcv = np.zeros((2 * self.capacity, 5), dtype=np.float64)
        self._start = 0
        self._stop = 0
        self._cached: Bars | None = None
        self._digest: bytes | None = None

    def __len__(self) -> int:
        return self._stop - self._start

    @property
    def last_timestamp_ns(self) -> int | None:
        return int(self._ts[self._stop - 1]) if len(self) else None

    @property
    def first_timestamp_ns(self) -> int | None:
        return int(self._ts[self._start]) if len(self) else None

    def clear(self) -> None:
        self._start = self._stop = 0
        self._cached = None
        self._digest = None

    def extend(self, ts_ns: np.ndarray, ohlcv: np.ndarray, skip_known: bool = False) -> tuple[int, int]:
        """Append rows (``ohlcv`` (n, 5): open, high, low, close, volume); return (appended, skipped).

        With ``skip_known``, rows at or before the last held timestamp are skipped (idempotent re-delivery); a
        skipped row whose values differ from the held bar raises :class:`DataError` (the feed rewrote history).
        """
        ts_ns = np.asarray(ts_ns, dtype=np.int64)
        ohlcv = np.asarray(ohlcv, dtype=np.float64).reshape(len(ts_ns), 5)
        skipped = 0
        last = self.last_timestamp_ns
        if skip_known and last is not None and len(ts_ns):
            known = ts_ns <= last
            for i in np.flatnonzero(known):
                held = np.flatnonzero(self._ts[self._start : self._stop] == ts_ns[i])
                if len(held) and not np.allclose(self._ohlcv[self._start + held[0]], ohlcv[i], rtol=1e-12, atol=0):
                    raise DataError(
                        f"bar {_fmt(ts_ns[i])} differs from the bar already held for that time", f"bars[{self.symbol}]", int(i)
                    )
            skipped = int(known.sum())
            ts_ns, ohlcv = ts_ns[~known], ohlcv[~known]
        check_bar_sequence(ts_ns, self.timeframe, self.symbol, self.allow_gaps, last)
        previous_close = float(self._ohlcv[self._stop - 1, 3]) if len(self) else None
        check_plausible(ohlcv, self.symbol, self.plausibility, previous_close)
        n = len(ts_ns)
        if n == 0:
            return 0, skipped
        if n >= self.capacity:
            ts_ns, ohlcv = ts_ns[-self.capacity :], ohlcv[-self.capacity :]
            self._start, self._stop = 0, 0
            n = self.capacity
        if self._stop + n > len(self._ts):
            keep = min(len(self), self.capacity - n)
            self._ts[:keep] = self._ts[self._stop - keep : self._stop]
            self._ohlcv[:keep] = self._ohlcv[self._stop - keep : self._stop]
            self._start, self._stop = 0, keep
        self._ts[self._stop : self._stop + n] = ts_ns
        self._ohlcv[self._stop : self._stop + n] = ohlcv
        self._stop += n
        if len(self) > self.capacity:
            self._start = self._stop - self.capacity
        self._cached = None
        self._digest = None
        return n, skipped

    def append(self, ts_ns: int, open_: float, high: float, low: float, close: float, volume: float) -> None:
        self.extend(np.array([ts_ns]), np.array([[open_, high, low, close, volume]]))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (timestamps_ns (n,), ohlcv (n, 5))."""
        return self._ts[self._start : self._stop].copy(), self._ohlcv[self._start : self._stop].copy()

    def bars(self) -> Bars:
        """The held bars as :class:`Bars` (cached until the next change)."""
        if self._cached is None:
            if not len(self):
                raise DataError(f"no bars held for {self.symbol}; POST /v1/bars first", f"bars[{self.symbol}]")
            ts, v = self.arrays()
            self._cached = Bars.from_arrays(
                ts, v[:, 0], v[:, 1], v[:, 2], v[:, 3], v[:, 4], symbol=self.symbol, timeframe=self.timeframe,
                source=f"history[{self.symbol}]",
            )
        return self._cached


    def digest(self) -> bytes:
        """Content digest of the held bars (cached until the next change); see :func:`symbol_digest`."""
        if self._digest is None:
            self._digest = symbol_digest(self.bars())
        return self._digest


def bars_from_rows(
    symbol: str,
    timeframe: Timeframe,
    rows: Sequence[object],
    allow_gaps: bool = False,
    plausibility: PlausibilityConfig = DEFAULT_PLAUSIBILITY,
) -> Bars:
    """Bars from validated :class:`~himari.serve.schemas.BarIn` rows, after the sequence checks."""
    ts = np.fromiter((r.timestamp_ns for r in rows), dtype=np.int64, count=len(rows))  # type: ignore[attr-defined]
    values = np.array(
        [(r.open, r.high, r.low, r.close, r.volume) for r in rows], dtype=np.float64  # type: ignore[attr-defined]
    ).reshape(len(rows), 5)
    check_bar_sequence(ts, timeframe, symbol, allow_gaps)
    check_plausible(values, symbol, plausibility)
    return Bars.from_arrays(
        ts, values[:, 0], values[:, 1], values[:, 2], values[:, 3], values[:, 4], symbol=symbol, timeframe=timeframe,
        source=f"request.bars[{symbol}]",
    )


def symbol_digest(bars: Bars) -> bytes:
    """BLAKE2b digest of one symbol's timestamps and OHLCV values (content-exact)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(bars.symbol.encode())
    h.update(np.ascontiguousarray(bars.timestamps_ns).tobytes())
    h.update(np.ascontiguousarray(bars.frame.to_numpy(dtype=np.float64)).tobytes())
    return h.digest()
