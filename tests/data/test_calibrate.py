"""Calibration of the synthetic market (himari/data/calibrate.py): parameter recovery and application."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.calibrate import calibrate_from_bars, calibrate_returns, fit_jump_mixture
from himari.data.synth import REGIME_NAMES, GarchParams, JumpParams, RegimeParams, SynthConfig, generate_batch
from himari.errors import DataError


def test_recovers_known_garch_and_jump_parameters():
    same = RegimeParams(duration_bars=100, drift_annual=0.0)
    truth = SynthConfig(
        n_scenarios=1, n_bars=30_000, mix={"mixed": 1}, regimes={n: same for n in REGIME_NAMES},
        garch=GarchParams(alpha=0.10, beta=0.85, annual_vol=0.5),
        jumps=JumpParams(intensity_per_year=200.0, mean=-0.01, std=0.03),
    )
    r = generate_batch(truth, seed=1).log_return[0]
    cal = calibrate_returns(r, "1h")
    assert abs(cal.garch.alpha - 0.10) < 0.03
    assert abs(cal.garch.beta - 0.85) < 0.05
    assert abs(cal.garch.annual_vol - 0.5) < 0.05
    assert abs(cal.jumps.intensity_per_year / 200.0 - 1) < 0.25
    assert abs(cal.jumps.mean - -0.01) < 0.005
    assert abs(cal.jumps.std / 0.03 - 1) < 0.2


def test_no_jumps_found_in_pure_gaussian_returns():
    rng = np.random.default_rng(0)
    excess = rng.standard_normal(20_000) * 0.01
    lam, _, _, w = fit_jump_mixture(excess, np.full_like(excess, 0.01), threshold=4.0)
    assert lam < 1e-3 and w.sum() < 20


def test_calibrated_batch_resembles_the_asset(btc_bars):
    real = btc_bars.between("2023-01-01", "2024-01-01")
    cal = calibrate_from_bars(real)
    assert cal.timeframe == "1h" and cal.start_price == real.close[-1]
    assert 0.0 < cal.garch.alpha < 0.5 and 0.3 < cal.garch.beta < 1.0
    cfg = cal.apply(SynthConfig(n_scenarios=20, n_bars=2000, mix={"mixed": 1}))
    assert cfg.calibration is not None and cfg.calibration["n_returns"] == cal.n_returns
    assert cfg.start_price == pytest.approx(real.close[-1])
    synth = generate_batch(cfg, seed=0)
    r_real = real.log_returns()
    real_vol = np.nanstd(r_real) * np.sqrt(8760)
    synth_vol = np.median(synth.log_return.std(axis=1) * np.sqrt(8760))
    assert 0.5 < synth_vol / real_vol < 2.0
    from scipy import stats

    assert np.median(stats.kurtosis(synth.log_return, axis=1)) > 1.0


def test_too_few_returns_is_a_data_error():
    with pytest.raises(DataError, match="at least"):
        calibrate_returns(np.zeros(10), "1h", source="tiny.csv")
