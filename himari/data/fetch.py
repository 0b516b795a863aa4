"""Downloading OHLCV history through ccxt: paginated, rate-limited, retried, resumable and validated.

``fetch_to_file`` pages through ``exchange.fetch_ohlcv(symbol, timeframe, since, limit)`` from ``since`` (or from the
bar after the last one already in ``out``) up to the last **closed** candle:

* pacing: at least ``exchange.rateLimit`` milliseconds between requests (measured on an injected monotonic clock);
* retries: ``ccxt.NetworkError`` (which includes ``RateLimitExceeded``, ``DDoSProtection``, ``RequestTimeout``) is
  retried with exponential backoff ``min(backoff_initial_s * 2**attempt, backoff_max_s)`` up to ``max_retries``
  times; any other ``ccxt.BaseError`` (bad symbol, authentication, exchange error) fails at once with one clear line;
* pages may be shorter than ``limit`` (exchanges cap them) and may repeat or precede the cursor: rows before the
  cursor are dropped, an empty page or a page that does not advance ends the download;
* the still-open candle (``open_time + timeframe > now``) is never written;
* resume: an existing ``out`` is validated and extended forward from its last bar (no backfill before its first
  bar); bars it already holds are kept and never duplicated;
* every write (a checkpoint every ``checkpoint_every_pages`` pages, and the final one) validates the merged table
  and replaces the file atomically, so an interrupted download resumes from its last checkpoint.

Clock and sleeping are injected (``Clock``), so tests run without real waits or network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pydantic import Field

from himari.config import FrozenConfig
from himari.data.bars import OHLCV_COLUMNS, to_utc_timestamp
from himari.data.timeframe import Timeframe
from himari.data.validate import ValidationReport, validate_frame
from himari.errors import ConfigError, DataError


class Clock(Protocol):
    """Time source for pacing and for deciding which candle is still open."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def now_ms(self) -> int: ...


class SystemClock:
    """The real clock (``time.monotonic``, ``time.sleep``, wall-clock UTC milliseconds)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def now_ms(self) -> int:
        return int(time.time() * 1000)


ExchangeFactory = Callable[[str], Any]


def ccxt_exchange(exchange_id: str) -> Any:
    """A ccxt exchange instance by id, with ccxt's own throttle off (requests are paced here)."""
    import ccxt

    if exchange_id not in ccxt.exchanges:
        raise ConfigError(f"unknown exchange {exchange_id!r} (ccxt knows {len(ccxt.exchanges)}; e.g. binance, kraken)")
    return getattr(ccxt, exchange_id)({"enableRateLimit": False})


class FetchConfig(FrozenConfig):
    """Paging and retry settings of :func:`fetch_to_file`."""

    limit: int = Field(1000, ge=1, le=100_000)
    max_retries: int = Field(6, ge=0, le=100)
    backoff_initial_s: float = Field(1.0, ge=0.0)
    backoff_max_s: float = Field(60.0, ge=0.0)
    checkpoint_every_pages: int = Field(50, ge=1)
    max_pages: int = Field(1_000_000, ge=1)


@dataclass
class FetchResult:
    path: str
    rows_before: int
    rows_added: int
    rows_total: int
    pages: int
    retries: int
    dropped_open_candles: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    report: ValidationReport | None = None
    sleeps_s: list[float] = field(default_factory=list)

    def summary(self) -> str:
        span = f"{self.first:%Y-%m-%dT%H:%MZ} -> {self.last:%Y-%m-%dT%H:%MZ}" if self.first is not None else "empty"
        gaps = f", {len(self.report.gaps)} gap events" if self.report is not None else ""
        return (f"{self.path}: {self.rows_total} bars ({span}); added {self.rows_added} in {self.pages} pages, "
                f"{self.retries} retries, dropped {self.dropped_open_candles} open candle(s){gaps}")


