"""The one code path: a session fed bar by bar (paper trading) matches the backtester; timing; resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from himari.backtest.backtester import run_backtest
from himari.errors import DataError
from himari.trading.engine import DecisionEngine
from himari.trading.session import SessionConfig, TradingSession

START, END = "2023-01-10", "2023-01-14"
PAPER_START = "2023-01-13"  # the paper loop replays the last day (each bar rebuilds features from history)


@pytest.fixture(params=["mlp", "stack"])
def any_bundle(request, bundle, stack_bundle):
    """The single-policy test bundle and a stacked one (L2 ensemble -> L3 sizer ensemble -> risk)."""
    return bundle if request.param == "mlp" else stack_bundle


def test_decision_uses_no_future_bars(any_bundle, btc_slice):
    """The decision at bar t is identical whether the market holds bars after t or not (also for the stack)."""
    bundle = any_bundle
    engine = DecisionEngine(bundle)
    full = engine.build_market({"BTCUSDT": btc_slice.between(None, END)})
    t = full.index_of("2023-01-12T05:00")
    cut = engine.build_market({"BTCUSDT": btc_slice.between(None, "2023-01-12T06:00")})
    assert cut.num_bars == t + 1
    from himari.trading.engine import AccountSnapshot

    acct = AccountSnapshot.flat(1)
    d_full, _ = DecisionEngine(bundle).decide_at(full, t, acct, None)
    d_cut, _ = DecisionEngine(bundle).decide_at(cut, t, acct, None)
    np.testing.assert_allclose(d_full.target_position, d_cut.target_position, rtol=0, atol=1e-12)
    assert d_full.actions == d_cut.actions


def test_fills_happen_at_next_bar_open_with_costs(bundle, btc_slice):
    result = run_backtest(bundle, {"BTCUSDT": btc_slice}, START, END, show_progress=False)
    assert result.fills, "the test policy should trade at least once in four days"
    opens = btc_slice.frame["open"]
    for fill in result.fills:
        bar_open = opens.loc[pd.Timestamp(fill["timestamp_ns"], tz="UTC")]
        # slippage makes buys fill above and sells below the bar's open
        if fill["side"] == "BUY":
            assert fill["price"] > bar_open
        else:
            assert fill["price"] < bar_open
        assert fill["fee"] > 0
        # the order decided at bar t fills at bar t+1
        decided = int(fill["order_id"].split(":")[1])
        assert fill["timestamp_ns"] - decided == 3600 * 10**9


def test_paper_loop_matches_backtest(any_bundle, btc_slice):
    """Feeding bars one at a time (features rebuilt from trailing history) gives the backtester's fills (also for
    the stack)."""
    bundle = any_bundle
    result = run_backtest(bundle, {"BTCUSDT": btc_slice}, PAPER_START, END, show_progress=False)
    session = TradingSession(bundle, SessionConfig())
    history = btc_slice.between(None, END)
    start_i = int(history.index.searchsorted(pd.Timestamp(PAPER_START, tz="UTC")))
    fills = []
    equity = []
    for i in range(start_i, len(history)):
        out = session.on_bar(history.head(i + 1))
        fills.extend(f.to_dict() for f in out.fills)
        equity.append(out.equity)
    assert [f["order_id"] for f in fills] == [f["order_id"] for f in result.fills]
    for a, b in zip(fills, result.fills, strict=True):
        assert a["price"] == pytest.approx(b["price"], rel=1e-9)
        assert a["fee"] == pytest.approx(b["fee"], rel=1e-6)
    bt_equity = 10_000 * np.cumprod(1 + result.strategy.net_returns)
    np.testing.assert_allclose(equity[1:], bt_equity, rtol=1e-9)


def test_state_dict_resume_equals_uninterrupted(bundle, btc_slice):
    history = btc_slice.between(None, END)
    n = len(history)
    first = n - 24
    straight = TradingSession(bundle)
    for i in range(first, n):
        last = straight.on_bar(history.head(i + 1))
    resumed = TradingSession(bundle)
    for i in range(first, n - 12):
        resumed.on_bar(history.head(i + 1))
    state = resumed.state_dict()
    import json

    restored = TradingSession(bundle)
    restored.load_state_dict(json.loads(json.dumps(state)))  # must survive JSON
    for i in range(n - 12, n):
        out = restored.on_bar(history.head(i + 1))
    assert out.equity == pytest.approx(last.equity, rel=1e-12)
    np.testing.assert_allclose(out.decision.target_position, last.decision.target_position, atol=1e-12)


def test_duplicate_or_skipped_bar_is_refused(bundle, btc_slice):
    history = btc_slice.between(None, END)
    session = TradingSession(bundle)
    session.on_bar(history.head(len(history) - 5))
    with pytest.raises(DataError, match="not after the last processed bar"):
        session.on_bar(history.head(len(history) - 5))
    with pytest.raises(DataError, match="missing from the feed"):
        session.on_bar(history.head(len(history) - 2))


def test_carry_across_periods_equals_one_uninterrupted_backtest(bundle, btc_slice):
    """Walk-forward stitching: trading [A, B) then carrying the account into [B, C) is one continuous account."""
    whole = run_backtest(bundle, {"BTCUSDT": btc_slice}, "2023-01-10", "2023-01-14", show_progress=False)
    first = run_backtest(bundle, {"BTCUSDT": btc_slice}, "2023-01-10", "2023-01-12", show_progress=False)
    second = run_backtest(bundle, {"BTCUSDT": btc_slice}, "2023-01-12", "2023-01-14", show_progress=False,
                          carry=first.carry, with_baselines=False)
    stitched = first.concat(second)
    np.testing.assert_array_equal(stitched.timestamps_ns, whole.timestamps_ns)
    np.testing.assert_allclose(stitched.strategy.net_returns, whole.strategy.net_returns, rtol=0, atol=1e-12)
    np.testing.assert_allclose(stitched.strategy.positions, whole.strategy.positions, rtol=0, atol=1e-12)
    assert [f["order_id"] for f in stitched.fills] == [f["order_id"] for f in whole.fills]
