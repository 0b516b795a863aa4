"""Closed-bar feeds for paper trading: replay of OHLCV files, and ccxt polling of an exchange's closed candles.

A feed yields :class:`FeedBar` events in strictly increasing time: one timestamp, the closed bar of each symbol
that has one. The replay feed emits every timestamp of any symbol (the union, as the backtester's market data does,
so a symbol's gap or later listing does not hold the others back); the live ccxt feed emits a timestamp once every
symbol has closed it (a timestamp one symbol never publishes is skipped and counted in ``skipped_timestamps``).
Feeds never sleep for real in tests: ``sleep`` and the clock are injected.

Spec strings (CLI ``--feed``): ``replay:PATH`` (a data file or bundled name, e.g. ``replay:BTCUSDT``) and
``ccxt:EXCHANGE:SYMBOL`` (e.g. ``ccxt:binance:BTC/USDT``); repeat ``--feed`` for several symbols.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from himari.data.bars import Bars
from himari.data.timeframe import Timeframe
from himari.errors import ConfigError, DataError


class FeedBar(NamedTuple):
    """One closed bar per symbol at ``ts_ns`` (bar open time, UTC ns); rows are ``[open, high, low, close, volume]``."""

    ts_ns: int
    rows: dict[str, np.ndarray]  # only the symbols with a bar at ts_ns


def normalize_symbol(symbol: str) -> str:
    """``BTC/USDT`` and ``BTC/USDT:USDT`` -> ``BTCUSDT`` (the bundle's spelling)."""
    return symbol.split(":")[0].replace("/", "").replace("-", "").upper()


@dataclass
class ReplayFeed:
    """Replays loaded bars, as fast as possible (``speed=0``) or ``speed`` times faster than real time.

    Pacing starts at ``pace_from_ns`` (the loop sets it to the first bar it will trade), so warm-up history is not
    slept through.
    """

    bars: Mapping[str, Bars]
    speed: float = 0.0
    sleep: Callable[[float], None] = time.sleep
    pace_from_ns: int | None = None

    def __post_init__(self) -> None:
        if not self.bars:
            raise ConfigError("replay feed: no symbols")
        if self.speed < 0 or not math.isfinite(self.speed):
            raise ConfigError(f"replay feed: speed must be >= 0 (0 = as fast as possible), got {self.speed}")
        frames = list(self.bars.values())
        tf = frames[0].timeframe
        for b in frames[1:]:
            if b.timeframe != tf:
                raise ConfigError(f"replay feed: {b.symbol} is {b.timeframe}, {frames[0].symbol} is {tf}")
        self.timeframe: Timeframe = tf

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self.bars)

    def timestamps(self) -> np.ndarray:
        """Timestamps of any symbol (sorted int64 ns, the union)."""
        union: np.ndarray | None = None
        for b in self.bars.values():
            union = b.timestamps_ns if union is None else np.union1d(union, b.timestamps_ns)
        assert union is not None
        return union

    def __iter__(self) -> Iterator[FeedBar]:
        stamps = self.timestamps()
        columns, present = {}, {}
        for symbol, b in self.bars.items():
            pos = np.minimum(np.searchsorted(b.timestamps_ns, stamps), len(b) - 1)
            present[symbol] = b.timestamps_ns[pos] == stamps
            columns[symbol] = np.column_stack([b.open, b.high, b.low, b.close, b.volume])[pos]
        delay = self.timeframe.seconds / self.speed if self.speed > 0 else 0.0
        for i, ts in enumerate(stamps.tolist()):
            if delay > 0 and self.pace_from_ns is not None and ts > self.pace_from_ns:
                self.sleep(delay)
            yield FeedBar(int(ts), {s: columns[s][i] for s in self.bars if present[s][i]})


