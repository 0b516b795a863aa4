"""Gymnasium adapters: env_checker (including determinism), vector autoreset, and Stable-Baselines3 PPO training."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from himari.env.gym_env import HimariEnv, HimariVectorEnv
from himari.env.protocol import flatten_observation
from himari.env.sim import SimConfig, SimVecEnv
from tests.env._synth import make_market


@pytest.mark.parametrize(
    ("action_kind", "n_assets", "dict_obs"),
    [("discrete", 1, False), ("discrete", 2, True), ("continuous", 2, False), ("delta", 1, True)],
)
def test_env_checker_passes(action_kind: str, n_assets: int, dict_obs: bool) -> None:
    market = make_market(seed=0, t_len=300, n_assets=n_assets)
    env = HimariEnv(
        market, SimConfig(action_kind=action_kind, window=6, episode_length=30), dict_obs=dict_obs
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env, skip_render_check=True)


def test_env_episode_matches_vectorized_sim() -> None:
    market = make_market(seed=1, t_len=300, n_assets=2)
    config = SimConfig(window=5, episode_length=25)
    env = HimariEnv(market, config)
    obs, info = env.reset(seed=7)
    rng = np.random.default_rng(0)
    sim = SimVecEnv(market, config, 1, starts=[info["bar"]])
    sim_obs = sim.reset()
    np.testing.assert_array_equal(obs, flatten_observation(sim_obs)[0])
    for _ in range(25):
        act = rng.integers(0, 3, size=2)
        obs, reward, term, trunc, info = env.step(act)
        res = sim.step(act[None, :])
        assert reward == pytest.approx(float(res.reward[0]))
        assert info["reward_pnl"] == pytest.approx(float(res.info["reward_pnl"][0]))
    assert trunc and not term


def test_vector_env_same_step_autoreset() -> None:
    market = make_market(seed=2, t_len=300)
    venv = HimariVectorEnv(market, SimConfig(window=4, episode_length=10), num_envs=8, seed=3)
    obs, _ = venv.reset(seed=3)
    assert obs.shape == venv.observation_space.shape
    venv.action_space.seed(0)
    for i in range(10):
        obs, rew, _term, trunc, info = venv.step(venv.action_space.sample())
        assert rew.shape == (8,) and obs.shape == (8, venv.single_observation_space.shape[0])
        if i < 9:
            assert "final_obs" not in info
    assert trunc.all() and info["_final_obs"].all()
    assert not np.array_equal(info["final_obs"], obs)  # the new episodes start elsewhere
    obs2, _ = venv.reset(seed=3)
    obs3, _ = HimariVectorEnv(market, SimConfig(window=4, episode_length=10), num_envs=8, seed=99).reset(
        seed=3
    )
    np.testing.assert_array_equal(obs2, obs3)


def test_stable_baselines3_ppo_trains() -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    import torch

    torch.set_num_threads(1)
    market = make_market(seed=3, t_len=600)
    env = HimariEnv(market, SimConfig(window=4, episode_length=64))
    model = sb3.PPO(
        "MlpPolicy", env, n_steps=512, batch_size=256, n_epochs=1, seed=0, verbose=0, device="cpu"
    )
    model.learn(total_timesteps=2048)
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))
    assert model.num_timesteps >= 2048
