"""ccxt download (himari/data/fetch.py) against a fake exchange: paging, pacing, retries, errors, resume, CLI."""

from __future__ import annotations

import itertools

import ccxt
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data import fetch as fetch_module
from himari.data.fetch import FetchConfig, fetch_to_file
from himari.data.loaders import load_bars, validate_file
from himari.errors import DataError

HOUR_MS = 3_600_000
START_MS = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1_000_000)


class FakeClock:
    """Monotonic time advances only by sleeping; wall clock = ``now0_ms`` + elapsed."""

    def __init__(self, now0_ms: int) -> None:
        self.t = 0.0
        self.now0_ms = now0_ms
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    def now_ms(self) -> int:
        return self.now0_ms + int(self.t * 1000)


class FakeExchange:
    """Serves hourly candles from START_MS up to and including the still-open one at ``now``."""

    rateLimit = 100

    def __init__(self, clock: FakeClock, n_closed: int, page_cap: int = 1000, missing: tuple[int, ...] = (),
                 errors: dict[int, Exception] | None = None, symbols: tuple[str, ...] = ("BTC/USDT",),
                 lookback: int = 0, bad_rows: dict[int, list[float]] | None = None) -> None:
        self.clock = clock
        self.page_cap = page_cap
        self.errors = dict(errors or {})
        self.symbols = symbols
        self.lookback = lookback  # rows before `since` the exchange also returns (some do)
        self.calls: list[tuple[int, int, float]] = []
        self.has = {"fetchOHLCV": True}
        self.timeframes = {"1h": "1h", "4h": "4h", "1d": "1d"}
        rng = np.random.default_rng(0)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_closed + 1)))
        self.candles = []
        for i in range(n_closed + 1):  # the last one is still open at "now"
            if i in missing:
                continue
            o = close[i - 1] if i else 100.0
            c = close[i]
            row = [START_MS + i * HOUR_MS, o, max(o, c) * 1.001, min(o, c) * 0.999, c, 10.0 + i]
            self.candles.append((bad_rows or {}).get(i, row))

    def load_markets(self) -> dict[str, dict]:
        return {s: {"symbol": s} for s in self.symbols}

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int | None = None, limit: int | None = None):
        self.calls.append((int(since or 0), int(limit or 0), self.clock.monotonic()))
        error = self.errors.pop(len(self.calls), None)
        if error is not None:
            raise error
        rows = [c for c in self.candles if c[0] >= (since or 0) - self.lookback * HOUR_MS]
        return [list(r) for r in rows[: min(limit or 1000, self.page_cap)]]


def _setup(n_closed: int = 2500, **kwargs):
    now = START_MS + n_closed * HOUR_MS + 20 * 60_000  # 20 minutes into the open candle
    clock = FakeClock(now)
    return clock, FakeExchange(clock, n_closed, **kwargs)


def _fetch(tmp_path, exchange, clock, name="BTC_USDT-1h.parquet", **kwargs):
    cfg = kwargs.pop("config", FetchConfig(limit=1000, checkpoint_every_pages=2))
    return fetch_to_file("fake", "BTC/USDT", "1h", "2024-01-01", tmp_path / name, config=cfg,
                         factory=lambda _id: exchange, clock=clock, **kwargs)


def test_paginates_partial_pages_drops_open_candle_and_reports_gaps(tmp_path):
    clock, ex = _setup(2500, page_cap=300, missing=(100, 101, 102, 2000))
    result = _fetch(tmp_path, ex, clock)
    bars = load_bars(tmp_path / "BTC_USDT-1h.parquet")
    assert len(bars) == 2500 - 4 and result.rows_total == len(bars) and result.rows_added == len(bars)
    assert bars.end == pd.Timestamp(START_MS + 2499 * HOUR_MS, unit="ms", tz="UTC")  # open candle 2500 not written
    assert result.dropped_open_candles == 1
    assert len(result.report.gaps) == 2 and result.report.missing_bars == 4
    assert result.pages == len(ex.calls) >= 9  # 300-row pages for 2500 rows
    # Each request asks from the bar after the last one received (no overlap, no holes).
    sinces = [c[0] for c in ex.calls]
    assert sinces[0] == START_MS and all(b > a for a, b in itertools.pairwise(sinces))
    # Paced: consecutive requests at least rateLimit ms apart on the (fake) monotonic clock.
    times = np.array([c[2] for c in ex.calls])
    assert np.all(np.diff(times) >= ex.rateLimit / 1000 - 1e-9)


