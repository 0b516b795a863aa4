"""EKF with a log-variance state: tracks a volatility change, bounded adaptation, MLE, causality."""

from __future__ import annotations

import numpy as np
import pytest

from himari.features.ekf import EKFParams, ekf_filter, ekf_loglik, fit_ekf_mle


def _sv_path(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = np.where(np.arange(n) < n // 2, 0.002, 0.01)
    return np.cumsum(sd * rng.standard_normal(n)) + 5.0, sd


def test_mle_tracks_volatility_regime() -> None:
    y, _ = _sv_path()
    p = fit_ekf_mle(y)
    out = ekf_filter(y, p)
    est = np.sqrt(np.exp(out.log_var))
    assert np.median(est[500:1500]) < 0.004 < np.median(est[2000:])
    assert np.median(est[2000:]) / np.median(est[500:1500]) > 3.0
    # MLE is at least as likely as a misspecified constant-vol setting
    const = EKFParams(p.r_obs, 0.0, float(np.log(np.var(np.diff(y)))), 1e-6, p.h_lo, p.h_hi)
    assert ekf_loglik(out) > ekf_loglik(ekf_filter(y, const))


def test_adaptation_is_bounded() -> None:
    y, _ = _sv_path(1)
    y = y.copy()
    y[1000] += 5.0  # a huge outlier cannot push the variance state past its bound
    p = EKFParams(1e-6, 0.99, -12.0, 0.5, -14.0, -6.0)
    out = ekf_filter(y, p)
    assert out.log_var.max() <= -6.0 and out.log_var.min() >= -14.0


def test_ekf_truncation_invariance_and_gap_restart() -> None:
    y, _ = _sv_path(2, 800)
    gap = np.zeros(800, dtype=bool)
    gap[400] = True
    p = EKFParams(1e-7, 0.95, -11.0, 0.05, -20.0, -4.0)
    full = ekf_filter(y, p, gap)
    for cut in (1, 10, 399, 400, 401, 799):
        part = ekf_filter(y[:cut], p, gap[:cut])
        np.testing.assert_array_equal(part.level, full.level[:cut])
        np.testing.assert_array_equal(part.log_var, full.log_var[:cut])
    assert full.log_var[400] == p.h_bar


def test_optimizer_loglik_matches_filter() -> None:
    from himari.features.ekf import _ekf_loglik_fast

    y, _ = _sv_path(3, 900)
    gap = np.zeros(900, dtype=bool)
    gap[0] = gap[450] = True
    p = EKFParams(1e-7, 0.95, -11.0, 0.05, -20.0, -4.0)
    assert _ekf_loglik_fast(y.tolist(), gap.tolist(), p) == pytest.approx(ekf_loglik(ekf_filter(y, p, gap)), rel=1e-12)
