"""Kalman local level / local linear trend: textbook steady state, MLE recovery, diagnostics, causality."""

from __future__ import annotations

import numpy as np
import pytest

from himari.features.kalman import (
    KalmanParams,
    filter_diagnostics,
    fit_kalman_mle,
    kalman_filter,
    ljung_box,
    steady_state_gain,
)


def test_steady_state_gain_textbook() -> None:
    # Harvey (1989): with q = Q/R the gain converges to (-q + sqrt(q^2 + 4q))/2; q = 1 -> (sqrt 5 - 1)/2
    assert steady_state_gain(1.0) == pytest.approx((np.sqrt(5.0) - 1.0) / 2.0)
    y = np.random.default_rng(0).standard_normal(200)
    for q in (0.01, 0.25, 1.0, 4.0):
        out = kalman_filter(y, KalmanParams(q_level=q, r_obs=1.0))
        assert out.gain[-1] == pytest.approx(steady_state_gain(q), rel=1e-9)


@pytest.mark.parametrize("q", [0.01, 0.1, 1.0])
def test_step_response_lag_is_exponential_smoother_lag(q: float) -> None:
    from himari.features.kalman import step_response_lag

    k = steady_state_gain(q)
    assert step_response_lag(KalmanParams(q, 1.0)) == pytest.approx((1 - k) / k, rel=1e-6)


def test_local_level_first_steps_by_hand() -> None:
    y = np.array([1.0, 2.0, 0.0])
    out = kalman_filter(y, KalmanParams(q_level=1.0, r_obs=1.0))
    # t=0: m=1, P=R=1; t=1: P-=2, F=3, K=2/3, m=1+2/3, P=2/3; t=2: P-=5/3, F=8/3, K=5/8, m=5/3 - 5/8*5/3
    assert out.level[1] == pytest.approx(1 + 2 / 3)
    assert out.innovation_var[1] == pytest.approx(3.0)
    assert out.level[2] == pytest.approx(5 / 3 - (5 / 8) * (5 / 3))
    assert np.isnan(out.innovation[0])


def test_mle_recovers_noise_variances() -> None:
    rng = np.random.default_rng(1)
    n, q, r = 6000, 0.04, 1.0
    mu = np.cumsum(rng.normal(0, np.sqrt(q), n))
    y = mu + rng.normal(0, np.sqrt(r), n)
    p = fit_kalman_mle(y)
    assert p.q_level == pytest.approx(q, rel=0.35)
    assert p.r_obs == pytest.approx(r, rel=0.1)
    out = kalman_filter(y, p)
    diag = filter_diagnostics(y, out.level, out.innovation, mu)
    assert diag.noise_reduction > 2.0  # the filter removes most of the observation noise
    k = steady_state_gain(p.q_level / p.r_obs)
    assert diag.lag_bars == pytest.approx((1 - k) / k, rel=0.2)  # exponential smoother: mean lag (1-K)/K bars
    assert diag.ljung_box_pvalue > 0.001  # innovations of the right model are white


def test_trend_model_tracks_slope_and_gap_restarts() -> None:
    t = np.arange(400, dtype=float)
    y = 0.01 * t + np.random.default_rng(2).normal(0, 0.001, 400)
    gap = np.zeros(400, dtype=bool)
    gap[200] = True
    out = kalman_filter(y, KalmanParams(1e-6, 1e-6, 1e-8), gap, trend=True)
    assert out.slope[190] == pytest.approx(0.01, rel=0.05)
    assert out.slope[200] == 0.0 and np.isnan(out.innovation[200])  # restart at the gap
    alone = kalman_filter(y[200:], KalmanParams(1e-6, 1e-6, 1e-8), None, trend=True)
    np.testing.assert_allclose(out.level[200:], alone.level)


def test_filter_truncation_invariance() -> None:
    y = np.cumsum(np.random.default_rng(3).standard_normal(500))
    full = kalman_filter(y, KalmanParams(0.5, 0.2, 1e-3), trend=True)
    for cut in (1, 2, 50, 333, 500):
        part = kalman_filter(y[:cut], KalmanParams(0.5, 0.2, 1e-3), trend=True)
        np.testing.assert_array_equal(part.level, full.level[:cut])
        np.testing.assert_array_equal(part.slope, full.slope[:cut])


def test_ljung_box_detects_autocorrelation() -> None:
    rng = np.random.default_rng(4)
    white = rng.standard_normal(2000)
    ar = np.empty(2000)
    ar[0] = 0
    for i in range(1, 2000):
        ar[i] = 0.5 * ar[i - 1] + white[i]
    assert ljung_box(white)[1] > 0.01
    assert ljung_box(ar)[1] < 1e-6


@pytest.mark.parametrize("trend", [False, True])
def test_optimizer_loglik_terms_match_filter(trend: bool) -> None:
    from himari.features.kalman import _concentrated_terms

    rng = np.random.default_rng(5)
    y = np.cumsum(rng.standard_normal(1500))
    gap = np.zeros(1500, dtype=bool)
    gap[700] = True
    out = kalman_filter(y, KalmanParams(0.3, 1.0, 0.01), gap, trend)
    ok = np.isfinite(out.innovation)
    starts = gap.copy()
    starts[0] = True
    s_vf, s_lf, n = _concentrated_terms(y.tolist(), starts.tolist(), 0.3, 0.01 if trend else 0.0, trend)
    assert n == ok.sum()
    assert s_vf == pytest.approx(np.sum(out.innovation[ok] ** 2 / out.innovation_var[ok]), rel=1e-10)
    assert s_lf == pytest.approx(np.sum(np.log(out.innovation_var[ok])), rel=1e-10)
