"""The canonical OHLCV frame.

:class:`Bars` holds one symbol at one timeframe: a pandas DataFrame indexed by ``timestamp`` (UTC, the bar's **open**
time; the bar covers ``[timestamp, timestamp + timeframe)``) with float64 columns ``open, high, low, close, volume``
(volume in the base asset), strictly increasing, no duplicates, no NaN, positive prices.

Gap policy (used by every later layer): missing bars are never filled. ``gap_before[i]`` is True when bar ``i`` does
not directly follow bar ``i-1``; :meth:`Bars.log_returns` is NaN across a gap, and feature code treats a gap as a
break in the series (see ``himari.features``). Prices are never forward-filled before a split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from himari.data.timeframe import Timeframe
from himari.errors import DataError

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")


def to_utc_timestamp(value: str | pd.Timestamp | np.datetime64 | None) -> pd.Timestamp | None:
    """Parse a date/time as UTC (naive input is taken as UTC; an explicit other offset is converted)."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        return ts.tz_localize("UTC")
    return ts.tz_convert("UTC")


@dataclass(frozen=True)
class Bars:
    """One symbol's OHLCV bars at one timeframe (see module docstring for the contract)."""

    frame: pd.DataFrame
    symbol: str
    timeframe: Timeframe
    source: str = ""
    repairs: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        idx = self.frame.index
        if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None or str(idx.tz) != "UTC":
            raise DataError("Bars.frame must have a UTC DatetimeIndex named 'timestamp'", self.source or None)
        if list(self.frame.columns) != list(OHLCV_COLUMNS):
            raise DataError(f"Bars.frame must have columns {OHLCV_COLUMNS}", self.source or None)
        if len(idx) > 1 and not idx.is_monotonic_increasing:
            raise DataError("Bars.frame index must be sorted", self.source or None)

    # -- arrays (float64 views) ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    @property
    def open(self) -> np.ndarray:
        return self.frame["open"].to_numpy(dtype=np.float64)

    @property
    def high(self) -> np.ndarray:
        return self.frame["high"].to_numpy(dtype=np.float64)

    @property
    def low(self) -> np.ndarray:
        return self.frame["low"].to_numpy(dtype=np.float64)

    @property
    def close(self) -> np.ndarray:
        return self.frame["close"].to_numpy(dtype=np.float64)

    @property
    def volume(self) -> np.ndarray:
        return self.frame["volume"].to_numpy(dtype=np.float64)

    @property
    def timestamps_ns(self) -> np.ndarray:
        """Bar open times as int64 nanoseconds since the epoch (UTC)."""
        return self.index.as_unit("ns").asi8.copy()

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.frame.index  # type: ignore[return-value]

    @property
    def gap_before(self) -> np.ndarray:
        """Bool (T,): bar i does not directly follow bar i-1 (one or more bars missing). False for bar 0."""
        ts = self.timestamps_ns
        out = np.zeros(len(ts), dtype=bool)
        if len(ts) > 1:
            out[1:] = np.diff(ts) != self.timeframe.nanoseconds
        return out

    @property
    def segment_id(self) -> np.ndarray:
        """Int (T,): index of the contiguous run of bars each bar belongs to (increments after every gap)."""
        return np.cumsum(self.gap_before).astype(np.int64)

    def log_returns(self) -> np.ndarray:
        """Close-to-close log return per bar; NaN for bar 0 and for the first bar after a gap."""
        close = self.close
        out = np.full(len(close), np.nan)
        if len(close) > 1:
            out[1:] = np.log(close[1:] / close[:-1])
            out[self.gap_before] = np.nan
        return out

    # -- slicing ------------------------------------------------------------------------------------------------
    def between(self, start: object = None, end: object = None) -> Bars:
        """Bars with ``start <= timestamp < end`` (either bound optional, UTC)."""
        frame = self.frame
        s = to_utc_timestamp(start)  # type: ignore[arg-type]
        e = to_utc_timestamp(end)  # type: ignore[arg-type]
        mask = np.ones(len(frame), dtype=bool)
        if s is not None:
            mask &= frame.index >= s
        if e is not None:
            mask &= frame.index < e
        return self.with_frame(frame.loc[mask])

    def head(self, n: int) -> Bars:
        return self.with_frame(self.frame.iloc[:n])

    def with_frame(self, frame: pd.DataFrame) -> Bars:
        return Bars(frame=frame, symbol=self.symbol, timeframe=self.timeframe, source=self.source, repairs=self.repairs)

    @property
    def start(self) -> pd.Timestamp:
        return self.frame.index[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.frame.index[-1]

    def describe_range(self) -> str:
        if len(self) == 0:
            return f"{self.symbol} {self.timeframe}: empty"
        return f"{self.symbol} {self.timeframe}: {self.start:%Y-%m-%dT%H:%MZ} -> {self.end:%Y-%m-%dT%H:%MZ}, {len(self)} bars"

    @classmethod
    def from_arrays(
        cls,
        timestamps: np.ndarray | pd.DatetimeIndex,
        open: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        symbol: str,
        timeframe: str | Timeframe,
        source: str = "",
    ) -> Bars:
        index = pd.DatetimeIndex(pd.to_datetime(timestamps, utc=True), name="timestamp").as_unit("ns")
        frame = pd.DataFrame(
            {"open": open, "high": high, "low": low, "close": close, "volume": volume}, index=index
        ).astype(np.float64)
        return cls(frame=frame, symbol=symbol, timeframe=Timeframe.parse(timeframe), source=source)
