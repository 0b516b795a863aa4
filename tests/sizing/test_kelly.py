"""Bayesian Kelly: the formula, the posterior, edge cases and the outcome tracker."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from himari.sizing.kelly import SignalOutcomeTracker, bayesian_kelly, beta_posterior, kelly_fraction


@pytest.mark.parametrize(
    ("p", "b", "expected"),
    [(0.6, 1.0, 0.2), (0.5, 2.0, 0.25), (0.4, 1.0, -0.2), (0.5, 1.0, 0.0), (0.55, 0.5, 0.55 - 0.45 / 0.5)],
)
def test_kelly_fraction_known_cases(p: float, b: float, expected: float) -> None:
    assert kelly_fraction(np.array(p), np.array(b)) == pytest.approx(expected)


def test_kelly_fraction_edge_cases() -> None:
    assert kelly_fraction(np.array(0.7), np.array(0.0)) == -np.inf  # never wins anything
    assert kelly_fraction(np.array(0.7), np.array(np.inf)) == pytest.approx(0.7)
    assert kelly_fraction(np.array(1.0), np.array(0.0)) == pytest.approx(1.0)


def test_beta_posterior() -> None:
    a, b = beta_posterior(np.array([7]), np.array([3]), 2.0, 1.0)
    assert (a[0], b[0]) == (9.0, 4.0)


def test_bayesian_kelly_hand_computation() -> None:
    # 60 wins of +1 %, 40 losses of -1 %, Beta(1, 1) prior -> p = 61/102, b = 1, f* = 2p - 1 = 20/102
    outcomes = np.array([0.01] * 60 + [-0.01] * 40)
    est = bayesian_kelly(outcomes, fraction=0.25, max_position=10.0, min_outcomes=50)
    p = 61 / 102
    assert est.win_prob[0] == pytest.approx(p)
    assert est.payoff_ratio[0] == pytest.approx(1.0)
    assert est.edge[0] == pytest.approx(2 * p - 1)
    # position = c f* / l with l = 1 % mean loss
    assert est.position[0] == pytest.approx(0.25 * (2 * p - 1) / 0.01)
    capped = bayesian_kelly(outcomes, fraction=0.25, max_position=2.0, min_outcomes=50)
    assert capped.position[0] == 2.0


def test_trading_kelly_maximizes_growth() -> None:
    # x* = f*/l maximizes p log(1 + x g) + (1 - p) log(1 - x l)
    gain, loss, p = 0.012, 0.01, 0.52
    est = bayesian_kelly(
        np.array([gain] * 52000 + [-loss] * 48000), fraction=1.0, max_position=1e9, min_outcomes=1
    )
    grid = np.linspace(0.0, 50.0, 200001)
    growth = p * np.log1p(grid * gain) + (1 - p) * np.log1p(-grid * loss)
    assert est.position[0] == pytest.approx(grid[np.argmax(growth)], rel=2e-3)


def test_no_positive_edge_is_zero() -> None:
    outcomes = np.array([0.01] * 45 + [-0.01] * 55)
    est = bayesian_kelly(outcomes, min_outcomes=10)
    assert est.edge[0] < 0 and est.position[0] == 0.0
    # a high win rate with a poor payoff ratio has no edge either: p=0.7, b=0.3 -> f* = 0.7 - 0.3/0.3 < 0
    est = bayesian_kelly(np.array([0.003] * 70 + [-0.01] * 30), min_outcomes=10)
    assert est.position[0] == 0.0
    # only losses
    assert bayesian_kelly(np.full(60, -0.01), min_outcomes=10).position[0] == 0.0


def test_not_informative_passes_max_and_nans_ignored() -> None:
    outcomes = np.array([[0.01, np.nan], [-0.02, np.nan], [np.nan, 0.01]])
    est = bayesian_kelly(outcomes, min_outcomes=50, max_position=1.5)
    assert not est.informative.any()
    assert np.all(est.position == 1.5)
    assert est.n_outcomes.tolist() == [2, 1]


def test_lower_posterior_quantile_is_more_conservative() -> None:
    outcomes = np.array([0.01] * 70 + [-0.01] * 50)
    mean = bayesian_kelly(outcomes, max_position=100.0, min_outcomes=10)
    q10 = bayesian_kelly(outcomes, max_position=100.0, min_outcomes=10, win_prob_quantile=0.1)
    assert q10.win_prob[0] == pytest.approx(stats.beta.ppf(0.1, 71, 51))
    assert 0 < q10.position[0] < mean.position[0]


def test_tracker_matches_direct_computation_and_roundtrips() -> None:
    rng = np.random.default_rng(3)
    n, a, window = 400, 2, 64
    returns = rng.normal(0, 0.01, (n, a))
    returns[rng.random((n, a)) < 0.05] = np.nan
    directions = rng.integers(-1, 2, (n, a)).astype(float)
    tracker = SignalOutcomeTracker(a, window)
    expected = []
    for t in range(n):
        tracker.update(t, returns[t], directions[t])
        if t > 0:
            o = directions[t - 1] * returns[t]
            expected.append(np.where(directions[t - 1] != 0, o, np.nan))
        if t == 200:
            clone = SignalOutcomeTracker(a, window)
            clone.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    recent = np.array(expected[-window:])
    np.testing.assert_allclose(tracker.outcomes(), recent)
    np.testing.assert_allclose(tracker.wins, (recent > 0).sum(0))
    np.testing.assert_allclose(tracker.sum_loss, np.where(recent < 0, -recent, 0).sum(0), atol=1e-12)
    for t in range(201, n):
        clone.update(t, returns[t], directions[t])
    np.testing.assert_allclose(clone.outcomes(), tracker.outcomes())


def test_tracker_is_idempotent_within_a_bar() -> None:
    tracker = SignalOutcomeTracker(1, 10)
    tracker.update(0, np.array([0.0]), np.array([1.0]))
    tracker.update(1, np.array([0.02]), np.array([1.0]))
    tracker.update(1, np.array([0.02]), np.array([-1.0]))  # same bar again: no second outcome
    assert tracker.wins[0] == 1 and tracker.losses[0] == 0
    tracker.update(
        2, np.array([0.01]), np.array([0.0])
    )  # direction -1 from the repeated call is the one used
    assert tracker.losses[0] == 1
