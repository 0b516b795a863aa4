"""``MarketStream``: tactical rows folded in bar by bar give the batch transform's decisions on real data, and are a
function of the bars only (a fresh process rebuilds the same floats), across anchors and real gaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from himari.backtest.backtester import run_backtest
from himari.data.bars import Bars
from himari.trading.bundle import Bundle, load_bundle
from himari.trading.engine import DecisionEngine
from himari.trading.session import SessionConfig, TradingSession
from himari.trading.stream import MarketStream, anchor_period

HISTORY = 600  # bars a stream keeps in the row tests (anchor period 150: several anchors in the replay)
REPLAY_START, REPLAY_END = "2018-06-20", "2018-07-06"  # ~380 bars with three real gaps


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    from tests.paper.real_bundle import build_mlp_bundle

    run: Path = build_mlp_bundle(tmp_path_factory.mktemp("stream_run"), seed=3)
    return load_bundle(run)


@pytest.fixture(scope="module")
def history(btc_bars: Bars) -> Bars:
    return btc_bars.between(None, REPLAY_END)


def _replay_start(history: Bars) -> int:
    return int(history.index.searchsorted(pd.Timestamp(REPLAY_START, tz="UTC")))


def test_streamed_decisions_equal_the_batch_ones_on_real_data(bundle: Bundle, history: Bars) -> None:
    """Paper trading with streamed rows against the backtester (one batch transform of the whole history) over
    ~380 real bars with three gaps: same actions, binding gates and fills; equity equal to float roundoff."""
    start = _replay_start(history)
    result = run_backtest(bundle, {"BTCUSDT": history}, REPLAY_START, REPLAY_END, show_progress=False,
                          with_baselines=False)
    session = TradingSession(bundle, SessionConfig())  # 3,000 bars: every risk window as in the backtest
    assert len(history) - start > 300 and history.gap_before[start:].sum() >= 3
    fills, equity, decisions = [], [], []
    for i in range(start, len(history)):
        out = session.on_bar(history.head(i + 1))
        fills.extend(f.to_dict() for f in out.fills)
        equity.append(out.equity)
        decisions.append(out.decision)
    assert len(decisions) == len(result.decisions)
    for d, ref in zip(decisions, result.decisions, strict=True):
        assert d.timestamp_ns == ref["timestamp_ns"]
        assert "|".join(d.actions) == ref["actions"]
        assert "|".join(d.binding) == ref["binding_gate"]
        assert "|".join(f"{v:.6f}" for v in d.target_position) == ref["target"]
    assert fills and [f["order_id"] for f in fills] == [f["order_id"] for f in result.fills]
    for a, b in zip(fills, result.fills, strict=True):
        assert a["price"] == pytest.approx(b["price"], rel=1e-9)
        assert a["fee"] == pytest.approx(b["fee"], rel=1e-6)
    bt_equity = 10_000 * np.cumprod(1 + result.strategy.net_returns)
    np.testing.assert_allclose(equity[1:], bt_equity, rtol=1e-9)


def test_rows_are_a_function_of_the_bars(bundle: Bundle, history: Bars) -> None:
    """A stream that followed the bars for hundreds of bars and one started fresh at bar t hold bit-equal rows
    (anchored rebuilds), at every bar of an epoch and right after an anchor."""
    history = history.between("2018-04-01", None)
    start = _replay_start(history)
    period = anchor_period(HISTORY)
    following = MarketStream(bundle.tactical, bundle.symbols, HISTORY)
    checked = 0
    for i in range(start, len(history)):
        window = history.head(i + 1)
        window = window.with_frame(window.frame.iloc[-HISTORY:])
        m_follow = following.market({"BTCUSDT": window})
        if (i - start) % 37 and i != len(history) - 1:
            continue
        m_fresh = MarketStream(bundle.tactical, bundle.symbols, HISTORY).market({"BTCUSDT": window})
        assert m_follow is not None and m_fresh is not None
        for name in ("features", "regime_posterior", "valid", "tradable"):
            np.testing.assert_array_equal(getattr(m_follow, name), getattr(m_fresh, name), err_msg=f"{name} bar {i}")
        checked += 1
    assert checked >= 8 and (len(history) - start) > 2 * period


def test_batch_cold_start_leaves_the_kept_stream_alone(bundle: Bundle, history: Bars) -> None:
    """The API's engine: an unrelated history is transformed in batch; the kept stream continues afterwards."""
    engine = DecisionEngine(bundle, history_bars=HISTORY)
    history = history.between("2018-04-01", None)
    start = _replay_start(history)
    first = engine.build_market({"BTCUSDT": history.head(start)}, HISTORY)
    other = history.head(start - 50)
    batch = engine.build_market({"BTCUSDT": other}, HISTORY)
    reference = DecisionEngine(bundle, history_bars=HISTORY, incremental=False)
    np.testing.assert_array_equal(batch.features, reference.build_market({"BTCUSDT": other}, HISTORY).features)
    stream = engine._streams[HISTORY].streams["BTCUSDT"]
    assert stream.last_ts == int(first.timestamps_ns[-1])
    nxt = engine.build_market({"BTCUSDT": history.head(start + 1)}, HISTORY)
    assert stream.last_ts == int(nxt.timestamps_ns[-1])
    np.testing.assert_array_equal(nxt.features[:-1][-20:], first.features[-20:])


def test_batch_cold_start_follows_a_feed_that_moved_on(bundle: Bundle, history: Bars) -> None:
    """A history that ends after the kept stream (e.g. the kept bars were reset and refilled) replaces it, with the
    rows a fresh anchored stream gives; the API's engine then continues bar by bar again."""
    engine = DecisionEngine(bundle, history_bars=HISTORY)
    history = history.between("2018-04-01", None)
    start = _replay_start(history)
    engine.build_market({"BTCUSDT": history.head(start)}, HISTORY)
    frame = history.head(start + 40).frame.copy()
    frame.iloc[start - 1, frame.columns.get_loc("volume")] += 1.0  # the stream's last bar differs: no continuation
    later = history.with_frame(frame)
    moved = engine.build_market({"BTCUSDT": later}, HISTORY)
    fresh = MarketStream(bundle.tactical, bundle.symbols, HISTORY).market(
        {"BTCUSDT": later.with_frame(later.frame.iloc[-HISTORY:])})
    assert fresh is not None
    np.testing.assert_array_equal(moved.features, fresh.features)
    stream = engine._streams[HISTORY].streams["BTCUSDT"]
    assert stream.last_ts == int(later.timestamps_ns[-1])
