"""Cost and fill kernels: hand-computed cases, sides, masks, funding, one-bar (paper trading) use."""

from __future__ import annotations

import numpy as np
import pytest

from himari.env.execution import CostConfig, funding, mark_to_market, rebalance, slippage_fraction
from himari.errors import ConfigError


def test_defaults_are_realistic_costs() -> None:
    c = CostConfig()
    assert c.taker_fee_bps == 10.0 and c.fee_rate == pytest.approx(0.001)
    assert c.slippage_bps == 2.0 and c.fill == "next_open" and c.funding_rate_per_8h is None
    assert CostConfig(order_type="maker").fee_rate == pytest.approx(2e-4)
    with pytest.raises(ConfigError, match="taker_fee_bps"):
        CostConfig.parse({"taker_fee_bps": -1})
    with pytest.raises(ConfigError, match="fill"):
        CostConfig.parse({"fill": "same_close"})


def test_buy_hand_computed() -> None:
    # equity 1000, buy 50% at mark 100; slippage 2 bps + 0.05 * 1% = 7 bps; fee 10 bps of the filled notional.
    res = rebalance(
        np.array([0.0]),
        np.array([0.5]),
        np.array([100.0]),
        np.array(1000.0),
        np.array([0.01]),
        fee_rate=0.001,
        slippage_rate=0.0002,
        vol_slippage_coef=0.05,
    )
    s = 0.0007
    assert res.fill_price[0] == pytest.approx(100.0 * (1 + s))
    assert res.slippage_cost[0] == pytest.approx(500.0 * s)
    assert res.fee[0] == pytest.approx(0.001 * 500.0 * (1 + s))
    equity = 1000.0 - 500.0 * s - 0.001 * 500.0 * (1 + s)
    assert res.equity == pytest.approx(equity)
    assert res.position[0] == pytest.approx(500.0 / equity)
    assert res.turnover[0] == pytest.approx(0.5)


def test_sell_fills_below_mark_and_both_sides_pay() -> None:
    res = rebalance(
        np.array([0.5, -0.2]),
        np.array([-0.5, 0.3]),
        np.array([10.0, 20.0]),
        np.array(1.0),
        np.array([0.0, 0.0]),
        fee_rate=0.001,
        slippage_rate=0.001,
        vol_slippage_coef=0.0,
    )
    assert res.fill_price[0] == pytest.approx(10.0 * 0.999)  # sold
    assert res.fill_price[1] == pytest.approx(20.0 * 1.001)  # bought
    assert (res.fee > 0).all() and (res.slippage_cost > 0).all()
    assert res.equity < 1.0
    np.testing.assert_allclose(res.turnover, [1.0, 0.5])


def test_no_trade_costs_nothing_and_mask_blocks_fill() -> None:
    pos = np.array([[0.3, -0.1]])
    res = rebalance(pos, pos, np.array([[1.0, 2.0]]), np.array([5.0]), np.zeros((1, 2)), 0.001, 0.0002, 0.05)
    np.testing.assert_array_equal(res.equity, [5.0])
    np.testing.assert_allclose(res.position, pos)
    res = rebalance(
        pos,
        np.array([[1.0, 1.0]]),
        np.array([[1.0, 2.0]]),
        np.array([5.0]),
        np.zeros((1, 2)),
        0.001,
        0.0002,
        0.05,
        can_fill=np.array([[True, False]]),
    )
    assert res.turnover[0, 1] == 0.0 and res.fee[0, 1] == 0.0 and res.fill_price[0, 1] == 2.0
    # asset 1 keeps its holding value (-0.1 * 5) while equity shrank by asset 0's costs
    assert res.position[0, 1] * res.equity[0] == pytest.approx(-0.5)


def test_mark_to_market_two_assets() -> None:
    res = mark_to_market(np.array([0.5, -0.25]), np.array(2.0), np.log(np.array([1.1, 1.2])))
    growth = 1 + 0.5 * 0.1 - 0.25 * 0.2
    assert res.equity == pytest.approx(2.0 * growth)
    np.testing.assert_allclose(res.position, [0.5 * 1.1 / growth, -0.25 * 1.2 / growth])
    assert res.log_growth == pytest.approx(np.log(growth))