def test_retries_network_and_rate_limit_errors_with_backoff(tmp_path):
    clock, ex = _setup(1500, errors={2: ccxt.NetworkError("connection reset"), 3: ccxt.RateLimitExceeded("429")})
    result = _fetch(tmp_path, ex, clock)
    assert result.retries == 2 and result.rows_total == 1500
    backoffs = [s for s in clock.sleeps if s >= 1.0]
    assert backoffs == [1.0, 2.0]  # exponential: initial, then doubled


def test_gives_up_after_max_retries_keeps_checkpoint_and_resumes(tmp_path):
    clock, ex = _setup(3000, page_cap=500, errors={i: ccxt.RequestTimeout("timeout") for i in range(4, 30)})
    cfg = FetchConfig(limit=1000, checkpoint_every_pages=1, max_retries=3, backoff_initial_s=0.5)
    with pytest.raises(DataError, match="failed after 3 retries: RequestTimeout"):
        _fetch(tmp_path, ex, clock, config=cfg)
    partial = load_bars(tmp_path / "BTC_USDT-1h.parquet")
    assert len(partial) == 1500  # three 500-row pages were checkpointed before the failures
    # Resume against a healthy exchange: continue after the last stored bar, no duplicates, same as a clean run.
    clock2, ex2 = _setup(3000, page_cap=500)
    result = _fetch(tmp_path, ex2, clock2, config=cfg)
    assert ex2.calls[0][0] == START_MS + 1500 * HOUR_MS
    assert result.rows_before == 1500 and result.rows_added == 1500
    clean_clock, clean_ex = _setup(3000, page_cap=500)
    _fetch(tmp_path, clean_ex, clean_clock, name="clean-1h.parquet")
    resumed = load_bars(tmp_path / "BTC_USDT-1h.parquet").frame
    clean = load_bars(tmp_path / "clean-1h.parquet").frame
    pd.testing.assert_frame_equal(resumed, clean)


def test_resume_appends_only_new_closed_bars_even_when_exchange_overlaps(tmp_path):
    clock, ex = _setup(1000)
    _fetch(tmp_path, ex, clock)
    clock.t += 5 * 3600.0  # five more hours close
    ex2 = FakeExchange(clock, 1005, lookback=3)
    result = _fetch(tmp_path, ex2, clock)
    assert result.rows_before == 1000 and result.rows_added == 5
    report, frame = validate_file(tmp_path / "BTC_USDT-1h.parquet")
    assert report.ok and not report.gaps and len(frame) == 1005
    assert not frame.index.duplicated().any()
    # Nothing new: one request, no change.
    again = _fetch(tmp_path, FakeExchange(clock, 1005), clock)
    assert again.rows_added == 0


def test_non_retryable_error_fails_at_once(tmp_path):
    clock, ex = _setup(100, errors={1: ccxt.BadSymbol("binance does not have market symbol BTC/XYZ")})
    with pytest.raises(DataError, match="BadSymbol: binance does not have market"):
        _fetch(tmp_path, ex, clock)
    assert len(ex.calls) == 1 and not (tmp_path / "BTC_USDT-1h.parquet").exists()


