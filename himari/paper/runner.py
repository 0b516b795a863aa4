"""Wiring for ``himari paper``: bundles -> sessions, feed specs -> feed, database -> resume, then the loop.

:func:`run_paper_command` is what the CLI calls; tests call it with a fake ``session_factory`` and a fake exchange.
The resolved configuration (run paths, feeds, start/end, initial equity) is bound into the database's ``meta``
table on first use; a restart must use the same command (anything else is refused), so a resumed run continues
exactly the run it interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from himari.config import FrozenConfig
from himari.data.bars import to_utc_timestamp
from himari.data.timeframe import Timeframe
from himari.errors import ConfigError, DataError
from himari.ops.metrics import Metrics
from himari.paper.feeds import CcxtFeed, ReplayFeed, make_exchange, normalize_symbol, parse_feed_specs
from himari.paper.loop import CHAMPION, SHADOW, PaperSummary, run_paper
from himari.paper.store import PaperStore


@dataclass(frozen=True)
class SessionInfo:
    """What the loop needs to know about a session's bundle."""

    symbols: tuple[str, ...]
    timeframe: str
    model_id: str
    warmup_bars: int  # bars of history needed before the first decision
    history_bars: int  # bars of history handed to on_bar (bounded)


SessionFactory = Callable[[str, float], tuple[Any, SessionInfo]]


def bundle_session_factory(run: str, initial_equity: float) -> tuple[Any, SessionInfo]:
    """A :class:`~himari.trading.session.TradingSession` on the bundle of ``run`` (loaded without unpickling)."""
    from himari.trading.bundle import load_bundle
    from himari.trading.session import SessionConfig, TradingSession

    bundle = load_bundle(run)
    session = TradingSession(bundle, SessionConfig(initial_equity=initial_equity))
    warmup = int(getattr(session, "warmup_bars", 0) or getattr(getattr(session, "engine", None), "warmup_bars", 0) or 0)
    history = int(getattr(session, "history_bars", 0) or getattr(getattr(session, "engine", None), "history_bars", 0) or 0)
    warmup = warmup or 500
    history = max(history or 2048, warmup + 1)
    return session, SessionInfo(tuple(bundle.symbols), str(bundle.timeframe), bundle.model_id, warmup, history)


def _ns(value: str | None) -> int | None:
    ts = to_utc_timestamp(value) if value else None
    return None if ts is None else int(ts.value)


class PaperConfig(FrozenConfig):
    """A paper-trading run's settings, validated before any work starts (an unknown or out-of-range field is a
    one-line :class:`~himari.errors.ConfigError` naming it)."""

    run: str
    feeds: tuple[str, ...] = Field(min_length=1)
    db: str
    shadow: str | None = None
    speed: float = Field(0.0, ge=0.0, description="replay pace in bars per second (0: as fast as possible)")
    start: str | None = None
    end: str | None = None
    initial_equity: float = Field(10_000.0, gt=0.0)
    max_bars: int | None = Field(None, ge=1)
    poll_interval_s: float = Field(30.0, gt=0.0, description="live feeds: seconds between polls")


