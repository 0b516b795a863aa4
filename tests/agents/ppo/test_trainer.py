"""The PPO trainer: ratio and clipping, rollout/update consistency, determinism, checkpoints and resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.trainer import PPOTrainer, transfer_weights
from himari.errors import ConfigError, RunDirError
from tests.agents.ppo.fake_envs import SignalEnv
from tests.agents.ppo.helpers import SMALL_CONFIGS, env_for, small_policy

KINDS = tuple(SMALL_CONFIGS)


def _trainer(kind: str, run_dir=None, seed: int = 3, updates: int = 2, **cfg) -> PPOTrainer:
    env = env_for(kind, num_envs=16, terminate_prob=0.05, episode_length=7)
    policy = small_policy(kind, env, seed=seed)
    config = PPOConfig.parse({"n_minibatches": 2, "n_epochs": 2}, total_steps=16 * 8 * updates, n_steps=8, **cfg)
    return PPOTrainer(policy, env, config, seed=seed, run_dir=run_dir, progress=False, tensorboard=False)


@pytest.mark.parametrize("kind", [*KINDS, "transformer-deep", "multiasset-continuous"])
def test_recomputed_log_probs_match_rollout(kind: str) -> None:
    """Right after a rollout, the sequence/batch forward reproduces its log-probs and values exactly: recurrent
    state carried over from the previous rollout (collected with the weights before the update), context masks and
    episode starts are handled identically in acting and learning."""
    if kind == "transformer-deep":
        env = env_for("transformer", num_envs=16, terminate_prob=0.05, episode_length=7)
        policy = small_policy("transformer", env, seed=3, n_layers=3, context=3)
        trainer = PPOTrainer(policy, env, PPOConfig(total_steps=512, n_steps=8, n_minibatches=2), seed=3,
                             progress=False, tensorboard=False)
    elif kind == "multiasset-continuous":
        env = SignalEnv(num_envs=16, num_assets=3, action_kind="continuous", terminate_prob=0.05, episode_length=7)
        policy = small_policy("multiasset", env, seed=3, action="continuous")
        trainer = PPOTrainer(policy, env, PPOConfig(total_steps=512, n_steps=8, n_minibatches=2), seed=3,
                             progress=False, tensorboard=False)
    else:
        trainer = _trainer(kind)
    trainer._boundary_reset(0)
    trainer.collect_rollout()
    trainer.update(0)
    trainer.collect_rollout()
    buf = trainer.buffer
    assert buf.episode_starts[1:].any(), "the test needs episode boundaries inside the rollout"
    net = trainer.policy.net
    with torch.no_grad():
        params, values = net.forward_sequence(buf.obs, buf.state0, buf.episode_starts)
        logp = net.head.log_prob(params, buf.actions.reshape(-1, buf.actions.shape[-1]))
    np.testing.assert_allclose(logp.numpy(), buf.log_probs.reshape(-1).numpy(), atol=2e-5)
    np.testing.assert_allclose(values.numpy(), buf.values.reshape(-1).numpy(), atol=2e-5)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_ratio_moves_and_clipping_engages(kind: str) -> None:
    trainer = _trainer(kind, updates=3, learning_rate=1e-2, n_epochs=4, clip_coef=0.02)
    result = trainer.train()
    # after the first minibatch step the ratio is no longer identically 1, and the clip acts somewhere
    assert all(h["ratio_max_dev"] > 1e-4 for h in result.history)
    assert max(h["clip_frac"] for h in result.history) > 0.0
    assert all(np.isfinite(h["approx_kl"]) for h in result.history)


def test_same_seed_same_result_and_different_seed_differs() -> None:
    def final_weights(seed: int) -> dict[str, torch.Tensor]:
        trainer = _trainer("lstm", seed=seed, updates=2)
        trainer.train()
        return trainer.policy.state_dict()

    a, b, c = final_weights(5), final_weights(5), final_weights(6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_in_process_is_bit_identical(tmp_path) -> None:
    full = _trainer("mlp", run_dir=tmp_path / "full", updates=4, checkpoint_every_updates=2)
    full.train()
    part = _trainer("mlp", run_dir=tmp_path / "part", updates=4, checkpoint_every_updates=2)

    def crash(trainer: PPOTrainer, metrics: dict) -> None:
        if metrics["update"] == 3:  # dies in the 4th update, after the checkpoint written at update 2
            raise KeyboardInterrupt

    part.callbacks.append(crash)
    with pytest.raises(KeyboardInterrupt):
        part.train()
    resumed = _trainer("mlp", run_dir=tmp_path / "part", updates=4, checkpoint_every_updates=2)
    result = resumed.train(resume=True)
    assert result.updates == 4 and resumed.global_step == full.global_step
    a, b = full.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_resume_refuses_other_config_and_fresh_run_refuses_old_checkpoints(tmp_path) -> None:
    _trainer("mlp", run_dir=tmp_path, updates=2, checkpoint_every_updates=1).train()
    with pytest.raises(RunDirError, match=r"different config|same config"):
        _trainer("mlp", run_dir=tmp_path, updates=2, checkpoint_every_updates=1, learning_rate=1e-3).train(resume=True)
    with pytest.raises(RunDirError, match="earlier run"):
        _trainer("mlp", run_dir=tmp_path, updates=2, checkpoint_every_updates=1).train()


def test_validation_selection_and_early_stopping(tmp_path) -> None:
    env = SignalEnv(num_envs=16)
    policy = small_policy("mlp", env)
    calls = []

    def stop_after_three(trainer, metrics):
        calls.append(metrics["update"])
        return len(calls) < 3

    config = PPOConfig(total_steps=16 * 8 * 10, n_steps=8, eval_every_updates=1, early_stop_patience=50)
    trainer = PPOTrainer(policy, env, config, eval_env=SignalEnv(num_envs=16), run_dir=tmp_path,
                         callbacks=[stop_after_three], progress=False, tensorboard=False)
    result = trainer.train()
    assert result.stopped_early and result.updates == 3
    assert len(result.evaluations) == 3 and result.best_update is not None
    assert (tmp_path / "best_policy" / "weights.safetensors").exists()
    best = max(e["mean_reward"] for e in result.evaluations)
    assert result.best_metric == pytest.approx(best)


def test_mismatched_policy_and_env_are_config_errors() -> None:
    env = SignalEnv(num_envs=4)
    policy = small_policy("mlp", SignalEnv(num_envs=4, num_assets=3))
    with pytest.raises(ConfigError, match="observations"):
        PPOTrainer(policy, env, PPOConfig(total_steps=10), progress=False, tensorboard=False)
    with pytest.raises(ConfigError, match="acts"):
        PPOTrainer(small_policy("mlp", env, action="continuous"), env, PPOConfig(total_steps=10), progress=False,
                   tensorboard=False)


def test_transfer_weights_copies_network_not_normalizer() -> None:
    env = SignalEnv(num_envs=8)
    source, target = small_policy("mlp", env, seed=1), small_policy("mlp", env, seed=2)
    source.obs_norm.update(torch.randn(100, source.spec.obs_dim) * 3 + 1)
    transfer_weights(source, target)
    for key, value in source.net.state_dict().items():
        assert torch.equal(value, target.net.state_dict()[key])
    assert not torch.equal(source.obs_norm.mean, target.obs_norm.mean)
    with pytest.raises(ConfigError):
        transfer_weights(small_policy("lstm", env), target)


def test_finished_run_extends_to_a_larger_budget(tmp_path) -> None:
    """Resuming a finished run with more total steps (same config otherwise) continues from its final checkpoint:
    the first updates are the finished run's, the extension adds the rest; a smaller budget is refused; resuming
    with nothing left to train reports no speed (no NaN)."""
    first = _trainer("mlp", run_dir=tmp_path, updates=3, checkpoint_every_updates=2)  # ends mid-period (update 3)
    done = first.train()
    finished = first.policy.state_dict()
    again = _trainer("mlp", run_dir=tmp_path, updates=3, checkpoint_every_updates=2).train(resume=True)
    assert again.history == [] and again.global_step == done.global_step and math.isnan(again.steps_per_s)
    extended = _trainer("mlp", run_dir=tmp_path, updates=5, checkpoint_every_updates=2)
    result = extended.train(resume=True)
    assert result.updates == 5 and extended.global_step == 16 * 8 * 5 and extended.extended_from == 16 * 8 * 3
    assert [h["update"] for h in result.history] == [3, 4]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records] == [0, 1, 2, 3, 4]
    assert not all(torch.equal(finished[k], extended.policy.state_dict()[k]) for k in finished)
    with pytest.raises(RunDirError, match="give more steps"):
        _trainer("mlp", run_dir=tmp_path, updates=4, checkpoint_every_updates=2).train(resume=True)
    with pytest.raises(RunDirError, match="same config"):  # another setting than the budget is another run
        _trainer("mlp", run_dir=tmp_path, updates=6, checkpoint_every_updates=2, gamma=0.9).train(resume=True)
