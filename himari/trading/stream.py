"""Market data for the trailing-history consumers (paper trading, the API), updated bar by bar.

A decision reads the tactical rows (features, regime posterior, validity) of the last bars only, but rebuilding them
with :meth:`TacticalPipeline.transform` over the trailing ``history_bars`` (3,000) costs 60-130 ms per new bar.
:class:`MarketStream` keeps one :class:`~himari.tactical.incremental.TacticalStream` per symbol and folds in each new
bar (~2 ms), then aligns the kept rows with the bars as :meth:`MarketData.from_frames` does for a batch transform.

**Rows are a function of the bars, not of when the process started.** A stream updated for hours and a stream
rebuilt after a restart must give the same numbers (paper trading resumes bit-exactly after kill -9), but the
incremental arithmetic differs from the batch one in the last bits. So the rows are *anchored*: bars are grouped in
epochs of ``anchor_every`` bars on the absolute bar clock (``(timestamp // bar) // P``); at the first bar ``a`` of
each epoch the stream is rebuilt with the batch code from the ``L = history_bars - P`` bars ending at ``a``
(:meth:`TacticalPipeline.transform` for their rows, :meth:`TacticalStream.from_history` for the state), and every
later bar of the epoch is one :meth:`TacticalStream.update`. The rows at bar t therefore depend only on the bars
``a(t)-L+1 .. t``, which any caller holding the trailing ``history_bars`` bars has: a fresh process rebuilds at
``a(t)`` and replays the epoch's bars (at most P-1 updates) to the same floats. A rebuild costs one batch transform,
once per P bars (0.4 % of bars at P = 256).

A history that does not continue the kept one (another client's bars, a reset) is either rebuilt the anchored way
(``cold="anchored"``: trading sessions) or, with ``cold="batch"`` (the API, whose requests may carry unrelated
histories), transformed in batch without touching the kept stream unless it ends after the kept one (the feed
moved on: the stream is rebuilt the anchored way and follows it). Rows equal the batch transform's to
float roundoff (``tests/trading/test_stream.py`` checks the decisions on real data).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from himari.data.bars import Bars
from himari.data.timeframe import Timeframe
from himari.env.market import MarketData
from himari.tactical.incremental import TacticalStream
from himari.tactical.pipeline import TacticalPipeline

ANCHOR_EVERY_BARS = 256
ColdStart = Literal["anchored", "batch"]


@dataclass(frozen=True)
class StreamFrame:
    """Tactical rows kept for one symbol (the :class:`~himari.env.market.TacticalFrameLike` protocol)."""

    timestamps_ns: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    regime_posterior: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class BarArrays:
    """The arrays of one symbol's :class:`Bars` that :meth:`MarketData.from_frames` reads, extracted once."""

    symbol: str
    timeframe: Timeframe
    source: str
    timestamps_ns: np.ndarray
    ohlcv: np.ndarray  # (T, 5) open, high, low, close, volume

    @classmethod
    def of(cls, bars: Bars) -> BarArrays:
        ohlcv = bars.frame.to_numpy(dtype=np.float64)  # columns OHLCV_COLUMNS, one pass over the frame
        return cls(bars.symbol, bars.timeframe, bars.source, bars.timestamps_ns, ohlcv)

    def __len__(self) -> int:
        return int(self.timestamps_ns.shape[0])

    def since(self, timestamp_ns: int) -> BarArrays:
        """The bars at or after ``timestamp_ns``."""
        i = int(np.searchsorted(self.timestamps_ns, timestamp_ns))
        return BarArrays(self.symbol, self.timeframe, self.source, self.timestamps_ns[i:], self.ohlcv[i:])

    @property
    def open(self) -> np.ndarray:
        return self.ohlcv[:, 0]

    @property
    def high(self) -> np.ndarray:
        return self.ohlcv[:, 1]

    @property
    def low(self) -> np.ndarray:
        return self.ohlcv[:, 2]

    @property
    def close(self) -> np.ndarray:
        return self.ohlcv[:, 3]