def run_paper_command(
    run: str,
    feeds: tuple[str, ...] | list[str],
    db: str | Path,
    shadow: str | None = None,
    speed: float = 0.0,
    start: str | None = None,
    end: str | None = None,
    initial_equity: float = 10_000.0,
    max_bars: int | None = None,
    poll_interval_s: float = 30.0,
    metrics: Metrics | None = None,
    session_factory: SessionFactory = bundle_session_factory,
    exchange_factory: Callable[[str], Any] = make_exchange,
    ccxt_clock_ms: Callable[[], int] | None = None,
    ccxt_sleep: Callable[[float], None] | None = None,
    on_commit: Callable[[int, dict[str, Any]], None] | None = None,
) -> PaperSummary:
    """Build the champion (and shadow) sessions, the feed and the store; resume or start; run the loop."""
    PaperConfig.parse(dict(run=run, feeds=tuple(feeds), db=str(db), shadow=shadow, speed=speed, start=start, end=end,
                           initial_equity=initial_equity, max_bars=max_bars, poll_interval_s=poll_interval_s))
    champion, info = session_factory(run, initial_equity)
    sessions: dict[str, Any] = {CHAMPION: champion}
    shadow_info = None
    if shadow is not None:
        shadow_session, shadow_info = session_factory(shadow, initial_equity)
        if shadow_info.symbols != info.symbols or Timeframe.parse(shadow_info.timeframe) != Timeframe.parse(info.timeframe):
            raise ConfigError(
                f"--shadow {shadow}: trades {shadow_info.symbols} {shadow_info.timeframe}, the champion trades "
                f"{info.symbols} {info.timeframe}; a shadow must run on the same feed"
            )
        sessions[SHADOW] = shadow_session
    tf = Timeframe.parse(info.timeframe)
    history_bars = max(info.history_bars, shadow_info.history_bars if shadow_info else 0)
    warmup_bars = max(info.warmup_bars, shadow_info.warmup_bars if shadow_info else 0)
    kind, parts = parse_feed_specs(list(feeds))
    start_ns, end_ns = _ns(start), _ns(end)
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise ConfigError(f"--end {end} is not after --start {start}")

    feed: Any
    if kind == "replay":
        from himari.data.loaders import load_bars

        loaded = {}
        for (path,) in parts:
            bars = load_bars(path)
            symbol = normalize_symbol(bars.symbol)
            if symbol not in info.symbols:
                raise ConfigError(f"--feed replay:{path}: symbol {bars.symbol} is not traded by the model ({', '.join(info.symbols)})")
            if bars.timeframe != tf:
                raise ConfigError(f"--feed replay:{path}: {bars.timeframe} bars, the model trades {tf}")
            loaded[symbol] = bars
        missing = [s for s in info.symbols if s not in loaded]
        if missing:
            raise ConfigError(f"no --feed for {', '.join(missing)}; the model trades {', '.join(info.symbols)}")
        feed = ReplayFeed({s: loaded[s] for s in info.symbols}, speed=speed)
        if start_ns is None:
            stamps = feed.timestamps()
            if len(stamps) <= warmup_bars:
                raise DataError(f"replay data has {len(stamps)} common bars; the model needs {warmup_bars} of warm-up")
            start_ns = int(stamps[warmup_bars])
    else:
        mapping: dict[str, str] = {}
        exchanges = {exchange for exchange, _ in parts}
        if len(exchanges) != 1:
            raise ConfigError("--feed ccxt: all symbols must come from one exchange")
        for _, symbol in parts:
            mapping[normalize_symbol(symbol)] = symbol
        missing = [s for s in info.symbols if s not in mapping]
        if missing:
            raise ConfigError(f"no --feed for {', '.join(missing)}; the model trades {', '.join(info.symbols)}")
        extra = {
            k: v for k, v in {"clock_ms": ccxt_clock_ms, "sleep": ccxt_sleep}.items() if v is not None
        }
        feed = CcxtFeed(
            exchange=exchange_factory(exchanges.pop()),
            symbols={s: mapping[s] for s in info.symbols},
            timeframe=tf,
            warmup_bars=history_bars,
            poll_interval_s=poll_interval_s,
            **extra,
        )
        with PaperStore(db) as probe:
            saved = probe.last_state(CHAMPION)
        if saved is not None:  # catch up on every bar missed while down, with a full history before them
            feed.since_ms = (saved[0] - history_bars * tf.nanoseconds) // 1_000_000
        if start_ns is None:
            now_ns = int(feed.clock_ms()) * 1_000_000
            start_ns = (now_ns // tf.nanoseconds - 1) * tf.nanoseconds  # the last bar closed at start-up

    store = PaperStore(db)
    try:
        stored = store.meta()
        if "start_ns" in stored and start is None and kind == "ccxt":
            start_ns = int(stored["start_ns"])  # a restarted live run keeps its original start
        store.bind_meta(
            {
                "run": str(Path(run).resolve()),
                "shadow_run": str(Path(shadow).resolve()) if shadow else "",
                "feeds": json.dumps(list(feeds)),
                "start_ns": str(start_ns),
                "end_ns": str(end_ns),
                "initial_equity": repr(float(initial_equity)),
                "timeframe": str(tf),
                "symbols": ",".join(info.symbols),
                "model_id": info.model_id,
                "shadow_model_id": shadow_info.model_id if shadow_info else "",
            }
        )
        return run_paper(
            feed,
            sessions,
            store,
            info.symbols,
            tf,
            history_bars,
            start_ns=start_ns,
            end_ns=end_ns,
            metrics=metrics,
            on_commit=on_commit,
            max_bars=max_bars,
        )
    finally:
        store.close()
