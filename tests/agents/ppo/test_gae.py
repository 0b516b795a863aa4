"""GAE against hand-computed values, including the truncation bootstrap and termination."""

from __future__ import annotations

import numpy as np
import pytest

from himari.agents.ppo.gae import compute_gae


def test_gae_hand_computed_single_env() -> None:
    # 3 steps, one env: step 0 continues, step 1 is truncated (bootstrap V(final_obs)=2.0), step 2 terminates.
    gamma, lam = 0.9, 0.8
    rewards = np.array([[1.0], [0.5], [-1.0]])
    values = np.array([[0.2], [0.4], [0.3]])
    # next_values: V(s1)=0.4 (continues), V(final_obs_1)=2.0 (truncated), anything at termination (ignored)
    next_values = np.array([[0.4], [2.0], [123.0]])
    terminated = np.array([[False], [False], [True]])
    truncated = np.array([[False], [True], [False]])
    adv, ret = compute_gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    d2 = -1.0 - 0.3  # termination: no bootstrap
    d1 = 0.5 + 0.9 * 2.0 - 0.4  # truncation: bootstrap from the final observation
    d0 = 1.0 + 0.9 * 0.4 - 0.2
    a2 = d2
    a1 = d1  # the chain is cut at the episode end (the next step belongs to a new episode)
    a0 = d0 + gamma * lam * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [a0 + 0.2, a1 + 0.4, a2 + 0.3], rtol=1e-6)


def test_gae_lambda_one_is_discounted_return_minus_value() -> None:
    rng = np.random.default_rng(0)
    t_steps, n = 6, 3
    rewards = rng.normal(size=(t_steps, n))
    values = rng.normal(size=(t_steps, n))
    last = rng.normal(size=n)
    next_values = np.vstack([values[1:], last])
    no = np.zeros((t_steps, n), dtype=bool)
    adv, ret = compute_gae(rewards, values, next_values, no, no, 0.95, 1.0)
    expected = np.zeros((t_steps, n))
    g = last.copy()
    for t in range(t_steps - 1, -1, -1):
        g = rewards[t] + 0.95 * g
        expected[t] = g
    np.testing.assert_allclose(ret, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adv, expected - values, rtol=1e-5, atol=1e-6)


def test_gae_truncation_differs_from_termination() -> None:
    rewards = np.array([[1.0]])
    values = np.array([[0.0]])
    next_values = np.array([[5.0]])
    adv_trunc, _ = compute_gae(rewards, values, next_values, np.array([[False]]), np.array([[True]]), 0.5, 0.9)
    adv_term, _ = compute_gae(rewards, values, next_values, np.array([[True]]), np.array([[False]]), 0.5, 0.9)
    assert adv_trunc[0, 0] == pytest.approx(1.0 + 0.5 * 5.0)
    assert adv_term[0, 0] == pytest.approx(1.0)


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes"):
        compute_gae(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 1)), np.zeros((3, 2), bool), np.zeros((3, 2), bool), 0.9, 0.9)
