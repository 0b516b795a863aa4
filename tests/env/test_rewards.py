"""Reward library: differential Sharpe/Sortino against their defining derivative, penalties, no HOLD bonus."""

from __future__ import annotations

import numpy as np
import pytest

from himari.env.protocol import HOLD
from himari.env.rewards import RewardConfig, RewardInputs, RewardState, compute_reward, initial_reward_state
from himari.env.sim import SimConfig, SimVecEnv
from himari.errors import ConfigError
from tests.env._synth import make_market


def _inputs(r: np.ndarray, **kw: np.ndarray) -> RewardInputs:
    n = r.shape[0]
    z = np.zeros(n)
    base = dict(
        log_return=r,
        turnover=z,
        drawdown=z,
        prev_drawdown=z,
        flat=np.zeros(n, bool),
        regime=np.zeros(n, np.int64),
        sigma=np.full(n, 0.01),
        market_return=z,
    )
    base.update(kw)
    return RewardInputs(**base)


def _state(a: float, b: float, dd2: float, n: int = 1) -> RewardState:
    return RewardState(np.full(n, a), np.full(n, b), np.full(n, dd2), np.full((n, 4), 0.8), np.full(n, 100))


@pytest.mark.parametrize("r", [0.012, -0.007, 0.0])
def test_dsr_is_the_derivative_of_the_ema_sharpe(r: float) -> None:
    """Moody & Saffell: D_t = dS_t/d eta at eta = 0, with S = A / sqrt(B - A^2) of the EMA moments."""
    a, b = 0.001, 0.0002
    cfg = RewardConfig(kind="dsr")
    reward, terms, _ = compute_reward(cfg, _state(a, b, 0.0), _inputs(np.array([r])))

    def sharpe(eta: float) -> float:
        a1, b1 = a + eta * (r - a), b + eta * (r * r - b)
        return a1 / np.sqrt(b1 - a1 * a1)

    h = 1e-7
    numeric = (sharpe(h) - sharpe(-h)) / (2 * h)
    assert terms["dsr"][0] == pytest.approx(numeric, rel=1e-5)
    assert reward[0] == terms["dsr"][0]


@pytest.mark.parametrize("r", [0.012, -0.007])
def test_ddr_is_the_derivative_of_the_ema_sortino(r: float) -> None:
    a, dd2 = 0.001, 0.00005
    cfg = RewardConfig(kind="ddr")
    _, terms, _ = compute_reward(cfg, _state(a, 0.0, dd2), _inputs(np.array([r])))

    def sortino(eta: float) -> float:
        a1, d1 = a + eta * (r - a), dd2 + eta * (min(r, 0.0) ** 2 - dd2)
        return a1 / np.sqrt(d1)

    h = 1e-7
    assert terms["ddr"][0] == pytest.approx((sortino(h) - sortino(-h)) / (2 * h), rel=1e-5)


def test_dsr_is_zero_during_warmup_and_state_is_trailing() -> None:
    cfg = RewardConfig(kind="dsr", warmup_steps=5, eta=0.1)
    state = initial_reward_state(2, cfg)
    rng = np.random.default_rng(0)
    for k in range(8):
        r = rng.normal(0, 0.01, 2)
        prev = state
        reward, _, state = compute_reward(cfg, state, _inputs(r))
        if k < 5:
            assert (reward == 0).all()
        np.testing.assert_allclose(state.mean, prev.mean + 0.1 * (r - prev.mean))
        np.testing.assert_allclose(state.down_sq, prev.down_sq + 0.1 * (np.minimum(r, 0) ** 2 - prev.down_sq))


def test_penalties() -> None:
    cfg = RewardConfig(kind="pnl", drawdown_penalty=2.0, turnover_penalty=0.5, scale=10.0)
    r = np.array([0.01, -0.02])
    inp = _inputs(
        r, turnover=np.array([1.0, 0.0]), drawdown=np.array([0.1, 0.05]), prev_drawdown=np.array([0.05, 0.1])
    )
    reward, terms, _ = compute_reward(cfg, initial_reward_state(2, cfg), inp)
    np.testing.assert_allclose(terms["drawdown_penalty"], [0.1, 0.0])  # only increases of drawdown
    np.testing.assert_allclose(terms["turnover_penalty"], [0.5, 0.0])
    np.testing.assert_allclose(reward, 10 * r - [0.6, 0.0])


def test_sortino_shaper_terms() -> None:
    cfg = RewardConfig(kind="sortino_shaper", trade_cost=0.2, dd_weight=0.5, downside_floor=1e-3)
    inp = _inputs(np.array([0.004]), turnover=np.array([2.0]), drawdown=np.array([0.1]))
    reward, terms, _ = compute_reward(cfg, _state(0.0, 0.0, 0.0004), inp)
    assert terms["sortino_step"][0] == pytest.approx(0.004 / 0.02)
    assert reward[0] == pytest.approx(0.2 - 0.4 - 0.05)


def test_regime_reward_never_pays_for_holding() -> None:
    """Flat all the time: the adaptive regime reward is never positive (and negative where hold cost > 0)."""
    market = make_market(seed=11, t_len=400)
    config = SimConfig(
        window=3,
        episode_length=100,
        hold_mode="flat",
        reward=RewardConfig(kind="regime_adaptive", regime_hold_cost=(0.1, 0.1, 0.1, 0.1)),
    )
    env = SimVecEnv(market, config, 32, seed=0)
    env.reset()
    for _ in range(100):
        res = env.step(np.full((32, 1), HOLD))
        assert (res.reward < 0).all()
    with pytest.raises(ConfigError, match="no guaranteed HOLD bonus"):
        RewardConfig(regime_hold_cost=(0.0, -0.1, 0.0, 0.0))


def test_regime_reward_normalizes_by_volatility_and_updates_its_regime_only() -> None:
    cfg = RewardConfig(kind="regime_adaptive", regime_weight=(1.0, 1.0, 2.0, 1.0))
    state = initial_reward_state(1, cfg)
    inp = _inputs(
        np.array([0.01]), regime=np.array([2]), sigma=np.array([0.02]), market_return=np.array([0.03])
    )
    reward, terms, new = compute_reward(cfg, state, inp)
    assert terms["normalized_pnl"][0] == pytest.approx(0.5) and reward[0] == pytest.approx(1.0)
    assert (
        new.abs_normalized[0, 2] == pytest.approx(0.8 + 0.01 * (1.5 - 0.8))
        and new.abs_normalized[0, 0] == 0.8
    )
