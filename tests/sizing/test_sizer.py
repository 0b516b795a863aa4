"""PositionSizer: composition of vol target, regime multiplier, confidence, delta; state round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from himari.data.timeframe import Timeframe
from himari.errors import ConfigError, DataError
from himari.sizing import (
    DecisionContext,
    PositionSizer,
    SizingConfig,
    continuous_signal,
    delta_signal,
    direction_from_action,
    discrete_signal,
)

TF = Timeframe.parse("1h")
LOW_VOL = np.array([[1.0, 0, 0, 0]])


def ctx_for(
    returns: np.ndarray, t: int = 0, posterior: np.ndarray = LOW_VOL, position: float = 0.0
) -> DecisionContext:
    return DecisionContext(t, TF, returns, posterior, 1.0, np.array([position]))


@pytest.fixture
def returns() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.005, (200, 1))


def test_direction_from_action() -> None:
    np.testing.assert_array_equal(direction_from_action(np.array([0, 1, 2])), [0.0, 1.0, -1.0])


def test_discrete_long_short_hold(returns: np.ndarray) -> None:
    sizer = PositionSizer(SizingConfig(), ("BTC",))
    sigma = np.std(returns[-100:], ddof=1)
    base = min(1.0, 0.4 / (sigma * np.sqrt(TF.periods_per_year)))
    long = sizer.propose(discrete_signal(np.array([1])), ctx_for(returns, 0))
    assert long.proposal[0] == pytest.approx(base)
    short = sizer.propose(discrete_signal(np.array([2])), ctx_for(returns, 1))
    assert short.proposal[0] == pytest.approx(-base)
    hold = sizer.propose(discrete_signal(np.array([0])), ctx_for(returns, 2, position=0.3))
    assert hold.proposal[0] == 0.0
    keep = PositionSizer(SizingConfig(hold_keeps_position=True), ("BTC",))
    assert keep.propose(discrete_signal(np.array([0])), ctx_for(returns, 0, position=0.3)).proposal[0] == 0.3
    assert "vol-target base" in long.reasons[0]


def test_regime_scales_and_crisis_below_low_vol(returns: np.ndarray) -> None:
    low = PositionSizer().propose(discrete_signal(np.array([1])), ctx_for(returns))
    crisis = PositionSizer().propose(
        discrete_signal(np.array([1])), ctx_for(returns, posterior=np.array([[0, 0, 0, 1.0]]))
    )
    trend = PositionSizer().propose(
        discrete_signal(np.array([1])), ctx_for(returns, posterior=np.array([[0, 1.0, 0, 0]]))
    )
    assert crisis.proposal[0] == pytest.approx(0.2 * low.proposal[0])
    assert trend.proposal[0] == pytest.approx(1.2 * low.proposal[0])


def test_confidence_from_probabilities(returns: np.ndarray) -> None:
    cfg = SizingConfig(use_confidence=True)
    probs = np.array([[0.2, 0.6, 0.2]])
    res = PositionSizer(cfg).propose(discrete_signal(np.array([1]), probs), ctx_for(returns))
    plain = PositionSizer().propose(discrete_signal(np.array([1]), probs), ctx_for(returns))
    assert res.proposal[0] == pytest.approx(0.4 * plain.proposal[0])


def test_continuous_and_delta(returns: np.ndarray) -> None:
    sizer = PositionSizer(SizingConfig(max_position=1.0))
    assert sizer.propose(continuous_signal(np.array([2.5])), ctx_for(returns, 0)).proposal[0] == 1.0
    assert sizer.propose(continuous_signal(np.array([-0.4])), ctx_for(returns, 1)).proposal[
        0
    ] == pytest.approx(-0.4)
    base = PositionSizer().propose(discrete_signal(np.array([1])), ctx_for(returns)).base[0]
    up = PositionSizer().propose(delta_signal(np.array([50.0])), ctx_for(returns))
    down = PositionSizer().propose(delta_signal(np.array([-50.0]), np.array([-1.0])), ctx_for(returns))
    assert up.proposal[0] == pytest.approx(base + 0.3)  # additive, as the simulator's delta action
    assert down.proposal[0] == pytest.approx(-(base - 0.3))
    mult = SizingConfig(delta_mode="multiplicative")
    up = PositionSizer(mult).propose(delta_signal(np.array([50.0])), ctx_for(returns))
    assert up.proposal[0] == pytest.approx(base * 1.3)


def test_not_enough_history_proposes_flat() -> None:
    r = np.full((100, 1), np.nan)
    r[-5:] = 0.01
    assert PositionSizer().propose(discrete_signal(np.array([1])), ctx_for(r)).proposal[0] == 0.0


def test_shape_errors_are_data_errors(returns: np.ndarray) -> None:
    with pytest.raises(DataError, match="expected"):
        PositionSizer(symbols=("A", "B")).propose(discrete_signal(np.array([1])), ctx_for(returns))
    bad_position = ctx_for(returns)._replace(position=np.zeros(2))
    with pytest.raises(DataError, match="position has shape"):
        PositionSizer().propose(discrete_signal(np.array([1])), bad_position)
    with pytest.raises(DataError, match="returns have shape"):
        PositionSizer().propose(discrete_signal(np.array([1])), ctx_for(returns[:, 0]))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="probs"):
        PositionSizer().propose(discrete_signal(np.array([1]), np.ones((1, 2))), ctx_for(returns))


def test_state_roundtrip_gives_identical_proposals() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0, 0.005, (600, 2))
    posts = rng.dirichlet(np.ones(4), size=(600, 2))
    actions = rng.integers(0, 3, (600, 2))
    cfg = SizingConfig(kelly_min_outcomes=20, kelly_window_bars=50)
    a, b = PositionSizer(cfg, ("X", "Y")), PositionSizer(cfg, ("X", "Y"))
    outs_a, outs_b = [], []
    for t in range(100, 600):
        ctx = DecisionContext(t, TF, r[t - 100 : t + 1], posts[t], 1.0, np.zeros(2))
        outs_a.append(a.propose(discrete_signal(actions[t]), ctx))
        if t == 300:
            b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        if t > 300:
            outs_b.append(b.propose(discrete_signal(actions[t]), ctx))
    for x, y in zip(outs_a[-len(outs_b) :], outs_b, strict=True):
        np.testing.assert_array_equal(x.proposal, y.proposal)
        np.testing.assert_array_equal(x.kelly.position, y.kelly.position)
    with pytest.raises(ConfigError):
        PositionSizer(SizingConfig(kelly_fraction=0.5), ("X", "Y")).load_state_dict(a.state_dict())
