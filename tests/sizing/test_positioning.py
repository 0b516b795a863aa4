"""The positioning layer: trailing σ, vol-targeted base, regime multipliers with hysteresis, bounded delta, band."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.timeframe import Timeframe
from himari.errors import ConfigError
from himari.sizing.positioning import (
    apply_cost_controls,
    apply_delta,
    apply_rebalance_band,
    bounded_delta,
    deadband_update,
    discrete_directions,
    propose_positions,
    regime_multipliers,
    rolling_vol_per_bar,
    trailing_vol_per_bar,
    vol_target_position,
)
from himari.sizing.sizer import SizingConfig

M = (1.0, 1.2, 0.6, 0.2)


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


def test_rolling_vol_equals_trailing_window_and_a_plain_loop() -> None:
    """The market column (training) and one decision's window (trading) give bit-identical σ."""
    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.01, (400, 2))
    r[::11, 1] = np.nan
    r[:3] = np.nan
    col = rolling_vol_per_bar(r, 100, 20)
    for t in (0, 5, 22, 99, 100, 101, 250, 399):
        np.testing.assert_array_equal(col[t], trailing_vol_per_bar(r[: t + 1], 100, 20))
        np.testing.assert_array_equal(col[t], trailing_vol_per_bar(r[max(0, t - 150) : t + 1], 100, 20))
        for a in range(2):
            w = r[max(0, t - 99) : t + 1, a]
            w = w[np.isfinite(w)]
            if len(w) < 20:
                assert np.isnan(col[t, a])
            else:
                assert col[t, a] == pytest.approx(np.std(w, ddof=1), rel=1e-12)


def _expected(post: np.ndarray) -> np.ndarray:
    return post @ np.array(M)


def test_expected_multiplier_and_deadband() -> None:
    post = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0]], dtype=float)
    applied, held = regime_multipliers(post, np.full(4, np.nan), M, 0.1)
    np.testing.assert_allclose(applied, [1.0, 0.2, 0.75, 1.1])
    np.testing.assert_array_equal(applied, held)
    out = deadband_update(np.array([1.0, 1.0, np.nan]), np.array([0.95, 0.85, 0.7]), 0.1)
    np.testing.assert_allclose(out, [1.0, 0.85, 0.7])


def test_hysteresis_stops_flapping_and_invalid_posterior_is_cautious() -> None:
    held = np.full(1, np.nan)
    values = []
    for k in range(20):  # 55/45 <-> 45/55 LOW_VOL/HIGH_VOL: expectation 0.82 <-> 0.78
        p = 0.55 if k % 2 == 0 else 0.45
        applied, held = regime_multipliers(np.array([[p, 0, 1 - p, 0]]), held, M, 0.1)
        values.append(applied[0])
    assert len(set(values)) == 1
    applied, held2 = regime_multipliers(np.array([[np.nan, 0, 0, 0]]), held, M, 0.1)
    assert applied[0] == 0.2 and held2[0] == held[0]
    applied, _ = regime_multipliers(np.array([[0, 0, 0, 1.0]]), held, M, 0.1)
    assert applied[0] == pytest.approx(0.2)


def test_applied_multiplier_stays_within_deadband_of_expectation() -> None:
    rng = np.random.default_rng(0)
    held = np.full(3, np.nan)
    for _ in range(300):
        post = rng.dirichlet(np.ones(4), size=3)
        applied, held = regime_multipliers(post, held, M, 0.15)
        assert np.all(np.abs(applied - _expected(post)) < 0.15 + 1e-12)


def test_config_rejects_crisis_above_low_vol() -> None:
    with pytest.raises(ConfigError):
        SizingConfig.parse({"regime_multipliers": [0.5, 1.0, 0.6, 0.8]})


def test_discrete_directions_hold_and_long_only() -> None:
    act = np.array([[0, 1, 2, 0, 0]])
    pos = np.array([[0.5, -0.2, 0.3, -0.4, 0.0]])
    np.testing.assert_array_equal(discrete_directions(act, pos, "keep", True), [[1, 1, -1, -1, 0]])
    np.testing.assert_array_equal(discrete_directions(act, pos, "flat", True), [[0, 1, -1, 0, 0]])
    np.testing.assert_array_equal(discrete_directions(act, pos, "flat", False), [[0, 1, 0, 0, 0]])


