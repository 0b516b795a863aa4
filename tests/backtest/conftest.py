"""A small real bundle (tactical pipeline fitted on BTC 2022-H2, a briefly trained MLP PPO policy) for backtest tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from himari.data.bars import Bars
from himari.trading.bundle import Bundle, load_bundle, save_bundle


def make_bundle(bars: Bars, train_start: str, train_end: str, steps: int = 2048, seed: int = 0, kind: str = "mlp") -> Bundle:
    from himari.agents.ppo.config import PPOConfig
    from himari.agents.ppo.networks import ObsSpec
    from himari.agents.ppo.policies import make_policy
    from himari.agents.ppo.trainer import PPOTrainer
    from himari.env.market import MarketData
    from himari.env.sim import SimConfig, SimVecEnv
    from himari.tactical.pipeline import TacticalPipeline

    tp = TacticalPipeline().fit(bars, train_start, train_end)
    market = MarketData.from_frames([bars], [tp.transform(bars.between(None, train_end))])
    sim = SimConfig(window=4 if kind == "mlp" else 1, episode_length=128)
    env = SimVecEnv(market, sim, num_envs=16, seed=seed, start_index=market.index_of(train_start), end_index=market.num_bars)
    policy = make_policy(kind, ObsSpec.from_env(env), seed=seed)
    PPOTrainer(policy, env, PPOConfig(total_steps=steps, n_steps=32), seed=seed, progress=False, tensorboard=False).train()
    return Bundle(
        symbols=(bars.symbol,), timeframe=str(bars.timeframe), tactical={bars.symbol: tp}, policy=policy,
        sim_config=sim.to_dict(), meta={"model_id": f"test-{kind}", "fit_windows": {"train": [train_start, train_end]}},
    )


@pytest.fixture(scope="session")
def btc_slice(btc_bars: Bars) -> Bars:
    """BTCUSDT 2022-04-01 .. 2023-03-01 (warm-up, training 2022-H2, then test months)."""
    return btc_bars.between("2022-04-01", "2023-03-01")


@pytest.fixture(scope="session")
def bundle_dir(btc_slice: Bars, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    save_bundle(run / "bundle", make_bundle(btc_slice, "2022-07-01", "2023-01-01"))
    return run


@pytest.fixture()
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


def make_stack_bundle(bars: Bars, train_start: str, train_end: str, steps: int = 512) -> Bundle:
    """A briefly trained stack (two seeds per layer, ensembled) with positions changed once a day."""
    from himari.agents.ppo.config import PPOConfig
    from himari.env.market import MarketData
    from himari.env.sim import SimConfig
    from himari.tactical.pipeline import TacticalPipeline
    from himari.training.ppo import fit_stack

    tp = TacticalPipeline().fit(bars, train_start, train_end)
    market = MarketData.from_frames([bars], [tp.transform(bars.between(None, train_end))])
    sizing = {"decision_every_bars": 24}
    sim = SimConfig.parse({"action_kind": "delta", "window": 8, "episode_length": 128, "sizing": sizing, "risk": {}})
    policy, _ = fit_stack(market, sim, PPOConfig(total_steps=steps, n_steps=32), seeds=[0, 1], num_envs=16,
                          train_range=(market.index_of(train_start), market.num_bars))
    return Bundle(
        symbols=(bars.symbol,), timeframe=str(bars.timeframe), tactical={bars.symbol: tp}, policy=policy,
        sim_config=sim.to_dict(), sizing_config=sizing,
        meta={"model_id": "test-stack", "fit_windows": {"train": [train_start, train_end]}},
    )


@pytest.fixture(scope="session")
def stack_bundle(btc_slice: Bars, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    run = tmp_path_factory.mktemp("stack")
    save_bundle(run / "bundle", make_stack_bundle(btc_slice, "2022-07-01", "2023-01-01"))
    return load_bundle(run)
