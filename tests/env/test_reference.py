"""The vectorized simulator matches the plain-loop reference exactly on random action sequences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from himari.env.execution import CostConfig
from himari.env.rewards import RewardConfig
from himari.env.sim import SimConfig, SimVecEnv, reset, step
from tests.env._synth import make_market
from tests.env.reference import reference_episode

REWARD_KINDS = ("pnl", "dsr", "ddr", "sortino_shaper", "regime_adaptive")


def _random_actions(rng: np.random.Generator, kind: str, steps: int, n: int, a: int) -> np.ndarray:
    if kind == "discrete":
        return rng.integers(0, 3, size=(steps, n, a))
    return rng.normal(0.0, 1.5, size=(steps, n, a))


def _run_and_compare(config: SimConfig, n_assets: int, seed: int, messy: bool) -> None:
    market = make_market(seed=seed, t_len=300, n_assets=n_assets, messy=messy, vol=0.02)
    n, steps = 6, config.episode_length
    rng = np.random.default_rng(seed + 100)
    actions = _random_actions(rng, config.action_kind, steps, n, n_assets)
    state = reset(market, config, n, np.random.default_rng(seed))
    starts = state.start.copy()
    recs: dict[str, list[np.ndarray]] = {
        k: [] for k in ("position", "equity", "fee", "slippage", "funding", "fill_price", "reward", "term")
    }
    alive = np.ones(n, dtype=bool)
    for k in range(steps):
        state, terms, info = step(state, actions[k], market, config)
        recs["position"].append(info["position"])
        recs["equity"].append(info["equity"])
        recs["fee"].append(info["fee"])
        recs["slippage"].append(info["slippage"])
        recs["funding"].append(info["funding"])
        recs["fill_price"].append(info["fill_price"])
        recs["reward"].append(terms["reward"])
        recs["term"].append(info["terminated"] & alive)
        alive &= ~info["terminated"]
    for i in range(n):
        ref = reference_episode(market, config, int(starts[i]), actions[:, i, :], length=steps)
        m = len(ref.equity)
        assert m == steps or ref.terminated[-1]
        np.testing.assert_allclose(np.array(recs["equity"])[:m, i], ref.equity, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(np.array(recs["position"])[:m, i], ref.position, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(np.array(recs["fee"])[:m, i], ref.fee, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(np.array(recs["slippage"])[:m, i], ref.slippage, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(np.array(recs["funding"])[:m, i], ref.funding, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(np.array(recs["fill_price"])[:m, i], ref.fill_price, rtol=1e-12)
        np.testing.assert_allclose(np.array(recs["reward"])[:m, i], ref.reward, rtol=1e-8, atol=1e-11)
        assert list(np.array(recs["term"])[:m, i]) == ref.terminated


@pytest.mark.parametrize(
    ("action_kind", "reward_kind"), list(itertools.product(("discrete", "continuous", "delta"), REWARD_KINDS))
)
def test_matches_reference_single_asset(action_kind: str, reward_kind: str) -> None:
    config = SimConfig(
        action_kind=action_kind,
        window=4,
        episode_length=60,
        max_position=2.0,
        reward=RewardConfig(kind=reward_kind, drawdown_penalty=0.5, turnover_penalty=0.01, warmup_steps=3),
    )
    _run_and_compare(config, n_assets=1, seed=1, messy=False)


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
@pytest.mark.parametrize("hold_mode", ["keep", "flat"])
@pytest.mark.parametrize("invalid_policy", ["flat", "keep"])
def test_matches_reference_multi_asset_messy(fill: str, hold_mode: str, invalid_policy: str) -> None:
    """Three assets, a late listing, a missing bar, a gap in the time axis, invalid rows, funding, gross cap."""
    config = SimConfig(
        action_kind="discrete",
        hold_mode=hold_mode,
        discrete_rebalance=invalid_policy == "keep",
        invalid_policy=invalid_policy,
        window=5,
        episode_length=200,
        max_position=1.5,
        max_gross_exposure=2.5,
        costs=CostConfig(fill=fill, funding_rate_per_8h=0.0003, vol_slippage_coef=0.2),
        reward=RewardConfig(kind="regime_adaptive", drawdown_penalty=0.1),
    )
    _run_and_compare(config, n_assets=3, seed=2, messy=True)


@pytest.mark.parametrize("action_kind", ["continuous", "delta"])
def test_matches_reference_multi_asset_continuous_with_ruin(action_kind: str) -> None:
    """High leverage on a volatile market: some episodes are ruined; the termination step matches too."""
    config = SimConfig(
        action_kind=action_kind,
        window=3,
        episode_length=150,
        max_position=5.0,
        delta_base="constant",
        base_position=3.0,
        allow_short=True,
        ruin_equity=0.7,
        costs=CostConfig(fill="next_close", order_type="maker"),
        reward=RewardConfig(kind="dsr"),
    )
    _run_and_compare(config, n_assets=2, seed=3, messy=True)


def test_vecenv_equals_kernel_loop() -> None:
    """SimVecEnv adds only auto-reset around the kernel: before any episode ends it is the kernel."""
    market = make_market(seed=4, t_len=200, n_assets=2)
    config = SimConfig(window=4, episode_length=50)
    env = SimVecEnv(market, config, 5, seed=9)
    env.reset()
    state = reset(market, config, 5, np.random.default_rng(9))
    np.testing.assert_array_equal(env.state.t, state.t)
    rng = np.random.default_rng(0)
    for _ in range(49):
        act = rng.integers(0, 3, size=(5, 2))
        res = env.step(act)
        state, terms, _ = step(state, act, market, config)
        np.testing.assert_array_equal(res.reward, terms["reward"].astype(np.float32))
        np.testing.assert_array_equal(env.state.equity, state.equity)
