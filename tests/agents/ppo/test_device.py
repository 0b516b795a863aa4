"""The device code path of the PPO trainer, run on the CPU: torch simulator + sync-free rollout + torch GAE.

With ``TorchSimVecEnv`` the trainer keeps everything on the environment's device (on a GPU: no host round trip
per step). Here the device is the CPU, so CI covers the same code; the rollout must equal the host path's (NumPy
simulator, NumPy GAE) up to the simulators' float tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.device import make_training_env, resolve_device
from himari.agents.ppo.gae import compute_gae, compute_gae_torch
from himari.agents.ppo.networks import ObsSpec
from himari.agents.ppo.policies import make_policy
from himari.agents.ppo.trainer import PPOTrainer
from himari.env.sim import SimConfig, SimVecEnv
from himari.env.torch_sim import TorchSimVecEnv
from himari.errors import ConfigError
from tests.agents.ppo.helpers import SMALL_CONFIGS
from tests.env._synth import make_market


def test_torch_gae_equals_numpy_gae_exactly() -> None:
    rng = np.random.default_rng(1)
    shape = (17, 9)
    rewards = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    next_values = rng.normal(size=shape).astype(np.float32)
    terminated = rng.random(shape) < 0.1
    truncated = (rng.random(shape) < 0.1) & ~terminated
    adv_np, ret_np = compute_gae(rewards, values, next_values, terminated, truncated, 0.97, 0.9)
    adv_t, ret_t = compute_gae_torch(*(torch.from_numpy(a) for a in (rewards, values, next_values, terminated, truncated)),
                                     0.97, 0.9)
    np.testing.assert_array_equal(adv_t.numpy(), adv_np)
    np.testing.assert_array_equal(ret_t.numpy(), ret_np)


def test_resolve_device_and_training_env() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    market = make_market(seed=3, t_len=200, n_assets=1, vol=0.02)
    config = SimConfig(window=2, episode_length=20, action_kind="discrete")
    assert isinstance(make_training_env(market, config, 4, device="cpu"), SimVecEnv)
    env = make_training_env(market, config, 4, device="cpu", simulator="torch")
    assert isinstance(env, TorchSimVecEnv) and env.device == torch.device("cpu")


def _trainer(env: object, device: str = "auto", kind: str = "mlp", total_steps: int = 16 * 24) -> PPOTrainer:
    policy = make_policy(kind, ObsSpec.from_env(env), SMALL_CONFIGS[kind], seed=3)
    config = PPOConfig(total_steps=total_steps, n_steps=24, n_epochs=2, n_minibatches=2, device=device)
    return PPOTrainer(policy, env, config, seed=7, progress=False, tensorboard=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_device_path_rollout_equals_host_path(kind: str) -> None:
    torch.set_num_threads(1)
    market = make_market(seed=3, t_len=400, n_assets=1, vol=0.02)
    config = SimConfig(window=2, episode_length=10, action_kind="discrete")  # truncations inside the rollout
    host = _trainer(SimVecEnv(market, config, 16, seed=5), kind=kind)
    dev = _trainer(make_training_env(market, config, 16, seed=5, device="cpu", simulator="torch"), "cpu", kind)
    assert not host.on_device and dev.on_device and dev.tensor_env
    for trainer in (host, dev):
        trainer._boundary_reset(0)
        trainer.collect_rollout()
    a, b = host.buffer, dev.buffer
    assert bool(a.truncated.any())  # the bootstrap-at-truncation branch ran
    torch.testing.assert_close(b.obs, a.obs, rtol=1e-5, atol=1e-5)
    assert torch.equal(b.actions, a.actions)
    assert torch.equal(b.truncated, a.truncated) and torch.equal(b.terminated, a.terminated)
    for name in ("rewards", "values", "log_probs", "next_values", "advantages", "returns"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-4, atol=1e-6, msg=name)


def test_train_on_torch_simulator_then_policy_back_on_cpu(tmp_path: object) -> None:
    market = make_market(seed=4, t_len=300, n_assets=1, vol=0.02)
    config = SimConfig(window=2, episode_length=15, action_kind="discrete")
    env = make_training_env(market, config, 8, seed=1, device="cpu", simulator="torch")
    eval_env = SimVecEnv.for_evaluation(market, config, 200, 300)  # evaluation stays on the NumPy simulator
    policy = make_policy("mlp", ObsSpec.from_env(env), SMALL_CONFIGS["mlp"], seed=0)
    ppo = PPOConfig(total_steps=8 * 24 * 3, n_steps=24, n_epochs=2, n_minibatches=2, eval_every_updates=1,
                    device="cpu")
    result = PPOTrainer(policy, env, ppo, seed=2, eval_env=eval_env, progress=False, tensorboard=False).train()
    assert result.updates == 3 and len(result.evaluations) == 3
    assert all(np.isfinite(h["pg_loss"]) and np.isfinite(h["v_loss"]) for h in result.history)
    assert policy.device == torch.device("cpu")
    assert all(v.device.type == "cpu" for v in policy.state_dict().values())


def test_device_mismatch_is_a_config_error() -> None:
    market = make_market(seed=3, t_len=200, n_assets=1, vol=0.02)
    env = make_training_env(market, SimConfig(window=2, episode_length=20), 4, device="cpu", simulator="torch")
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="environment lives on"):
            _trainer(env, "cuda")
    else:
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            _trainer(env, "cuda")


def test_device_is_not_part_of_the_run_hash() -> None:
    market = make_market(seed=3, t_len=200, n_assets=1, vol=0.02)
    env = SimVecEnv(market, SimConfig(window=2, episode_length=20), 4, seed=0)
    assert _trainer(env, "cpu").config_hash == _trainer(env, "auto").config_hash  # resume across devices
