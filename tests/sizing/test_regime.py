"""Regime multipliers: expectation under the posterior and dead-band hysteresis."""

from __future__ import annotations

import numpy as np
import pytest

from himari.errors import ConfigError
from himari.sizing.regime import RegimeMultiplier, deadband_update, expected_multiplier
from himari.sizing.sizer import SizingConfig

M = (1.0, 1.2, 0.6, 0.2)


def test_expected_multiplier() -> None:
    post = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0]], dtype=float)
    np.testing.assert_allclose(expected_multiplier(post, np.array(M)), [1.0, 0.2, 0.75, 1.1])


def test_deadband_keeps_small_moves_and_follows_large_ones() -> None:
    held = np.array([1.0, 1.0, np.nan])
    out = deadband_update(held, np.array([0.95, 0.85, 0.7]), 0.1)
    np.testing.assert_allclose(out, [1.0, 0.85, 0.7])


def test_hysteresis_stops_flapping() -> None:
    rm = RegimeMultiplier(M, 1, deadband=0.1)
    # posterior oscillating between 55/45 and 45/55 LOW_VOL/HIGH_VOL: expectation 0.82 <-> 0.78
    values = []
    for k in range(20):
        p = 0.55 if k % 2 == 0 else 0.45
        values.append(rm(np.array([[p, 0, 1 - p, 0]]))[0])
    assert len(set(values)) == 1
    # without hysteresis the size flaps every bar
    rm0 = RegimeMultiplier(M, 1, deadband=0.0)
    flappy = [rm0(np.array([[p, 0, 1 - p, 0]]))[0] for p in (0.55, 0.45) * 10]
    assert len(set(np.round(flappy, 9))) == 2
    # a real regime change goes through
    assert rm(np.array([[0, 0, 0, 1.0]]))[0] == pytest.approx(0.2)


def test_applied_multiplier_stays_within_deadband_of_expectation() -> None:
    rng = np.random.default_rng(0)
    rm = RegimeMultiplier(M, 3, deadband=0.15)
    for _ in range(300):
        post = rng.dirichlet(np.ones(4), size=3)
        out = rm(post)
        assert np.all(np.abs(out - expected_multiplier(post, np.array(M))) < 0.15 + 1e-12)


def test_config_rejects_crisis_above_low_vol_and_state_shape() -> None:
    with pytest.raises(ConfigError):
        SizingConfig.parse({"regime_multipliers": [0.5, 1.0, 0.6, 0.8]})
    rm = RegimeMultiplier(M, 2)
    with pytest.raises(ConfigError):
        rm.load_state_dict({"held": [1.0]})