def test_propose_positions_batched_equals_row_by_row() -> None:
    """N streams at once give the same proposals as one stream at a time (the sizer's N = 1 path)."""
    rng = np.random.default_rng(5)
    n, a = 16, 2
    cfg = SizingConfig.parse({"use_confidence": True})
    base = rng.uniform(0, 1.5, (n, a))
    post = rng.dirichlet(np.ones(4), size=(n, a))
    held = np.where(rng.random((n, a)) < 0.5, np.nan, rng.uniform(0.2, 1.2, (n, a)))
    pos = rng.normal(0, 0.5, (n, a))
    probs = rng.dirichlet(np.ones(3), size=(n, a))
    for kind, values in (("discrete", rng.integers(-1, 2, (n, a)).astype(float)), ("continuous", rng.normal(0, 1, (n, a))),
                         ("delta", rng.normal(0, 2, (n, a)))):
        batch = propose_positions(kind, values, base, post, held, pos, cfg, probs=probs)
        for i in range(n):
            one = propose_positions(kind, values[i : i + 1], base[i : i + 1], post[i : i + 1], held[i : i + 1],
                                    pos[i : i + 1], cfg, probs=probs[i : i + 1])
            for x, y in zip(batch, one, strict=True):
                np.testing.assert_array_equal(x[i : i + 1], y)
    # discrete: direction x base x regime multiplier x confidence, exactly
    d = propose_positions("discrete", np.array([[1.0, -1.0]]), np.array([[0.8, 0.5]]),
                          np.array([[[1, 0, 0, 0], [0, 0, 1, 0]]], dtype=float), np.full((1, 2), np.nan),
                          np.zeros((1, 2)), SizingConfig())
    np.testing.assert_allclose(d.proposal, [[0.8, -0.3]])
    delta = propose_positions("delta", np.array([[100.0]]), np.array([[0.5]]), np.array([[[1.0, 0, 0, 0]]]),
                              np.full((1, 1), np.nan), np.zeros((1, 1)), SizingConfig())
    np.testing.assert_allclose(delta.proposal, [[0.5 + 0.30]])


def test_rebalance_band_skips_small_resizes_only() -> None:
    pre = np.array([[0.50, 0.50, 0.50, -0.2, 0.3, 0.0]])
    tgt = np.array([[0.52, 0.60, 0.00, 0.01, -0.01, 0.02]])
    out = apply_rebalance_band(tgt, pre, 0.05)
    # small resize kept at the drifted position; big resize, close, flips and opening go through
    np.testing.assert_array_equal(out, [[0.50, 0.60, 0.00, 0.01, -0.01, 0.02]])


def test_cost_controls_keep_off_cadence_and_young_flips() -> None:
    bar = 3_600_000_000_000
    pre = np.array([[0.5], [0.5], [-0.4], [0.3]])
    target = np.array([[-0.5], [0.0], [0.6], [0.9]])
    tip = np.array([[3], [3], [10], [1]])
    on = np.array([8, 8, 8, 8]) * bar  # bar 8: a decision bar of every 4th
    off = on + bar
    cfg = SizingConfig(decision_every_bars=4, min_hold_bars=5, rebalance_band=0.0)
    # on cadence: the young long is not flipped, closing is allowed, the old short may flip, resizes pass
    np.testing.assert_array_equal(apply_cost_controls(target, pre, tip, on, bar, cfg), [[0.5], [0.0], [0.6], [0.9]])
    # off cadence: everything is kept except moves to flat
    np.testing.assert_array_equal(apply_cost_controls(target, pre, tip, off, bar, cfg), [[0.5], [0.0], [-0.4], [0.3]])
    # defaults change nothing but the band
    np.testing.assert_array_equal(apply_cost_controls(target, pre, tip, off, bar, SizingConfig(rebalance_band=0.0)),
                                  target)