def anchor_period(history_bars: int, anchor_every: int = ANCHOR_EVERY_BARS) -> int:
    """Bars per epoch: ``anchor_every``, at most a quarter of the history (short histories in tests)."""
    return max(1, min(int(anchor_every), int(history_bars) // 4))


class SymbolStream:
    """One symbol's anchored tactical stream and its kept rows (see the module docstring)."""

    def __init__(self, pipeline: TacticalPipeline, history_bars: int, anchor_every: int = ANCHOR_EVERY_BARS) -> None:
        self.pipeline = pipeline
        self.history_bars = int(history_bars)
        self.period = anchor_period(history_bars, anchor_every)
        self.anchor_window = max(1, self.history_bars - self.period)
        self.feature_names = tuple(pipeline.feature_names)
        self.stream: TacticalStream | None = None
        self.epoch: int | None = None
        self.last_ts: int | None = None  # the last bar folded in: timestamp and (5,) open, high, low, close, volume
        self.last_ohlcv: np.ndarray | None = None
        cap = 2 * self.history_bars + 1
        self._ts = np.zeros(cap, dtype=np.int64)
        self._features = np.zeros((cap, len(self.feature_names)), dtype=np.float32)
        self._posterior = np.zeros((cap, 4), dtype=np.float32)
        self._valid = np.zeros(cap, dtype=bool)
        self._n = 0

    # -- kept rows ------------------------------------------------------------------------------------------------
    def _append(self, ts: int, features: np.ndarray, posterior: np.ndarray, valid: bool) -> None:
        if self._n == self._ts.shape[0]:  # full: keep the newest history_bars rows (one move per history_bars bars)
            keep = self.history_bars
            for arr in (self._ts, self._features, self._posterior, self._valid):
                arr[:keep] = arr[self._n - keep : self._n]
            self._n = keep
        i = self._n
        self._ts[i] = ts
        self._features[i] = features
        self._posterior[i] = posterior
        self._valid[i] = valid
        self._n += 1

    def frame(self) -> StreamFrame:
        """The kept rows (views, oldest first)."""
        n = self._n
        return StreamFrame(self._ts[:n], self._features[:n], self.feature_names, self._posterior[:n], self._valid[:n])

    # -- folding bars in ------------------------------------------------------------------------------------------
    def _epochs(self, timestamps_ns: np.ndarray, bar_ns: int) -> np.ndarray:
        return (timestamps_ns // bar_ns) // self.period

    def continues(self, ts: np.ndarray, ohlcv: np.ndarray) -> int | None:
        """Index in ``ts`` of the kept stream's last bar when ``ts``/``ohlcv`` hold it unchanged, else None."""
        if self.stream is None or self.last_ts is None:
            return None
        k = int(np.searchsorted(ts, self.last_ts))
        if k >= len(ts) or int(ts[k]) != self.last_ts or not np.array_equal(ohlcv[k], self.last_ohlcv):
            return None
        return k

    def moves_on(self, ts: np.ndarray) -> bool:
        """Whether a history that does not continue the kept stream should replace it under ``cold="batch"``: no
        stream yet, or the history ends after the kept one (the feed moved on, e.g. after a reset of the kept
        bars); an older or equally recent history (another client's bars) is transformed in batch instead."""
        return self.stream is None or self.last_ts is None or int(ts[-1]) > self.last_ts

    def _rebuild(self, bars: Bars, ts: np.ndarray, ohlcv: np.ndarray, anchor: int) -> None:
        """Batch state and rows at bar ``anchor`` from the ``anchor_window`` bars ending there."""
        lo = max(0, anchor - self.anchor_window + 1)
        window = bars.with_frame(bars.frame.iloc[lo : anchor + 1])
        frame = self.pipeline.transform(window)
        self.stream = TacticalStream.from_history(self.pipeline, window)
        self._n = 0
        for i in range(len(frame.timestamps_ns)):
            self._append(int(frame.timestamps_ns[i]), frame.features[i], frame.regime_posterior[i],
                         bool(frame.valid[i]))
        self.last_ts, self.last_ohlcv = int(ts[anchor]), ohlcv[anchor].copy()

    def _update(self, ts: np.ndarray, ohlcv: np.ndarray, i: int) -> None:
        assert self.stream is not None
        o, h, lo, c, v = ohlcv[i].tolist()
        row = self.stream.update(int(ts[i]), o, h, lo, c, v)
        self._append(row.timestamp_ns, row.features, row.regime_posterior, row.valid)
        self.last_ts, self.last_ohlcv = int(ts[i]), ohlcv[i].copy()

    def advance(self, bars: Bars, arrays: BarArrays, cold: ColdStart) -> StreamFrame | None:
        """Fold ``bars`` (the trailing history, last row = the newest bar; ``arrays`` its arrays) in and return the
        rows; None when the bars do not continue the kept stream and ``cold == "batch"`` (the caller transforms
        them in batch)."""
        ts, ohlcv = arrays.timestamps_ns, arrays.ohlcv
        bar_ns = bars.timeframe.nanoseconds
        k = self.continues(ts, ohlcv)
        if k is None:
            if cold == "batch" and not self.moves_on(ts):
                return None
            epochs = self._epochs(ts, bar_ns)
            anchor = int(np.searchsorted(epochs, epochs[-1]))  # the first bar of the newest bar's epoch
            self._rebuild(bars, ts, ohlcv, anchor)
            self.epoch = int(epochs[anchor])
            k = anchor
        for i in range(k + 1, len(ts)):
            epoch = int(ts[i] // bar_ns // self.period)
            if epoch != self.epoch:
                self._rebuild(bars, ts, ohlcv, i)
                self.epoch = epoch
            else:
                self._update(ts, ohlcv, i)
        return self.frame()


class MarketStream:
    """Per-symbol :class:`SymbolStream` s of a bundle's tactical pipelines; ``market(bars)`` is thread-safe."""

    def __init__(self, pipelines: Mapping[str, TacticalPipeline], symbols: tuple[str, ...], history_bars: int,
                 anchor_every: int = ANCHOR_EVERY_BARS) -> None:
        self.symbols = tuple(symbols)
        self.history_bars = int(history_bars)
        self.streams = {s: SymbolStream(pipelines[s], history_bars, anchor_every) for s in self.symbols}
        self._lock = threading.Lock()

    def market(self, bars_by_symbol: Mapping[str, Bars], cold: ColdStart = "anchored",
               market_bars: int | None = None) -> MarketData | None:
        """MarketData of the (already trimmed) bars with the streamed rows; None (kept state untouched) when
        ``cold == "batch"`` and some symbol's bars do not continue its stream. ``market_bars``: the market holds
        only the trailing bars (the streams still see all of them); a decision that reads no row before them
        decides exactly as on the whole history."""
        bars_list = [bars_by_symbol[s] for s in self.symbols]
        arrays = [BarArrays.of(b) for b in bars_list]
        with self._lock:
            if cold == "batch":
                for s, arr in zip(self.symbols, arrays, strict=True):
                    st = self.streams[s]
                    if st.continues(arr.timestamps_ns, arr.ohlcv) is None and not st.moves_on(arr.timestamps_ns):
                        return None
            frames = []
            for s, bars, arr in zip(self.symbols, bars_list, arrays, strict=True):
                frame = self.streams[s].advance(bars, arr, cold)
                assert frame is not None
                frames.append(frame)
            if market_bars is not None:  # every symbol's bars from the earliest of their last market_bars bars
                cut = min(int(a.timestamps_ns[-min(market_bars, len(a))]) for a in arrays)
                arrays = [a.since(cut) for a in arrays]
            # under the lock: the frames are views of the kept rows
            return MarketData.from_frames(arrays, frames, join="union")  # type: ignore[arg-type]  # Bars' arrays
