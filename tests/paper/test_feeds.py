"""Feeds: replay alignment and pacing; the ccxt feed against a fake exchange on a fake clock (no real sleeps)."""

from __future__ import annotations

from pathlib import Path

import ccxt
import numpy as np
import pytest

from himari.data.loaders import load_bars
from himari.errors import ConfigError, DataError
from himari.paper.feeds import CcxtFeed, ReplayFeed, normalize_symbol, parse_feed_specs
from himari.paper.runner import run_paper_command
from himari.paper.store import PaperStore
from tests.paper.factory import fake_session_factory

HOUR_MS = 3_600_000


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now_ms

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now_ms += round(seconds * 1000)


class FakeExchange:
    """``fetch_ohlcv`` over recorded bars as ccxt returns them: pages of ``limit`` rows from ``since``, including the
    still-forming candle, with injectable network errors and a publication lag."""

    def __init__(self, bars, clock: FakeClock, page_cap: int = 50, errors: list[Exception] | None = None,
                 publish_lag_ms: int = 0) -> None:
        self.rows = np.column_stack([bars.timestamps_ns // 1_000_000, bars.open, bars.high, bars.low, bars.close,
                                     bars.volume])
        self.clock = clock
        self.page_cap = page_cap
        self.errors = list(errors or [])
        self.publish_lag_ms = publish_lag_ms
        self.calls: list[tuple[str, str, int, int]] = []

    def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, limit: int) -> list[list[float]]:
        self.calls.append((symbol, timeframe, since, limit))
        if self.errors:
            raise self.errors.pop(0)
        assert symbol == "BTC/USDT" and timeframe == "1h"
        now = self.clock()
        visible = self.rows[(self.rows[:, 0] >= since) & (self.rows[:, 0] <= now - self.publish_lag_ms)]
        out = visible[: min(limit, self.page_cap)].tolist()
        if out and out[-1][0] + HOUR_MS > now:  # the forming candle: partial values, as exchanges return it
            out[-1] = [out[-1][0], out[-1][1], out[-1][1] * 1.5, out[-1][1] * 0.5, out[-1][1], 0.0]
        return [[int(r[0]), *r[1:]] for r in out]


def test_replay_feed_emits_the_union_of_timestamps_and_paces_only_after_start() -> None:
    btc = load_bars("BTCUSDT").between("2021-04-19", "2021-04-22")
    btc = btc.with_frame(btc.frame.drop(btc.index[40:43]))  # three BTC bars missing where ETH has them
    eth = load_bars("ETHUSDT").between("2021-04-19", "2021-04-22")
    slept: list[float] = []
    feed = ReplayFeed({"BTCUSDT": btc, "ETHUSDT": eth}, speed=3600.0, sleep=slept.append)
    feed.pace_from_ns = int(btc.timestamps_ns[10])
    events = list(feed)
    union = np.union1d(btc.timestamps_ns, eth.timestamps_ns)
    assert [e.ts_ns for e in events] == union.tolist()
    assert len(union) == len(btc) + 3
    for e in events:  # each symbol's own bar, only where it has one
        assert ("BTCUSDT" in e.rows) == (e.ts_ns in set(btc.timestamps_ns.tolist()))
        j = int(np.searchsorted(eth.timestamps_ns, e.ts_ns))
        assert np.allclose(e.rows["ETHUSDT"], [eth.open[j], eth.high[j], eth.low[j], eth.close[j], eth.volume[j]])
    paced = sum(1 for e in events if e.ts_ns > feed.pace_from_ns)
    assert slept == [1.0] * paced  # 3600 s bars at 3600x: one second each, warm-up not slept through
    with pytest.raises(ConfigError, match="speed"):
        ReplayFeed({"BTCUSDT": btc}, speed=-1)


def test_feed_specs() -> None:
    assert parse_feed_specs(["replay:a.csv", "replay:b.csv"]) == ("replay", [("a.csv",), ("b.csv",)])
    assert parse_feed_specs(["ccxt:binance:BTC/USDT"]) == ("ccxt", [("binance", "BTC/USDT")])
    for bad in (["ccxt:binance"], ["replay:"], ["file:x"], ["replay:a", "ccxt:binance:BTC/USDT"], []):
        with pytest.raises(ConfigError):
            parse_feed_specs(bad)
    assert normalize_symbol("BTC/USDT:USDT") == "BTCUSDT" and normalize_symbol("eth-usdt") == "ETHUSDT"


@pytest.fixture(scope="module")
def btc_day_bars():
    return load_bars("BTCUSDT").between("2023-03-01", "2023-03-12")