class _Pacer:
    """Rate limit + retry wrapper around exchange calls."""

    def __init__(self, exchange: Any, clock: Clock, config: FetchConfig, label: str) -> None:
        self.exchange = exchange
        self.clock = clock
        self.config = config
        self.label = label
        self.interval_s = float(getattr(exchange, "rateLimit", 0) or 0) / 1000.0
        self.last_call: float | None = None
        self.retries = 0
        self.sleeps: list[float] = []

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.sleeps.append(seconds)
            self.clock.sleep(seconds)

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        import ccxt

        attempt = 0
        while True:
            if self.last_call is not None:
                self._sleep(self.last_call + self.interval_s - self.clock.monotonic())
            self.last_call = self.clock.monotonic()
            try:
                return fn()
            except ccxt.NetworkError as exc:
                if attempt >= self.config.max_retries:
                    raise DataError(
                        f"{self.label}: {what} failed after {attempt} retries: {type(exc).__name__}: {exc}"
                    ) from None
                delay = min(self.config.backoff_initial_s * 2.0**attempt, self.config.backoff_max_s)
                if isinstance(exc, ccxt.RateLimitExceeded):
                    delay = max(delay, self.interval_s * 2.0)
                attempt += 1
                self.retries += 1
                self._sleep(delay)
            except ccxt.BaseError as exc:
                raise DataError(f"{self.label}: {what}: {type(exc).__name__}: {exc}") from None


def _rows_to_array(page: Any, label: str) -> np.ndarray:
    """ccxt rows ``[ms, open, high, low, close, volume]`` -> float64 (n, 6); ``None`` cells become NaN."""
    if not isinstance(page, list | tuple):
        raise DataError(f"{label}: fetch_ohlcv returned {type(page).__name__}, expected a list of candles")
    out = np.full((len(page), 6), np.nan)
    for i, row in enumerate(page):
        if not isinstance(row, list | tuple) or len(row) < 6:
            raise DataError(f"{label}: candle {i} of a page is {row!r}, expected [time, open, high, low, close, volume]")
        out[i] = [np.nan if v is None else float(v) for v in row[:6]]
    return out


def _raise_if_invalid(report: ValidationReport, frame: pd.DataFrame) -> None:
    if report.ok:
        return
    first = report.errors[0]
    when = ""
    if first.row is not None and 1 <= first.row <= len(frame):
        when = f" (bar {frame.index[first.row - 1]:%Y-%m-%dT%H:%MZ})"
    raise DataError(f"fetched data is invalid, nothing written: {report.where(first.row)}{first.message}{when}",
                    report.path)


def _frame_from_array(rows: np.ndarray) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(rows[:, 0].astype(np.int64), unit="ms", utc=True), name="timestamp")
    frame = pd.DataFrame(rows[:, 1:6], columns=list(OHLCV_COLUMNS), index=index.as_unit("ns"))
    return frame.astype(np.float64)


