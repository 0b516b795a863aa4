"""Rule behaviour policies (himari/agents/rules.py)."""

from __future__ import annotations

import numpy as np
import pytest

from himari.agents.registry import load_policy
from himari.agents.rules import RuleConfig, RulePolicy, default_behaviours, resolve_signal
from himari.env.protocol import HOLD, LONG, SHORT, Observation
from himari.errors import ConfigError


def obs_from_signal(signal: np.ndarray) -> Observation:
    """(N, W) signal -> observation with the signal as feature 0 of one asset."""
    n, w = signal.shape
    feats = np.zeros((n, w, 1, 2), np.float32)
    feats[:, :, 0, 0] = signal
    return Observation(feats, np.full((n, w, 1, 4), 0.25, np.float32), np.zeros((n, 1, 5), np.float32))


def test_ma_crossover() -> None:
    rising = np.linspace(-1, 1, 16)
    obs = obs_from_signal(np.stack([rising, -rising]))
    out, _ = RulePolicy(RuleConfig(rule="ma_crossover", fast=4, slow=16)).act(obs, None)
    assert out.action[:, 0].tolist() == [LONG, SHORT]
    out, _ = RulePolicy(RuleConfig(rule="ma_crossover", fast=4, slow=16, long_only=True)).act(obs, None)
    assert out.action[:, 0].tolist() == [LONG, HOLD]


def test_momentum_with_band_and_center() -> None:
    obs = obs_from_signal(np.array([[0.5] * 8, [0.05] * 8, [-0.5] * 8]))
    out, _ = RulePolicy(RuleConfig(rule="momentum", lookback=8, band=0.1)).act(obs, None)
    assert out.action[:, 0].tolist() == [LONG, HOLD, SHORT]
    out, _ = RulePolicy(RuleConfig(rule="momentum", lookback=8, center=0.6, band=0.0)).act(obs, None)
    assert out.action[:, 0].tolist() == [SHORT, SHORT, SHORT]


def test_random_rule_is_seeded(tmp_path) -> None:
    obs = obs_from_signal(np.zeros((50, 1)))
    a, _ = RulePolicy(RuleConfig(rule="random", seed=3)).act(obs, None)
    b, _ = RulePolicy(RuleConfig(rule="random", seed=3)).act(obs, None)
    c, _ = RulePolicy(RuleConfig(rule="random", seed=4)).act(obs, None)
    np.testing.assert_array_equal(a.action, b.action)
    assert not np.array_equal(a.action, c.action)
    skewed, _ = RulePolicy(RuleConfig(rule="random", probs=(0.0, 1.0, 0.0))).act(obs, None)
    assert (skewed.action == LONG).all()
    policy = RulePolicy(RuleConfig(rule="momentum", lookback=3, center=0.2))
    policy.save(tmp_path / "rule")
    assert load_policy(tmp_path / "rule").config == policy.config


def test_bad_rule_configs() -> None:
    with pytest.raises(ConfigError):
        RuleConfig(rule="ma_crossover", fast=10, slow=5)
    with pytest.raises(ConfigError):
        RuleConfig(rule="random", probs=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError):
        RulePolicy(RuleConfig(rule="ma_crossover", slow=16)).act(obs_from_signal(np.zeros((1, 4))), None)
    with pytest.raises(ConfigError):
        resolve_signal(("a", "b"), "zscore_24")


def test_default_behaviours_pick_a_trend_signal() -> None:
    names = ("ret_1", "zscore_24", "rsi_14")
    rules = default_behaviours(names, {"zscore_24": 0.1}, seed=0)
    assert [r.config.rule for r in rules] == ["ma_crossover", "momentum", "random"]
    assert rules[0].config.signal_index == 1 and rules[1].config.center == pytest.approx(0.1)