def test_ccxt_feed_yields_closed_candles_only_and_retries(btc_day_bars) -> None:
    bars = btc_day_bars
    start_ms = int(bars.timestamps_ns[100] // 1_000_000) + 30 * 60 * 1000  # half-way through bar 100
    clock = FakeClock(start_ms)
    errors = [ccxt.RequestTimeout("timeout"), ccxt.NetworkError("reset")]
    exchange = FakeExchange(bars, clock, page_cap=17, errors=errors, publish_lag_ms=5_000)
    feed = CcxtFeed(exchange, {"BTCUSDT": "BTC/USDT"}, "1h", warmup_bars=40, poll_interval_s=600,
                    max_live_bars=30, clock_ms=clock, sleep=clock.sleep)
    events = list(feed)
    ts = np.array([e.ts_ns for e in events])
    # warm-up: the 40 bars before the forming one (bar 100 is still open at start) ...
    assert ts[0] == bars.timestamps_ns[100 - 41] and feed.live_from_ns == bars.timestamps_ns[99]
    # ... then 30 live bars, each yielded only once closed, in order, without duplicates
    assert np.array_equal(ts, bars.timestamps_ns[59:130])
    for e in events:
        k = int(np.searchsorted(bars.timestamps_ns, e.ts_ns))
        assert np.allclose(e.rows["BTCUSDT"], [bars.open[k], bars.high[k], bars.low[k], bars.close[k], bars.volume[k]])
    assert clock() >= (bars.timestamps_ns[129] // 1_000_000) + HOUR_MS  # never yielded before the close
    assert clock.slept[:2] == [1.0, 2.0]  # exponential backoff on the two network errors
    assert max(clock.slept) <= 600


def test_ccxt_feed_gives_up_after_repeated_errors_and_stops_on_exchange_errors(btc_day_bars) -> None:
    clock = FakeClock(int(btc_day_bars.timestamps_ns[50] // 1_000_000))
    down = FakeExchange(btc_day_bars, clock, errors=[ccxt.ExchangeNotAvailable("down")] * 10)
    feed = CcxtFeed(down, {"BTCUSDT": "BTC/USDT"}, "1h", warmup_bars=5, max_consecutive_errors=4, clock_ms=clock,
                    sleep=clock.sleep)
    with pytest.raises(DataError, match="failed 4 times in a row"):
        list(feed)
    bad_symbol = FakeExchange(btc_day_bars, clock, errors=[ccxt.BadSymbol("no such market")])
    with pytest.raises(DataError, match="no such market"):
        list(CcxtFeed(bad_symbol, {"BTCUSDT": "BTC/USDT"}, "1h", warmup_bars=5, clock_ms=clock, sleep=clock.sleep))


def test_ccxt_feed_rejects_corrupt_candles(btc_day_bars) -> None:
    clock = FakeClock(int(btc_day_bars.timestamps_ns[50] // 1_000_000))

    class Corrupt(FakeExchange):
        def fetch_ohlcv(self, symbol, timeframe, since, limit):
            rows = super().fetch_ohlcv(symbol, timeframe, since, limit)
            rows[2][4] = -1.0
            return rows

    with pytest.raises(DataError, match="non-positive price"):
        list(CcxtFeed(Corrupt(btc_day_bars, clock), {"BTCUSDT": "BTC/USDT"}, "1h", warmup_bars=10, clock_ms=clock,
                      sleep=clock.sleep))


def test_ccxt_paper_run_matches_replay_and_catches_up_after_restart(tmp_path: Path, btc_day_bars) -> None:
    bars = btc_day_bars
    start_ms = int(bars.timestamps_ns[80] // 1_000_000) + 1000
    # live run: 40 bars, restarted after 15 bars with 6 bars missed while "down"
    clock = FakeClock(start_ms)
    live_db = tmp_path / "live.sqlite"
    common = dict(session_factory=fake_session_factory, ccxt_clock_ms=clock, ccxt_sleep=clock.sleep)
    run_paper_command("m", ["ccxt:binance:BTC/USDT"], live_db, max_bars=15,
                      exchange_factory=lambda name: FakeExchange(bars, clock), **common)
    clock.now_ms += 6 * HOUR_MS
    s2 = run_paper_command("m", ["ccxt:binance:BTC/USDT"], live_db, max_bars=25,
                           exchange_factory=lambda name: FakeExchange(bars, clock), **common)
    assert s2.resumed_from_ns is not None
    with PaperStore(live_db, readonly=True) as store:
        live_ts, live_eq, _ = store.equity_curve("champion")
        live_fills = store.fills()
    assert np.array_equal(live_ts, bars.timestamps_ns[79:119])  # no bar lost across the restart
    # the same bars replayed from a file give the same equity and fills
    csv = tmp_path / "BTCUSDT-1h.csv"
    frame = bars.frame.reset_index()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(csv, index=False)
    replay_db = tmp_path / "replay.sqlite"
    run_paper_command("m", [f"replay:{csv}"], replay_db, session_factory=fake_session_factory,
                      start=str(bars.index[79]), end=str(bars.index[119]))
    with PaperStore(replay_db, readonly=True) as store:
        rep_ts, rep_eq, _ = store.equity_curve("champion")
        rep_fills = store.fills()
    assert np.array_equal(rep_ts, live_ts) and np.allclose(rep_eq, live_eq, rtol=0, atol=0)
    assert rep_fills == live_fills and len(live_fills) > 3
