"""Ensembles: weighted averaging, voting, presets, validation-fitted weights, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from himari.agents.offline.classifier import ClassifierConfig, ClassifierPolicy
from himari.agents.offline.cql import CQLConfig, CQLPolicy
from himari.agents.offline.ensemble import PRESETS, EnsembleConfig, EnsemblePolicy, combine_probs, fit_weights
from himari.agents.registry import load_policy
from himari.agents.rules import RuleConfig, RulePolicy
from himari.env.protocol import ACCOUNT_FIELDS, HOLD, LONG, SHORT
from himari.errors import ConfigError

from .conftest import random_obs


def test_combine_average_and_vote() -> None:
    p1 = np.array([[0.6, 0.3, 0.1]])
    p2 = np.array([[0.1, 0.5, 0.4]])
    p3 = np.array([[0.2, 0.2, 0.6]])
    avg = combine_probs([p1, p2, p3], [0.5, 0.3, 0.2], "average")
    np.testing.assert_allclose(avg, 0.5 * p1 + 0.3 * p2 + 0.2 * p3)
    vote = combine_probs([p1, p2, p3], [0.5, 0.3, 0.2], "vote")
    np.testing.assert_allclose(vote, [[0.5, 0.3, 0.2]])
    np.testing.assert_allclose(combine_probs([p1, p2], [2.0, 2.0], "average"), (p1 + p2) / 2)  # normalized
    with pytest.raises(ConfigError):
        combine_probs([p1], [1.0], "median")


def test_fit_weights_prefers_the_informative_member_and_increases_likelihood() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2000)
    good = np.full((2000, 3), 0.15)
    good[np.arange(2000), y] = 0.7
    noise = rng.dirichlet(np.ones(3), size=2000)
    w = fit_weights([good, noise], y)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.9

    def loglik(weights: np.ndarray) -> float:
        mix = weights[0] * good + weights[1] * noise
        return float(np.log(mix[np.arange(2000), y]).mean())

    assert loglik(w) >= loglik(np.array([0.5, 0.5]))
    assert loglik(w) >= max(loglik(np.array([0.9, 0.1])), loglik(np.array([1.0, 0.0]))) - 1e-6


def test_presets_name_trainable_kinds_with_weights_on_the_simplex() -> None:
    from himari.training.offline import OFFLINE_KINDS

    for weights in PRESETS.values():
        assert set(weights) <= set(OFFLINE_KINDS)
        assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) > 0


def test_ensemble_policy_acts_and_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(0)
    cql = CQLPolicy(CQLConfig(state_dim=5 + 4 + len(ACCOUNT_FIELDS), hidden=(8,)))
    mlp = ClassifierPolicy(ClassifierConfig(n_inputs=9, window=4, hidden=(8,)))
    ens = EnsemblePolicy.from_preset("low-latency", {"cql": cql, "mlp-classifier": mlp})
    assert ens.window == 4 and ens.config.weights == (0.6, 0.4)
    obs = random_obs(rng, 4, 6, 2, 5)
    out, _ = ens.act(obs, ens.initial_state(4))
    c_out, _ = cql.act(obs, None)
    m_out, _ = mlp.act(obs, None)
    np.testing.assert_allclose(out.action_probs, 0.6 * c_out.action_probs + 0.4 * m_out.action_probs, atol=1e-6)
    ens.save(tmp_path / "ens")
    loaded = load_policy(tmp_path / "ens")
    again, _ = loaded.act(obs, loaded.initial_state(4))
    np.testing.assert_allclose(again.action_probs, out.action_probs, atol=1e-6)
    with pytest.raises(ConfigError):
        EnsemblePolicy.from_preset("production", {"cql": cql})


def test_vote_follows_the_weighted_majority() -> None:
    rng = np.random.default_rng(1)
    obs = random_obs(rng, 1, 1, 1, 3)
    always = [RulePolicy(RuleConfig(rule="random", probs=p)) for p in ((0, 1, 0), (0, 1, 0), (0, 0, 1))]
    cfg = EnsembleConfig(members=("a", "b", "c"), weights=(0.3, 0.3, 0.4), mode="vote")
    out, _ = EnsemblePolicy(always, cfg).act(obs, None)
    assert out.action[0, 0] == LONG  # 0.6 vs 0.4
    cfg = EnsembleConfig(members=("a", "b", "c"), weights=(0.2, 0.2, 0.6), mode="vote")
    out, _ = EnsemblePolicy(always, cfg).act(obs, None)
    assert out.action[0, 0] == SHORT
    tie = EnsembleConfig(members=("a", "c"), weights=(0.5, 0.5), mode="vote")
    hold = RulePolicy(RuleConfig(rule="random", probs=(1, 0, 0)))
    out, _ = EnsemblePolicy([hold, always[2]], tie).act(obs, None)
    assert out.action[0, 0] == HOLD  # ties go to the lowest code


def test_bad_ensemble_configs() -> None:
    with pytest.raises(ConfigError):
        EnsembleConfig(members=("a", "b"), weights=(1.0,))
    with pytest.raises(ConfigError):
        EnsembleConfig(members=("a",), weights=(-1.0,))
    with pytest.raises(ConfigError):
        EnsembleConfig(members=("a", "a"), weights=(1.0, 1.0))
