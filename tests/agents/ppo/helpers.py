"""Small policy configurations and env builders shared by the PPO tests."""

from __future__ import annotations

from typing import Any

from himari.agents.ppo.networks import ObsSpec
from himari.agents.ppo.policies import PPOPolicy, make_policy
from tests.agents.ppo.fake_envs import SignalEnv

SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden_sizes": (32, 32)},
    "lstm": {"encoder_size": 32, "hidden_size": 32, "num_layers": 2},
    "transformer": {"d_model": 32, "n_layers": 1, "n_heads": 2, "context": 8},
    "multiasset": {"asset_hidden": 32, "joint_hidden": 32},
    "sizer": {"hidden_sizes": (32, 32)},
    "sizer-lstm": {"hidden_size": 16, "head_hidden": 16},
}


def env_for(kind: str, num_envs: int = 32, **kwargs: Any) -> SignalEnv:
    if kind == "multiasset":
        return SignalEnv(num_envs=num_envs, num_assets=3, **kwargs)
    if kind in ("sizer", "sizer-lstm"):
        return SignalEnv(num_envs=num_envs, action_kind="delta", **kwargs)
    return SignalEnv(num_envs=num_envs, **kwargs)


def small_policy(kind: str, env: Any, seed: int = 0, **overrides: Any) -> PPOPolicy:
    return make_policy(kind, ObsSpec.from_env(env), {**SMALL_CONFIGS[kind], **overrides}, seed=seed)