def _ccxt_error_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(retryable, fatal) exception classes of ccxt, when installed."""
    try:
        import ccxt
    except ImportError:  # pragma: no cover - ccxt is a core dependency
        return (ConnectionError, TimeoutError), ()
    return (ccxt.NetworkError, ConnectionError, TimeoutError), (ccxt.ExchangeError,)


@dataclass
class CcxtFeed:
    """Polls ``exchange.fetch_ohlcv`` and yields closed candles only (``open_time + timeframe <= now``).

    - Start-up: the last ``warmup_bars`` closed candles (paginated), so features and regimes have history; the loop
      decides which of them it trades (none on a fresh start, the missed ones after a restart).
    - Then it sleeps until the next bar should have closed (plus ``close_grace_s``, at most ``poll_interval_s``)
      and polls again. Candles already seen are dropped; a candle that changes after it closed is an error.
    - Network errors (ccxt ``NetworkError``: timeouts, rate limits, exchange unavailable) are retried with
      exponential backoff (``backoff_s * 2**k``, capped at ``poll_interval_s * 6``) up to
      ``max_consecutive_errors``; an ``ExchangeError`` (bad symbol, bad request) stops with a :class:`DataError`.
    - Stops after ``max_live_bars`` new bars when given (tests, bounded sessions), else runs until interrupted.

    ``clock_ms`` (epoch milliseconds) and ``sleep`` are injected so tests run a fake exchange on a fake clock.
    """

    exchange: Any
    symbols: Mapping[str, str]  # bundle symbol -> exchange symbol, e.g. {"BTCUSDT": "BTC/USDT"}
    timeframe: Timeframe
    warmup_bars: int = 1000
    poll_interval_s: float = 30.0
    close_grace_s: float = 2.0
    page_limit: int = 1000
    max_consecutive_errors: int = 8
    backoff_s: float = 1.0
    max_live_bars: int | None = None
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    sleep: Callable[[float], None] = time.sleep
    skipped_timestamps: int = 0
    gaps: int = 0
    live_from_ns: int | None = None  # last closed bar at start-up: the first bar a fresh run trades
    since_ms: int | None = None  # fetch history from here instead (a restart catching up on missed bars)

    def __post_init__(self) -> None:
        self.timeframe = Timeframe.parse(self.timeframe)
        if not self.symbols:
            raise ConfigError("ccxt feed: no symbols")
        self._tf_ms = self.timeframe.seconds * 1000
        self._tf_name = str(self.timeframe)
        self._last_ms: dict[str, int] = {}
        self._rows: dict[str, dict[int, np.ndarray]] = {s: {} for s in self.symbols}
        self._retryable, self._fatal = _ccxt_error_classes()

    # -- fetching -----------------------------------------------------------------------------------------------
    def _fetch(self, symbol: str, since_ms: int) -> list[list[Any]]:
        errors = 0
        while True:
            try:
                return list(self.exchange.fetch_ohlcv(self.symbols[symbol], self._tf_name, since_ms, self.page_limit))
            except self._fatal as exc:
                raise DataError(f"ccxt: fetch_ohlcv({self.symbols[symbol]}, {self._tf_name}) failed: {exc}") from None
            except self._retryable as exc:
                errors += 1
                if errors >= self.max_consecutive_errors:
                    raise DataError(
                        f"ccxt: fetch_ohlcv({self.symbols[symbol]}) failed {errors} times in a row; last error: {exc}"
                    ) from None
                self.sleep(min(self.backoff_s * 2 ** (errors - 1), self.poll_interval_s * 6))

    def _check_row(self, symbol: str, row: list[Any]) -> tuple[int, np.ndarray]:
        if len(row) < 6:
            raise DataError(f"ccxt: {symbol}: candle {row!r} has {len(row)} fields, expected 6")
        try:
            ts = int(row[0])
            values = np.array([float(x) for x in row[1:6]], dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"ccxt: {symbol}: candle {row!r} is not numeric") from None
        o, h, low, c, v = values
        when = f"candle at {ts} ms"
        if not np.all(np.isfinite(values)):
            raise DataError(f"ccxt: {symbol}: {when} has NaN/inf values")
        if min(o, h, low, c) <= 0:
            raise DataError(f"ccxt: {symbol}: {when} has a non-positive price")
        if h < max(o, c) or low > min(o, c) or v < 0:
            raise DataError(f"ccxt: {symbol}: {when} is inconsistent (high/low/volume)")
        if ts % self._tf_ms != 0:
            raise DataError(f"ccxt: {symbol}: {when} is not aligned to {self._tf_name}")
        return ts, values

    def _collect(self, symbol: str, since_ms: int, now_ms: int) -> None:
        """Fetch closed candles of ``symbol`` from ``since_ms`` up to ``now_ms`` (paginated) into ``_rows``."""
        while True:
            rows = self._fetch(symbol, since_ms)
            newest = None
            for raw in rows:
                ts, values = self._check_row(symbol, raw)
                if ts + self._tf_ms > now_ms:
                    continue  # still forming
                last = self._last_ms.get(symbol)
                if last is not None and ts <= last:
                    held = self._rows[symbol].get(ts)
                    if held is not None and not np.allclose(held, values, rtol=1e-9, atol=0):
                        raise DataError(f"ccxt: {symbol}: closed candle at {ts} ms changed after it closed")
                    continue
                if last is not None and ts > last + self._tf_ms:
                    self.gaps += 1
                self._rows[symbol][ts] = values
                self._last_ms[symbol] = ts
                newest = ts
            # exchanges cap pages below the requested limit (500, 300, ...): page on until caught up or nothing new
            if newest is None or newest + 2 * self._tf_ms > now_ms:
                return
            since_ms = newest + self._tf_ms

    def _ready(self) -> list[FeedBar]:
        """Timestamps every symbol has, oldest first; timestamps some symbol skipped are dropped."""
        ready_until = min(self._last_ms.get(s, -1) for s in self.symbols)
        if ready_until < 0:
            return []
        stamps = sorted({ts for rows in self._rows.values() for ts in rows if ts <= ready_until})
        out = []
        for ts in stamps:
            if all(ts in self._rows[s] for s in self.symbols):
                out.append(FeedBar(ts * 1_000_000, {s: self._rows[s][ts] for s in self.symbols}))
            else:
                self.skipped_timestamps += 1
            for s in self.symbols:
                self._rows[s].pop(ts, None)
        return out

    def __iter__(self) -> Iterator[FeedBar]:
        now = self.clock_ms()
        since = (now // self._tf_ms - self.warmup_bars - 1) * self._tf_ms
        if self.since_ms is not None:
            since = min(since, self.since_ms // self._tf_ms * self._tf_ms)
        for symbol in self.symbols:
            self._collect(symbol, since, now)
        warm = self._ready()
        if warm:
            self.live_from_ns = warm[-1].ts_ns
        yield from warm
        emitted = 0
        while self.max_live_bars is None or emitted < self.max_live_bars:
            now = self.clock_ms()
            last_all = min(self._last_ms.get(s, now - 2 * self._tf_ms) for s in self.symbols)
            next_close = last_all + 2 * self._tf_ms
            wait_s = (next_close - now) / 1000.0 + self.close_grace_s
            if wait_s > 0:
                self.sleep(min(wait_s, self.poll_interval_s))
                now = self.clock_ms()
            for symbol in self.symbols:
                self._collect(symbol, self._last_ms.get(symbol, since - self._tf_ms) + self._tf_ms, now)
            for bar in self._ready():
                if self.live_from_ns is None:
                    self.live_from_ns = bar.ts_ns
                yield bar
                emitted += 1
                if self.max_live_bars is not None and emitted >= self.max_live_bars:
                    return


def parse_feed_specs(specs: tuple[str, ...] | list[str]) -> tuple[str, list[tuple[str, ...]]]:
    """``replay:PATH`` / ``ccxt:EXCHANGE:SYMBOL`` specs -> (kind, parsed parts). All specs must be of one kind."""
    if not specs:
        raise ConfigError("give at least one --feed (replay:PATH or ccxt:EXCHANGE:SYMBOL)")
    kinds = set()
    parts: list[tuple[str, ...]] = []
    for spec in specs:
        kind, _, rest = spec.partition(":")
        if kind == "replay" and rest:
            parts.append((rest,))
        elif kind == "ccxt" and rest.count(":") >= 1:
            exchange, _, symbol = rest.partition(":")
            if not exchange or not symbol:
                raise ConfigError(f"--feed {spec!r}: expected ccxt:EXCHANGE:SYMBOL, e.g. ccxt:binance:BTC/USDT")
            parts.append((exchange, symbol))
        else:
            raise ConfigError(f"--feed {spec!r}: expected replay:PATH or ccxt:EXCHANGE:SYMBOL")
        kinds.add(kind)
    if len(kinds) > 1:
        raise ConfigError("--feed: do not mix replay and ccxt feeds")
    return kinds.pop(), parts


def make_exchange(name: str) -> Any:
    """A ccxt exchange instance with rate limiting on (public endpoints only; no credentials are read)."""
    import ccxt

    if name not in ccxt.exchanges:
        raise ConfigError(f"unknown ccxt exchange {name!r}")
    return getattr(ccxt, name)({"enableRateLimit": True})
