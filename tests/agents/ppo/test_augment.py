"""Online observation augmentation (himari.agents.ppo.augment): off = identical training, strengths bound the change,
seeded draws, only the feature block is touched, bad strengths are config errors."""

from __future__ import annotations

import pytest
import torch

from himari.agents.ppo.augment import AugmentConfig, ObservationAugmenter, augment_features
from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.trainer import PPOTrainer
from himari.errors import ConfigError
from tests.agents.ppo.helpers import env_for, small_policy

STRONG = {"jitter": 0.05, "scaling": 0.1, "magnitude_warp": 0.1, "noise_prob": 0.2, "noise_scale": 0.2}


def _train(seed: int = 3, **cfg) -> dict[str, torch.Tensor]:
    env = env_for("mlp", num_envs=16, terminate_prob=0.05, episode_length=7)
    policy = small_policy("mlp", env, seed=seed)
    config = PPOConfig.parse({"n_minibatches": 2, "n_epochs": 2, "total_steps": 16 * 8 * 2, "n_steps": 8, **cfg})
    trainer = PPOTrainer(policy, env, config, seed=seed, progress=False, tensorboard=False)
    trainer.train()
    return trainer.policy.state_dict()


def test_off_trains_identically_and_on_changes_training() -> None:
    base = _train()
    for off in ({"obs_augment": None}, {"obs_augment": {}}):
        weights = _train(**off)
        assert all(torch.equal(base[k], weights[k]) for k in base)
    a, b = _train(obs_augment=STRONG), _train(obs_augment=STRONG)
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded
    assert not all(torch.equal(base[k], a[k]) for k in base)


def test_config_hash_unchanged_when_off() -> None:
    env = env_for("mlp", num_envs=4)
    policy = small_policy("mlp", env)
    hashes = {PPOTrainer(policy, env, PPOConfig.parse(c), progress=False, tensorboard=False).config_hash
              for c in ({}, {"obs_augment": None})}
    assert len(hashes) == 1
    on = PPOTrainer(policy, env, PPOConfig.parse({"obs_augment": STRONG}), progress=False, tensorboard=False)
    assert on.config_hash not in hashes


@pytest.mark.parametrize("window", [1, 5, 16])
def test_strength_bounds_and_shapes(window: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((256, window, 2, 7), generator=gen) * 2 - 1  # features in (-1, 1)
    cfg = AugmentConfig.parse(STRONG)
    y = augment_features(x, cfg, gen)
    assert y.shape == x.shape and torch.isfinite(y).all()
    change = (y - x).abs().max().item()
    assert 0 < change <= cfg.max_abs_change(1.0) + 1e-6
    # each augmentation alone respects its own bound
    for name in ("jitter", "scaling", "magnitude_warp"):
        one = AugmentConfig.parse({name: STRONG[name]})
        assert (augment_features(x, one, gen) - x).abs().max().item() <= one.max_abs_change(1.0) + 1e-6
    shocks = AugmentConfig.parse({"noise_prob": 0.1, "noise_scale": 0.2})
    d = augment_features(x, shocks, gen) - x
    assert 0.05 < (d != 0).float().mean().item() < 0.15 and d.abs().max().item() <= 0.6 + 1e-6


def test_augmenter_touches_features_only_and_is_seeded() -> None:
    w, a, f = 4, 1, 3
    obs = torch.rand((8, w * a * f + w * a * 4 + a * 5))
    aug = ObservationAugmenter(AugmentConfig.parse(STRONG), (w, a, f), seed=1)
    out = aug(obs)
    assert torch.equal(out[:, w * a * f:], obs[:, w * a * f:])
    assert not torch.equal(out[:, :w * a * f], obs[:, :w * a * f])
    aug.reseed(9)
    first = aug(obs)
    aug.reseed(9)
    assert torch.equal(first, aug(obs))
    off = ObservationAugmenter(AugmentConfig(), (w, a, f), seed=1)
    assert off(obs) is obs and not off.enabled


def test_bad_strengths_are_config_errors() -> None:
    for bad in ({"jitter": -0.1}, {"scaling": 2.0}, {"noise_prob": 0.9}, {"unknown": 1}):
        with pytest.raises(ConfigError):
            PPOConfig.parse({"obs_augment": bad})


def test_resume_with_augmentation_is_bit_identical(tmp_path) -> None:
    def trainer(run_dir) -> PPOTrainer:
        env = env_for("mlp", num_envs=16, terminate_prob=0.05, episode_length=7)
        config = PPOConfig.parse({"n_minibatches": 2, "n_epochs": 1, "total_steps": 16 * 8 * 4, "n_steps": 8,
                                  "checkpoint_every_updates": 2, "obs_augment": STRONG})
        return PPOTrainer(small_policy("mlp", env, seed=3), env, config, seed=3, run_dir=run_dir, progress=False,
                          tensorboard=False)

    full = trainer(tmp_path / "full")
    full.train()
    part = trainer(tmp_path / "part")

    def crash(_: PPOTrainer, metrics: dict) -> None:
        if metrics["update"] == 3:
            raise KeyboardInterrupt

    part.callbacks.append(crash)
    with pytest.raises(KeyboardInterrupt):
        part.train()
    resumed = trainer(tmp_path / "part")
    resumed.train(resume=True)
    a, b = full.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