def test_unknown_symbol_and_timeframe(tmp_path):
    clock, ex = _setup(100, symbols=("ETH/USDT",))
    with pytest.raises(DataError, match="unknown symbol 'BTC/USDT'"):
        _fetch(tmp_path, ex, clock)
    clock, ex = _setup(100)
    from himari.errors import ConfigError

    with pytest.raises(ConfigError, match="timeframe 15m not offered"):
        fetch_to_file("fake", "BTC/USDT", "15m", "2024-01-01", tmp_path / "x.parquet",
                      factory=lambda _id: ex, clock=clock)


def test_invalid_candles_are_rejected_before_writing(tmp_path):
    clock, ex = _setup(200, bad_rows={50: [START_MS + 50 * HOUR_MS, 100.0, 99.0, 101.0, 100.5, 1.0]})
    with pytest.raises(DataError, match=r"row 51: high 99 < max\(open 100, close 100.5\) \(bar 2024-01-03T02:00Z\)"):
        _fetch(tmp_path, ex, clock)
    assert not (tmp_path / "BTC_USDT-1h.parquet").exists()


def test_resume_refuses_an_invalid_existing_file(tmp_path):
    path = tmp_path / "BTC_USDT-1h.csv"
    path.write_text("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,0.5,1,1,1\n"
                    "2024-01-01T01:00:00Z,1,2,0.5,1,1\n")
    clock, ex = _setup(10)
    with pytest.raises(DataError, match="not usable for resume"):
        _fetch(tmp_path, ex, clock, name="BTC_USDT-1h.csv")


def test_cli_fetch_with_fake_exchange(tmp_path, monkeypatch):
    clock, ex = _setup(400, page_cap=150, missing=(7,))
    monkeypatch.setattr(fetch_module, "ccxt_exchange", lambda _id: ex)
    monkeypatch.setattr(fetch_module, "SystemClock", lambda: clock)
    out = tmp_path / "BTC_USDT-1h.csv.gz"
    args = ["data", "fetch", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
            "--since", "2024-01-01", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "399 bars" in result.output and "1 gap events" in result.output
    assert len(load_bars(out)) == 399
    # Default output goes to the store.
    monkeypatch.setenv("HIMARI_DATA_DIR", str(tmp_path / "store"))
    result = CliRunner().invoke(cli, args[:-2])
    assert result.exit_code == 0, result.output
    listing = CliRunner().invoke(cli, ["data", "store", "list"])
    assert "binance" in listing.output and "BTC/USDT" in listing.output and "399" in listing.output


def test_cli_fetch_error_is_one_line(tmp_path, monkeypatch):
    clock, ex = _setup(50, errors={1: ccxt.AuthenticationError("invalid key")})
    monkeypatch.setattr(fetch_module, "ccxt_exchange", lambda _id: ex)
    monkeypatch.setattr(fetch_module, "SystemClock", lambda: clock)
    result = CliRunner().invoke(cli, ["data", "fetch", "--symbol", "BTC/USDT", "--since", "2024-01-01",
                                      "--out", str(tmp_path / "x-1h.parquet")])
    assert result.exit_code == 2
    assert "AuthenticationError: invalid key" in result.output and "Traceback" not in result.output


def test_no_closed_candles_is_an_error_and_writes_nothing(tmp_path):
    clock, ex = _setup(0)  # only the still-open candle exists
    with pytest.raises(DataError, match="no closed candles from 2024-01-01T00:00Z; nothing written"):
        _fetch(tmp_path, ex, clock)
    assert not (tmp_path / "BTC_USDT-1h.parquet").exists()


def test_missing_volume_cell_is_rejected_with_its_bar(tmp_path):
    clock, ex = _setup(30, bad_rows={3: [START_MS + 3 * HOUR_MS, 100.0, 101.0, 99.0, 100.0, None]})
    with pytest.raises(DataError, match=r"row 4: volume is NaN/empty \(bar 2024-01-01T03:00Z\)"):
        _fetch(tmp_path, ex, clock)
