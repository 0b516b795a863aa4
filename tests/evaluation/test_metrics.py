"""Metrics of ``metrics.json`` against hand computations and at the edges (zero, one bar, NaN, constant)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from himari.env.protocol import HOLD, LONG, SHORT
from himari.errors import DataError
from himari.evaluation.metrics import (
    compute_metrics,
    count_trades,
    drawdown_curve,
    max_drawdown,
    rolling_sharpe,
    sharpe_ratio,
)
from himari.utils.io import to_json


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n)


def test_hand_computed_example() -> None:
    r = np.array([0.10, -0.05, 0.02, 0.0, -0.01])
    pos = np.array([1.0, 1.0, 0.0, -1.0, -1.0])
    turn = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    fees = 0.001 * turn
    m = compute_metrics(r, pos, turn, fees, "1d")
    equity = np.cumprod(1 + r)
    assert m["total_return"] == pytest.approx(equity[-1] - 1)
    assert m["annual_return"] == pytest.approx(equity[-1] ** (365 / 5) - 1)
    assert m["annual_volatility"] == pytest.approx(r.std(ddof=1) * math.sqrt(365))
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(365))
    downside = math.sqrt(np.mean(np.minimum(r, 0) ** 2))
    assert m["sortino"] == pytest.approx(r.mean() / downside * math.sqrt(365))
    # Equity 1.1, 1.045, 1.0659, 1.0659, 1.0552: the deepest fall is 1.1 -> 1.045.
    assert m["max_drawdown"] == pytest.approx(0.05)
    assert m["calmar"] == pytest.approx(m["annual_return"] / m["max_drawdown"])
    # Active bars 0, 1, 3, 4: returns 0.10, -0.05, 0.0, -0.01 -> 1 of 4 positive.
    assert m["win_rate"] == pytest.approx(0.25)
    assert m["profit_factor"] == pytest.approx((0.10 + 0.02) / (0.05 + 0.01))
    assert m["exposure"] == pytest.approx(0.8)
    assert m["n_trades"] == 2  # long entry at bar 0, short entry at bar 3
    assert m["n_fills"] == 3
    assert m["turnover"] == pytest.approx(3.0 / (5 / 365))
    equity_before = np.concatenate([[1.0], equity[:-1]])
    assert m["fees_paid"] == pytest.approx(float((fees * equity_before).sum()))
    assert m["action_source"] == "position_sign"
    assert m["action_distribution"] == pytest.approx({"HOLD": 0.2, "LONG": 0.4, "SHORT": 0.4})


def test_annualization_from_timeframe() -> None:
    # One year of 4h bars, each with the same return: annual return equals total return.
    n = 2190
    r = np.full(n, 1.5 ** (1 / n) - 1)
    r[::2] += 1e-4
    r[1::2] -= 1e-4
    m = compute_metrics(r, np.ones(n), _zeros(n), _zeros(n), "4h")
    assert m["periods_per_year"] == pytest.approx(2190)
    assert m["annual_return"] == pytest.approx(m["total_return"], rel=1e-9)
    assert m["years"] == pytest.approx(1.0)


def test_all_zero_returns() -> None:
    n = 100
    m = compute_metrics(_zeros(n), _zeros(n), _zeros(n), _zeros(n), "1h")
    assert m["total_return"] == 0.0
    assert m["sharpe"] == 0.0
    assert m["sortino"] == 0.0
    assert m["calmar"] == 0.0
    assert m["max_drawdown"] == 0.0
    assert m["profit_factor"] == 0.0
    assert m["exposure"] == 0.0
    assert math.isnan(m["win_rate"])  # no active bar
    assert m["n_trades"] == 0
    assert m["action_distribution"]["HOLD"] == 1.0


def test_one_bar() -> None:
    m = compute_metrics(np.array([0.01]), np.array([1.0]), np.array([1.0]), np.array([0.0]), "1h")
    assert m["total_return"] == pytest.approx(0.01)
    assert math.isnan(m["sharpe"]) and math.isnan(m["annual_volatility"]) and math.isnan(m["sortino"])
    assert m["max_drawdown"] == 0.0
    json.loads(to_json(m))  # undefined values serialize as null


def test_constant_returns_never_inf() -> None:
    n = 50
    m = compute_metrics(np.full(n, 0.001), np.ones(n), _zeros(n), _zeros(n), "1h")
    for key in ("sharpe", "sortino", "calmar", "profit_factor"):
        assert not math.isinf(m[key]), key
    assert math.isnan(m["sharpe"])  # zero variance, positive mean: undefined
    assert math.isnan(m["calmar"])  # no drawdown
    assert '"sharpe": null' in to_json(m)


@pytest.mark.parametrize("field", ["net_returns", "positions", "turnover", "fees"])
def test_nan_input_raises_naming_field_and_bar(field: str) -> None:
    arrays = {"net_returns": np.zeros(10), "positions": np.ones(10), "turnover": np.zeros(10), "fees": np.zeros(10)}
    arrays[field][7] = np.nan
    with pytest.raises(DataError, match=rf"'{field}' is NaN or inf at bar 7"):
        compute_metrics(arrays["net_returns"], arrays["positions"], arrays["turnover"], arrays["fees"], "1h")


def test_bad_inputs() -> None:
    with pytest.raises(DataError, match="empty"):
        compute_metrics(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), "1h")
    with pytest.raises(DataError, match="'positions' has 9 bars, expected 10"):
        compute_metrics(np.zeros(10), np.zeros(9), np.zeros(10), np.zeros(10), "1h")
    r = np.zeros(10)
    r[3] = -1.5
    with pytest.raises(DataError, match="below -100% at bar 3"):
        compute_metrics(r, np.zeros(10), np.zeros(10), np.zeros(10), "1h")
    with pytest.raises(DataError, match="'turnover' is negative at bar 2"):
        compute_metrics(np.zeros(10), np.zeros(10), np.array([0, 0, -1.0, *[0] * 7]), np.zeros(10), "1h")
    with pytest.raises(DataError, match=r"'actions'.*bar 1"):
        compute_metrics(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), "1h", actions=np.array([0, 5, 1]))
    with pytest.raises(DataError, match=r"'regimes'.*bar 0"):
        compute_metrics(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), "1h", regimes=np.array([4, 0, 1]))


def test_per_regime_and_actions() -> None:
    rng = np.random.default_rng(3)
    n = 400
    r = rng.normal(0, 0.01, n)
    regimes = np.repeat([0, 1, 2, -1], 100)  # no CRISIS bars; 100 unknown (warm-up) bars left out
    actions = np.tile([HOLD, LONG, LONG, SHORT], 100)
    pos = np.where(actions == LONG, 1.0, np.where(actions == SHORT, -1.0, 0.0))
    m = compute_metrics(r, pos, np.zeros(n), np.zeros(n), "1h", regimes=regimes, actions=actions)
    assert m["action_source"] == "actions"
    per = m["per_regime"]
    assert per["LOW_VOL"]["n_bars"] == 100 and per["LOW_VOL"]["share_of_bars"] == pytest.approx(0.25)
    assert per["TRENDING"]["total_return"] == pytest.approx(np.prod(1 + r[100:200]) - 1)
    assert per["HIGH_VOL"]["sharpe"] == pytest.approx(sharpe_ratio(r[200:300], 8760.0))
    assert per["LOW_VOL"]["actions"] == pytest.approx({"HOLD": 0.25, "LONG": 0.5, "SHORT": 0.25})
    assert per["LOW_VOL"]["exposure"] == pytest.approx(0.75)
    assert per["CRISIS"]["n_bars"] == 0 and math.isnan(per["CRISIS"]["sharpe"])
    json.loads(to_json(m))


def test_multi_asset_positions() -> None:
    pos = np.array([[0.5, 0.0], [0.5, -0.5], [0.0, -0.5], [0.0, 0.0]])
    turn = np.abs(np.diff(np.vstack([np.zeros((1, 2)), pos]), axis=0))
    m = compute_metrics(np.array([0.01, -0.01, 0.0, 0.0]), pos, turn, 0.001 * turn, "1h")
    assert m["exposure"] == pytest.approx(0.75)
    assert m["avg_gross_exposure"] == pytest.approx((0.5 + 1.0 + 0.5 + 0.0) / 4)
    assert m["n_trades"] == 2
    assert m["n_fills"] == 4
    assert count_trades(pos) == (2, 4)


def test_benchmark_beta_and_information_ratio() -> None:
    rng = np.random.default_rng(0)
    b = rng.normal(0.0002, 0.01, 2000)
    r = 2 * b
    m = compute_metrics(r, np.full(2000, 2.0), np.zeros(2000), np.zeros(2000), "1h", benchmark=b)
    assert m["benchmark"]["beta"] == pytest.approx(2.0)
    assert m["benchmark"]["correlation"] == pytest.approx(1.0)
    assert m["benchmark"]["alpha_annual"] == pytest.approx(0.0, abs=1e-9)
    assert m["benchmark"]["information_ratio"] == pytest.approx(sharpe_ratio(b, 8760.0))


def test_drawdown_curve_and_max() -> None:
    r = np.array([0.5, -0.2, -0.25, 0.5, 0.1])
    equity = np.cumprod(1 + r)  # 1.5, 1.2, 0.9, 1.35, 1.485
    dd = drawdown_curve(r)
    assert dd == pytest.approx([0, 0.2, 0.4, 0.1, 0.01])
    assert max_drawdown(r) == pytest.approx(0.4)
    # A loss on the first bar is a drawdown from the initial equity of 1.
    assert max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(0.1)
    assert equity[-1] == pytest.approx(1.485)


def test_rolling_sharpe_is_causal_and_exact() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(0.0001, 0.01, 500)
    full = rolling_sharpe(r, 48, 8760.0)
    assert np.isnan(full[:47]).all()
    for t in (47, 100, 333, 499):
        assert full[t] == pytest.approx(sharpe_ratio(r[t - 47 : t + 1], 8760.0), rel=1e-9)
        np.testing.assert_allclose(rolling_sharpe(r[: t + 1], 48, 8760.0), full[: t + 1], rtol=1e-12)


def test_cagr_cannot_overflow() -> None:
    import math

    from himari.evaluation.metrics import cagr

    assert cagr(1e300, 10, 8760.0) == math.inf  # (1 + 1e300) ** 876 overflowed with OverflowError
    assert cagr(0.21, 17520, 8760.0) == pytest.approx(0.1, rel=1e-12)
    assert cagr(-1.0, 5, 8760.0) == -1.0 and math.isnan(cagr(0.1, 0, 8760.0))