def fetch_to_file(
    exchange_id: str,
    symbol: str,
    timeframe: str,
    since: str | pd.Timestamp,
    out: str | Path,
    until: str | pd.Timestamp | None = None,
    config: FetchConfig | None = None,
    factory: ExchangeFactory = ccxt_exchange,
    clock: Clock | None = None,
    on_page: Callable[[int, pd.Timestamp], None] | None = None,
) -> FetchResult:
    """Download closed candles ``[since, until)`` into ``out`` (Parquet/CSV by extension), resuming if it exists."""
    from himari.data.loaders import validate_file
    from himari.data.store import write_frame

    cfg = config or FetchConfig()
    clk: Clock = clock or SystemClock()
    tf = Timeframe.parse(timeframe)
    tf_ms = tf.seconds * 1000
    start = to_utc_timestamp(since)
    if start is None:
        raise ConfigError("--since is required")
    end = to_utc_timestamp(until) if until is not None else None
    out_path = Path(out)
    label = f"{exchange_id} {symbol} {tf}"

    existing = pd.DataFrame(
        {c: np.zeros(0) for c in OHLCV_COLUMNS},
        index=pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit("ns"),
    )
    if out_path.exists():
        report, frame = validate_file(out_path, tf)
        if frame is None or not report.ok:
            raise DataError(f"existing file is not usable for resume ({report.first_error_line()}); repair it "
                            "with 'himari data repair' or choose another --out", str(out_path))
        if report.timeframe != tf:
            raise DataError(f"existing file has timeframe {report.timeframe}, not {tf}", str(out_path))
        existing = frame
    rows_before = len(existing)
    cursor_ms = int(start.value // 1_000_000)
    if rows_before:
        cursor_ms = max(cursor_ms, int(existing.index[-1].value // 1_000_000) + tf_ms)
    cursor_ms = -(-cursor_ms // tf_ms) * tf_ms  # align up to the bar grid
    end_ms = int(end.value // 1_000_000) if end is not None else None

    exchange = factory(exchange_id)
    pacer = _Pacer(exchange, clk, cfg, label)
    has = getattr(exchange, "has", {}) or {}
    if has.get("fetchOHLCV") is False:
        raise DataError(f"{label}: the exchange does not provide OHLCV candles")
    timeframes = getattr(exchange, "timeframes", None) or {}
    if timeframes and str(tf) not in timeframes:
        raise ConfigError(f"{label}: timeframe {tf} not offered; available: {', '.join(timeframes)}")
    markets = pacer.call("load_markets", exchange.load_markets) or getattr(exchange, "markets", {}) or {}
    if markets and symbol not in markets:
        raise DataError(f"{label}: unknown symbol {symbol!r} on {exchange_id}")

    chunks: list[np.ndarray] = []
    pages = dropped_open = 0
    pending_pages = 0

    def merged() -> pd.DataFrame:
        if not chunks:
            return existing
        new = _frame_from_array(np.concatenate(chunks))
        both = pd.concat([existing, new]) if rows_before else new
        return both[~both.index.duplicated(keep="first")].sort_index(kind="stable")

    def checkpoint() -> ValidationReport:
        frame = merged()
        report = validate_frame(frame, tf, str(out_path))
        _raise_if_invalid(report, frame)
        if len(frame):
            write_frame(frame, out_path)
        return report

    while pages < cfg.max_pages:
        now_ms = clk.now_ms()
        if cursor_ms + tf_ms > now_ms or (end_ms is not None and cursor_ms >= end_ms):
            break
        since_ms = cursor_ms
        page = pacer.call(
            f"fetch_ohlcv(since={pd.Timestamp(since_ms, unit='ms', tz='UTC'):%Y-%m-%dT%H:%MZ})",
            lambda since_ms=since_ms: exchange.fetch_ohlcv(symbol, str(tf), since=since_ms, limit=cfg.limit),
        )
        pages += 1
        rows = _rows_to_array(page, label)
        if len(rows) == 0:
            break
        rows = rows[rows[:, 0] >= cursor_ms]
        closed = rows[:, 0] + tf_ms <= clk.now_ms()
        dropped_open += int((~closed).sum())
        rows = rows[closed]
        if end_ms is not None:
            rows = rows[rows[:, 0] < end_ms]
        if len(rows) == 0:
            break
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        chunks.append(rows)
        cursor_ms = int(rows[-1, 0]) + tf_ms
        pending_pages += 1
        if on_page is not None:
            on_page(len(rows), pd.Timestamp(int(rows[-1, 0]), unit="ms", tz="UTC"))
        if pending_pages >= cfg.checkpoint_every_pages:
            checkpoint()
            pending_pages = 0
    final = merged()
    if len(final) == 0:
        raise DataError(f"{label}: the exchange returned no closed candles from {start:%Y-%m-%dT%H:%MZ}; "
                        "nothing written", str(out_path))
    report = checkpoint()
    return FetchResult(
        path=str(out_path), rows_before=rows_before, rows_added=len(final) - rows_before, rows_total=len(final),
        pages=pages, retries=pacer.retries, dropped_open_candles=dropped_open,
        first=final.index[0] if len(final) else None, last=final.index[-1] if len(final) else None,
        report=report, sleeps_s=pacer.sleeps,
    )
