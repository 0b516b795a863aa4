"""The paper-trading loop: closed bars -> ``TradingSession.on_bar`` per stream -> one SQLite transaction per bar.

For every closed bar t the loop appends the bar to a bounded history, calls ``on_bar`` of each stream (the champion
and, with ``--shadow``, a challenger on the same bars), and commits the bar, every stream's decision, new orders,
fills, equity, positions and session state in one transaction (:meth:`PaperStore.record_bar`).

Crash safety: on start the loop reads the last committed bar and each stream's session state; bars up to that time
only refill the history (warm-up), and trading resumes with the next bar. Because a bar is either fully committed
or not at all, and the session is deterministic given its state and the bars, a restarted run produces exactly the
fills of an uninterrupted one: none lost, none duplicated.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from himari.data.timeframe import Timeframe
from himari.errors import RunDirError
from himari.ops.metrics import Metrics, per_symbol
from himari.paper.feeds import FeedBar
from himari.paper.store import BarRecord, PaperStore
from himari.trading.history import BarHistory

CHAMPION = "champion"
SHADOW = "shadow"


def to_ns(value: Any) -> int:
    """A timestamp (int ns, pandas/datetime, numpy datetime64 or ISO text) as int64 UTC nanoseconds."""
    if isinstance(value, int | np.integer):
        return int(value)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "_asdict"):
        return dict(obj._asdict())
    return dict(vars(obj))


def fill_record(fill: Any) -> dict[str, Any]:
    """A session ``Fill`` as a store row (``timestamp_ns`` -> ``ts_ns``; side normalized to lower case)."""
    d = _as_dict(fill)
    return {
        "order_id": str(d["order_id"]),
        "ts_ns": to_ns(d["timestamp_ns"] if "timestamp_ns" in d else d["timestamp"]),
        "symbol": str(d["symbol"]),
        "side": str(d["side"]).lower(),
        "quantity_change": float(d["quantity_change"]),
        "price": float(d["price"]),
        "fee": float(d["fee"]),
        "slippage_cost": float(d["slippage_cost"]),
    }


def order_records(decision: Mapping[str, Any], positions: Mapping[str, float], ts_ns: int) -> list[dict[str, Any]]:
    """Orders implied by the decision at bar ``ts_ns``: per symbol whose target differs from the position held at
    t's close. ``order_id = f"{symbol}:{ts_ns}"``, the id ``TradingSession`` gives the fill at t+1.
    """
    symbols = [str(s) for s in decision.get("symbols", [])]
    targets = per_symbol(decision.get("target_position", {}), symbols)
    out = []
    for symbol in symbols:
        target = float(targets[symbol])
        before = float(positions.get(symbol, 0.0))
        if abs(target - before) > 1e-12:
            out.append(
                {
                    "order_id": f"{symbol}:{int(ts_ns)}",
                    "symbol": symbol,
                    "target_position": target,
                    "position_before": before,
                    "requested_change": target - before,
                }
            )
    return out


@dataclass
class PaperSummary:
    bars_traded: int
    bars_warmup: int
    resumed_from_ns: int | None
    last_ts_ns: int | None
    fills: dict[str, int]
    final_equity: dict[str, float]


def run_paper(
    feed: Iterable[FeedBar],
    sessions: Mapping[str, Any],
    store: PaperStore,
    symbols: tuple[str, ...],
    timeframe: Timeframe | str,
    history_bars: int,
    start_ns: int | None = None,
    end_ns: int | None = None,
    metrics: Metrics | None = None,
    on_commit: Callable[[int, dict[str, Any]], None] | None = None,
    max_bars: int | None = None,
) -> PaperSummary:
    """Run the loop until the feed ends, ``end_ns`` is reached or ``max_bars`` bars were traded.

    ``sessions`` maps stream names (``champion``, ``shadow``) to ``TradingSession``-like objects (``on_bar``,
    ``state_dict``, ``load_state_dict``). Bars before ``start_ns`` only fill the history.
    """
    tf = Timeframe.parse(timeframe)
    histories = {s: BarHistory(s, tf, history_bars, allow_gaps=True) for s in symbols}
    resumed: dict[str, int] = {}
    for stream, session in sessions.items():
        saved = store.last_state(stream)
        if saved is not None:
            resumed[stream] = saved[0]
            session.load_state_dict(saved[1])
    if resumed and (set(resumed) != set(sessions) or len(set(resumed.values())) != 1):
        raise RunDirError(
            f"{store.path}: streams were committed at different bars ({resumed}); the database does not match "
            f"the streams {sorted(sessions)}; use a new --db"
        )
    resume_ns = next(iter(resumed.values())) if resumed else None
    if hasattr(feed, "pace_from_ns"):
        feed.pace_from_ns = max(resume_ns or -1, (start_ns or 0) - 1)  # type: ignore[attr-defined]
    traded = warmup = 0
    fills_count = {s: 0 for s in sessions}
    final_equity: dict[str, float] = {}
    last_ts = resume_ns
    for event in feed:
        ts = int(event.ts_ns)
        if end_ns is not None and ts >= end_ns:
            break
        for symbol, row in event.rows.items():
            if symbol in histories:
                histories[symbol].extend(np.array([ts]), np.asarray(row, dtype=np.float64).reshape(1, 5), skip_known=True)
        if (start_ns is not None and ts < start_ns) or (resume_ns is not None and ts <= resume_ns):
            warmup += 1
            continue
        if any(len(h) == 0 for h in histories.values()):
            warmup += 1  # a symbol not listed yet: nothing to decide on
            continue
        bars_by_symbol = {s: h.bars() for s, h in histories.items()}
        records = []
        started = time.perf_counter()
        for stream, session in sessions.items():
            outcome = session.on_bar(bars_by_symbol)
            decision = outcome.decision.to_dict()
            positions = _positions(outcome.positions, symbols)
            fills = [fill_record(f) for f in outcome.fills]
            records.append(
                BarRecord(
                    stream=stream,
                    ts_ns=ts,
                    decision=decision,
                    orders=order_records(decision, positions, ts),
                    fills=fills,
                    equity=float(outcome.equity),
                    drawdown=float(outcome.drawdown),
                    positions=positions,
                    state=json.loads(json.dumps(session.state_dict(), default=_json_default)),
                )
            )
        latency_s = time.perf_counter() - started
        store.record_bar({s: np.asarray(r) for s, r in event.rows.items() if s in histories}, ts, records)
        traded += 1
        last_ts = ts
        for rec in records:
            fills_count[rec.stream] += len(rec.fills)
            final_equity[rec.stream] = rec.equity
            if metrics is not None:
                metrics.observe_account(rec.stream, rec.equity, rec.drawdown)
                for fill in rec.fills:
                    metrics.fills.labels(stream=rec.stream, side=fill["side"]).inc()
        if metrics is not None:
            champion = records[0].decision
            close_s = {s: ts / 1e9 + tf.seconds for s in symbols}
            metrics.observe_decision(champion, latency_s / max(1, len(records)), close_s)
        if on_commit is not None:
            on_commit(ts, {r.stream: r for r in records})
        if max_bars is not None and traded >= max_bars:
            break
    return PaperSummary(traded, warmup, resume_ns, last_ts, fills_count, final_equity)


def _positions(value: Any, symbols: tuple[str, ...]) -> dict[str, float]:
    """``BarOutcome.positions`` ((A,) array in symbol order, or a mapping) as ``{symbol: position}``."""
    if value is None:
        return {s: 0.0 for s in symbols}
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    return {s: float(v) for s, v in zip(symbols, arr, strict=True)}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"session state holds a non-JSON value of type {type(value).__name__}")
