"""Monthly returns against pandas, the trade list against a hand-made case and a plain loop."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from himari.report.tables import monthly_returns, trade_list

HOUR_NS = 3_600_000_000_000


def test_monthly_returns_match_pandas() -> None:
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2022-11-20", tz="UTC").value
    ts = start + np.arange(24 * 120) * HOUR_NS
    ts = np.delete(ts, np.arange(24 * 20, 24 * 55))  # a gap: December 2022 has some bars, not all
    r = rng.normal(0, 0.01, ts.size)
    table = monthly_returns(ts, r)
    series = pd.Series(r, index=pd.to_datetime(ts, utc=True))
    expected = (1 + series).groupby([series.index.year, series.index.month]).prod() - 1
    assert table.years.tolist() == [2022, 2023]
    for (year, month), value in expected.items():
        np.testing.assert_allclose(table.returns[table.years.tolist().index(year), month - 1], value, rtol=1e-10)
    assert np.isnan(table.returns[0, :10]).all()  # Jan..Oct 2022: no bars
    assert np.isnan(table.returns[1, 3:]).all()  # the series ends in March 2023
    yearly = (1 + series).groupby(series.index.year).prod() - 1
    np.testing.assert_allclose(table.year_total, yearly.to_numpy(), rtol=1e-10)


def test_monthly_returns_empty() -> None:
    table = monthly_returns(np.zeros(0, np.int64), np.zeros(0))
    assert table.years.size == 0 and table.returns.shape == (0, 12)


def test_trade_list_hand_case() -> None:
    pos = np.array([0, 1, 1, 0, -0.5, -0.5, 1, 1])
    r = np.array([0.0, 0.1, -0.05, -0.001, 0.02, 0.01, 0.03, -0.01])
    close = np.array([100, 110, 104.5, 104.5, 102, 101, 104, 103.0])
    trades = trade_list(pos, r, close)
    assert [(t.side, t.first_bar, t.last_bar) for t in trades] == [(1, 1, 2), (-1, 4, 5), (1, 6, 7)]
    # Long 1..2 went flat at bar 3: that bar's return (the exit fee) belongs to the trade.
    np.testing.assert_allclose(trades[0].trade_return, 1.1 * 0.95 * 0.999 - 1)
    np.testing.assert_allclose(trades[0].asset_move, 104.5 / 100 - 1)
    # The short flips to long at bar 6: no flat bar, the flip's fee is in the next trade's first bar.
    np.testing.assert_allclose(trades[1].trade_return, 1.02 * 1.01 - 1)
    np.testing.assert_allclose(trades[1].mean_abs_position, 0.5)
    np.testing.assert_allclose(trades[2].trade_return, 1.03 * 0.99 - 1)  # open at the end of the data


def test_trade_list_matches_plain_loop() -> None:
    rng = np.random.default_rng(11)
    pos = rng.choice([-1.0, 0.0, 0.5, 1.0], size=400, p=[0.2, 0.3, 0.2, 0.3])
    pos = np.repeat(pos, rng.integers(1, 6, size=400))[:600]
    trades = trade_list(pos)
    expected = []
    current = None
    for t, p in enumerate(pos):
        s = int(np.sign(p))
        if current is not None and s != current[0]:
            expected.append((current[0], current[1], t - 1))
            current = None
        if current is None and s != 0:
            current = (s, t)
    if current is not None:
        expected.append((current[0], current[1], len(pos) - 1))
    assert [(t.side, t.first_bar, t.last_bar) for t in trades] == expected
    assert all(math.isnan(t.trade_return) for t in trades)  # no returns given


def test_trade_list_several_assets() -> None:
    pos = np.array([[0, 1], [1, 1], [1, 0], [0, -1]], dtype=float)
    trades = trade_list(pos, np.zeros(4), np.ones(4))
    assert [(t.asset, t.side, t.first_bar, t.last_bar) for t in trades] == [(1, 1, 0, 1), (0, 1, 1, 2), (1, -1, 3, 3)]
    assert all(math.isnan(t.trade_return) and math.isnan(t.asset_move) for t in trades)
    assert trade_list(np.zeros(5)) == []
