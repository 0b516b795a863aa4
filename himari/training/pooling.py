"""Pooled training: more data per fit for a single-asset policy, from other assets over the same training period.

Each pooled asset's bars go through its *own* tactical pipeline, fitted on its own training bars (so its features and
regimes are normalized as the traded asset's are), and the training rows of every asset are **chained** into one
single-asset training market: each segment is rescaled to open where the previous one closed and put on one
contiguous time axis. Episodes are drawn from the whole chain; the validation month stays on the traded asset only.
Nothing after the training end of any asset is used, so the window's validation and test months are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from himari.data.bars import Bars
from himari.env.market import MarketData
from himari.errors import DataError
from himari.tactical.pipeline import TacticalFrame


def _rows(bars: Bars, frame: TacticalFrame, start_ns: int, end_ns: int) -> tuple[Bars, TacticalFrame]:
    keep = (bars.timestamps_ns >= start_ns) & (bars.timestamps_ns < end_ns)
    f_keep = (frame.timestamps_ns >= start_ns) & (frame.timestamps_ns < end_ns)
    if not np.array_equal(bars.timestamps_ns[keep], frame.timestamps_ns[f_keep]):
        raise DataError(f"{bars.symbol}: tactical frame rows do not match the bars")
    sub = TacticalFrame(frame.timestamps_ns[f_keep], frame.features[f_keep], frame.feature_names,
                        frame.regime_posterior[f_keep], frame.valid[f_keep])
    return bars.between(int(start_ns), int(end_ns)), sub


def pooled_market(segments: Sequence[tuple[Bars, TacticalFrame]], train_start_ns: int,
                  train_end_ns: int, history_rows: int) -> tuple[MarketData, int]:
    """One chained single-asset market: the first segment's rows before ``train_end_ns`` (its last
    ``history_rows`` rows before ``train_start_ns`` kept as observation history), then every other segment's rows in
    ``[train_start_ns, train_end_ns)``. Returns the market and the index of its first training row."""
    if not segments:
        raise DataError("pooled training: no segments")
    first_bars, first_frame = segments[0]
    pre = first_bars.timestamps_ns[first_bars.timestamps_ns < train_start_ns]
    start_ns = int(pre[-history_rows]) if 0 < history_rows <= len(pre) else int(first_bars.timestamps_ns[0])
    parts = [_rows(first_bars, first_frame, start_ns, train_end_ns)]
    parts += [_rows(b, f, train_start_ns, train_end_ns) for b, f in segments[1:]]
    step = first_bars.timeframe.seconds * 1_000_000_000
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
    last_close = None
    for bars, _ in parts:
        if len(bars) == 0:
            raise DataError(f"pooled training: {bars.symbol} has no bars in the training period")
        frame = bars.frame
        scale = 1.0 if last_close is None else last_close / float(frame["open"].iloc[0])
        for k in ("open", "high", "low", "close"):
            columns[k].append(frame[k].to_numpy(np.float64) * scale)
        columns["volume"].append(frame["volume"].to_numpy(np.float64))
        last_close = float(columns["close"][-1][-1])
    n = sum(len(b) for b, _ in parts)
    ts = int(parts[0][0].timestamps_ns[0]) + step * np.arange(n, dtype=np.int64)
    symbols = "+".join(b.symbol for b, _ in parts)
    chained = Bars.from_arrays(ts.astype("datetime64[ns]"), *(np.concatenate(columns[k]) for k in
                               ("open", "high", "low", "close", "volume")),
                               symbol=parts[0][0].symbol, timeframe=str(first_bars.timeframe),
                               source=f"pooled:{symbols}")
    frame = TacticalFrame(ts, np.concatenate([f.features for _, f in parts]), parts[0][1].feature_names,
                          np.concatenate([f.regime_posterior for _, f in parts]),
                          np.concatenate([f.valid for _, f in parts]))
    market = MarketData.from_frames([chained], [frame])
    return market, int(np.sum(parts[0][0].timestamps_ns < train_start_ns))