def test_mark_to_market_ruin_floors_at_zero() -> None:
    res = mark_to_market(np.array([[3.0]]), np.array([1.0]), np.log(np.array([[0.5]])))
    assert res.equity[0] == 0.0 and res.position[0, 0] == 0.0 and res.log_growth[0] == -np.inf


def test_funding_longs_pay_shorts_receive() -> None:
    pos, eq, cost = funding(np.array([[1.0], [-1.0]]), np.array([1.0, 1.0]), 1e-4)
    np.testing.assert_allclose(cost, [1e-4, -1e-4])
    np.testing.assert_allclose(eq, [1 - 1e-4, 1 + 1e-4])
    assert CostConfig(funding_rate_per_8h=0.0008).funding_rate_per_bar(3600) == pytest.approx(1e-4)
    assert CostConfig().funding_rate_per_bar(3600) == 0.0
    assert pos[0, 0] * eq[0] == pytest.approx(1.0)


def test_one_bar_arrays_equal_batched_row() -> None:
    """A paper-trading loop calls the kernels with (A,) arrays and scalar equity: same numbers as a batch row."""
    rng = np.random.default_rng(0)
    pos, tgt = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    price, vol, eq = rng.uniform(1, 100, (4, 3)), rng.uniform(0, 0.02, (4, 3)), rng.uniform(0.5, 2, 4)
    batch = rebalance(pos, tgt, price, eq, vol, 0.001, 0.0002, 0.1)
    for i in range(4):
        one = rebalance(pos[i], tgt[i], price[i], eq[i], vol[i], 0.001, 0.0002, 0.1)
        for a, b in zip(one, batch, strict=True):
            np.testing.assert_allclose(a, b[i], rtol=1e-13)


def test_slippage_grows_with_volatility() -> None:
    s = slippage_fraction(np.array([0.0, 0.01, 0.05]), 2e-4, 0.05)
    np.testing.assert_allclose(s, [2e-4, 7e-4, 2.7e-3])


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    given = None

if given is not None:
    fractions = arrays(np.float64, 3, elements=st.floats(-3.0, 3.0))

    @settings(max_examples=200, deadline=None)
    @given(
        position=fractions,
        target=fractions,
        vol=arrays(np.float64, 3, elements=st.floats(0.0, 0.1)),
        fee_bps=st.floats(0.0, 50.0),
        slip_bps=st.floats(0.0, 50.0),
    )
    def test_rebalance_properties(
        position: np.ndarray, target: np.ndarray, vol: np.ndarray, fee_bps: float, slip_bps: float
    ) -> None:
        """Costs are never negative, never create equity, and the traded holdings equal target x pre-trade equity."""
        price = np.array([10.0, 200.0, 3000.0])
        res = rebalance(position, target, price, np.array(2.0), vol, fee_bps * 1e-4, slip_bps * 1e-4, 0.1)
        assert (res.fee >= 0).all() and (res.slippage_cost >= 0).all()
        assert res.equity <= 2.0 + 1e-12
        assert res.equity == pytest.approx(2.0 - res.fee.sum() - res.slippage_cost.sum())
        if res.equity > 0:
            np.testing.assert_allclose(res.position * res.equity, target * 2.0, atol=1e-9)
        bought, sold = target > position, target < position
        assert (res.fill_price[bought] >= price[bought]).all() and (res.fill_price[sold] <= price[sold]).all()

    @settings(max_examples=200, deadline=None)
    @given(position=fractions, returns=arrays(np.float64, 3, elements=st.floats(-0.5, 0.5)))
    def test_mark_to_market_conserves_holdings(position: np.ndarray, returns: np.ndarray) -> None:
        """Holding values grow by exp(r) and cash is unchanged: E' = cash + sum(holding * exp(r))."""
        res = mark_to_market(position, np.array(1.0), returns)
        expected = 1.0 - position.sum() + (position * np.exp(returns)).sum()
        if expected > 0:
            assert res.equity == pytest.approx(expected, rel=1e-12, abs=1e-12)
            np.testing.assert_allclose(res.position * res.equity, position * np.exp(returns), atol=1e-12)
        else:
            assert res.equity == 0.0
