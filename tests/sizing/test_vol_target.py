"""Vol-targeted base position and the bounded delta."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.timeframe import Timeframe
from himari.sizing.vol_target import apply_delta, bounded_delta, trailing_vol_per_bar, vol_target_position


def test_trailing_vol_matches_nanstd_and_requires_min_bars() -> None:
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.01, (300, 2))
    r[::7, 0] = np.nan
    sigma = trailing_vol_per_bar(r, 100, 20)
    np.testing.assert_allclose(sigma, np.nanstd(r[-100:], axis=0, ddof=1), rtol=1e-10)
    few = np.full((100, 1), np.nan)
    few[-5:, 0] = 0.01 * np.arange(5)
    assert np.isnan(trailing_vol_per_bar(few, 100, 20)[0])


def test_vol_target_annualizes_from_timeframe() -> None:
    sigma_day = 0.04
    hourly = sigma_day / np.sqrt(24)
    x_1h = vol_target_position(np.array([hourly]), 0.4, Timeframe.parse("1h").periods_per_year, 10.0)
    x_1d = vol_target_position(np.array([sigma_day]), 0.4, Timeframe.parse("1d").periods_per_year, 10.0)
    assert x_1h[0] == pytest.approx(x_1d[0])
    assert x_1d[0] == pytest.approx(0.4 / (0.04 * np.sqrt(365)))


def test_vol_target_caps_and_unknown_sigma() -> None:
    out = vol_target_position(np.array([1e-6, np.nan, 0.0]), 0.4, 8760.0, 1.5)
    np.testing.assert_allclose(out, [1.5, 0.0, 1.5])


def test_bounded_delta() -> None:
    raw = np.array([-100.0, -1.0, 0.0, 0.5, 100.0, np.nan])
    d = bounded_delta(raw, 0.3, "tanh")
    assert np.all(np.abs(d) <= 0.3)
    np.testing.assert_allclose(d[:5], 0.3 * np.tanh(raw[:5]))
    assert d[5] == 0.0
    np.testing.assert_allclose(bounded_delta(raw[:5], 0.3, "clip"), [-0.3, -0.3, 0.0, 0.3, 0.3])
    np.testing.assert_allclose(apply_delta(np.array([0.5, 0.5]), np.array([0.3, -0.3])), [0.8, 0.2])
    np.testing.assert_allclose(
        apply_delta(np.array([0.5, 0.5]), np.array([0.3, -0.3]), "multiplicative"), [0.65, 0.35]
    )
