"""PPO learns: toy markets with a known optimal policy, and a memory task only recurrent/context policies solve."""

from __future__ import annotations

import pytest

from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.trainer import PPOTrainer, evaluate_policy
from tests.agents.ppo.fake_envs import MemoryEnv
from tests.agents.ppo.helpers import env_for, small_policy

# (kind, updates, learning rate, fraction of the optimal mean reward to reach)
SIGNAL_CASES = [
    ("mlp", 12, 3e-3, 0.8),
    ("lstm", 15, 3e-3, 0.8),
    ("transformer", 15, 3e-3, 0.8),
    ("multiasset", 15, 3e-3, 0.8),
    ("sizer", 30, 1e-2, 0.5),  # 0.30·tanh(x) saturates slowly: the optimum needs |x| -> inf
]


@pytest.mark.parametrize(("kind", "updates", "lr", "fraction"), SIGNAL_CASES)
def test_each_policy_learns_the_visible_signal(kind: str, updates: int, lr: float, fraction: float) -> None:
    """Next return = 0.01·s; feature 0 shows s with probability 0.7. Random play earns 0 on average."""
    env, eval_env = env_for(kind, num_envs=64), env_for(kind, num_envs=64)
    policy = small_policy(kind, env, seed=0)
    config = PPOConfig(total_steps=64 * 16 * updates, n_steps=16, ent_coef=0.0, learning_rate=lr, lr_final_fraction=1.0)
    before = evaluate_policy(policy, eval_env, 32, seed=99)["mean_reward"]
    PPOTrainer(policy, env, config, seed=1, progress=False, tensorboard=False).train()
    after = evaluate_policy(policy, eval_env, 64, seed=123)["mean_reward"]
    optimum = eval_env.optimal_mean_reward()
    assert after >= fraction * optimum, f"{kind}: {after:.5f} < {fraction} x optimum {optimum:.5f} (before {before:.5f})"


@pytest.mark.parametrize("kind", ["lstm", "transformer", "mlp"])
def test_memory_task(kind: str) -> None:
    """A cue shown only at an episode's first step decides the reward of all 5 steps: LSTM and transformer learn
    to remember it; the memory-less MLP cannot exceed 1/5 of the optimum."""
    length = 5
    env, eval_env = MemoryEnv(num_envs=32, episode_length=length), MemoryEnv(num_envs=64, episode_length=length)
    policy = small_policy(kind, env, seed=0, **({"context": length} if kind == "transformer" else {}))
    config = PPOConfig(total_steps=32 * 10 * 30, n_steps=10, n_minibatches=2, ent_coef=0.0, learning_rate=5e-3,
                       lr_final_fraction=1.0)
    PPOTrainer(policy, env, config, seed=1, progress=False, tensorboard=False).train()
    score = evaluate_policy(policy, eval_env, 50, seed=7)["mean_reward"] / 0.01
    if kind == "mlp":
        assert score <= 1.0 / length + 0.05
    else:
        assert score >= 0.9
