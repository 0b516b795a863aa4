"""Normalizers: exact references, truncation invariance, frozen fits and leakage refusal."""

from __future__ import annotations

import numpy as np
import pytest

from himari.errors import LeakageError
from himari.features.normalize import FrozenStandardizer, SpectralNormalizer, rolling_percentile


def _brute_percentile(x: np.ndarray, window: int, min_periods: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for t in range(len(x)):
        w = x[max(0, t - window + 1) : t + 1]
        w = w[np.isfinite(w)]
        if len(w) < min_periods or not np.isfinite(x[t]):
            continue
        out[t] = (np.sum(w < x[t]) + 0.5 * np.sum(w == x[t])) / len(w)
    return out


def test_rolling_percentile_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal(400), 1)  # ties on purpose
    x[50:60] = np.nan
    got = rolling_percentile(x, window=50, min_periods=20)
    np.testing.assert_allclose(got, _brute_percentile(x, 50, 20), equal_nan=True, atol=1e-12)
    assert np.nanmin(got) > 0 and np.nanmax(got) < 1


def test_percentile_truncation_invariance() -> None:
    x = np.random.default_rng(1).standard_normal((900, 3))
    full = rolling_percentile(x, 500, 250)
    for cut in (251, 300, 499, 500, 501, 777, 900):
        np.testing.assert_array_equal(rolling_percentile(x[:cut], 500, 250), full[:cut])


def _ts(n: int) -> np.ndarray:
    return np.datetime64("2020-01-01T00:00", "ns").astype(np.int64) + np.arange(n, dtype=np.int64) * 3_600_000_000_000


def test_frozen_standardizer_uses_fit_window_only_and_refuses_leakage() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(5.0, 2.0, (1000, 2))
    ts = _ts(1000)
    scaler = FrozenStandardizer.fit(x, ts, ts[0], ts[600])
    np.testing.assert_allclose(scaler.mean, x[:600].mean(axis=0))
    x2 = x.copy()
    x2[600:] += 1000.0  # data after the fit window must not change the fit
    np.testing.assert_array_equal(FrozenStandardizer.fit(x2, ts, ts[0], ts[600]).mean, scaler.mean)
    z = scaler.transform(x, eval_start_ns=int(ts[600]))
    np.testing.assert_allclose(z[:600].mean(axis=0), 0.0, atol=1e-9)
    with pytest.raises(LeakageError, match="before the fit window ends"):
        scaler.transform(x, eval_start_ns=int(ts[599]))
    back = FrozenStandardizer.from_state(scaler.state())
    np.testing.assert_array_equal(back.transform(x), scaler.transform(x))


def test_spectral_normalizer_equals_direct_fft_and_is_causal() -> None:
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_normal((700, 2)), axis=0) * 0.1 + rng.standard_normal((700, 2))
    ts = _ts(700)
    norm = SpectralNormalizer.fit(x, ts, ts[0], ts[400], window=32, clip=1e9)
    out = norm.transform(x)
    for t in (31, 100, 650):
        w = x[t - 31 : t + 1, 1]
        direct = np.fft.irfft(np.fft.rfft(w - w.mean()) / norm.amplitude[:, 1], n=32)[-1] * np.sqrt(32)
        assert out[t, 1] == pytest.approx(direct, rel=1e-9, abs=1e-12)
    assert np.isnan(out[:31]).all()
    for cut in (40, 333, 650):
        np.testing.assert_allclose(norm.transform(x[:cut]), out[:cut], rtol=1e-12, equal_nan=True)
    with pytest.raises(LeakageError):
        norm.transform(x, eval_start_ns=int(ts[10]))
    assert np.nanstd(out[400:], axis=0).min() > 0.2
