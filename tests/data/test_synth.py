"""Stylized facts and invariants of the synthetic market generator (himari/data/synth.py)."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from himari.data.loaders import validate_file
from himari.data.store import write_frame
from himari.data.synth import (
    BEAR,
    BULL,
    CRASH,
    FAMILY_NAMES,
    RANGE,
    REGIME_NAMES,
    GarchParams,
    JumpParams,
    RegimeParams,
    SynthConfig,
    family_counts,
    generate_batch,
    load_batch,
    save_batch,
    stress_summary,
    transition_matrix,
)
from himari.errors import ConfigError


def _flat_regimes(**kwargs: float) -> dict[str, RegimeParams]:
    """All four regimes identical (isolates GARCH/jumps from regime switching)."""
    params = {"duration_bars": 100.0, "drift_annual": 0.0, **kwargs}
    return {name: RegimeParams(**params) for name in REGIME_NAMES}


@pytest.fixture(scope="module")
def default_batch():
    return generate_batch(SynthConfig(n_scenarios=60, n_bars=1500), seed=11)


def test_same_seed_identical_different_seed_differs():
    cfg = SynthConfig(n_scenarios=12, n_bars=300, mix={"mixed": 1, "flash_crash": 1, "crash": 1})
    a, b, c = generate_batch(cfg, 5), generate_batch(cfg, 5), generate_batch(cfg, 6)
    for name in ("open", "high", "low", "close", "volume", "regime", "jump_count", "family"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.close, c.close)


def test_default_mix_counts_for_500():
    counts = family_counts(SynthConfig().mix, 500)
    assert counts == {"mixed": 200, "crash": 100, "bear": 100, "vol_cluster": 50, "bull": 50}
    assert sum(family_counts({"mixed": 1, "bull": 1, "bear": 1}, 10).values()) == 10


def test_500_scenarios_with_the_seeds_mix_reproducibly():
    cfg = SynthConfig(n_scenarios=500, n_bars=40)
    a, b = generate_batch(cfg, seed=0), generate_batch(cfg, seed=0)
    counts = {f: len(a.indices_of(f)) for f in FAMILY_NAMES}
    assert counts == {"mixed": 200, "crash": 100, "bear": 100, "vol_cluster": 50, "bull": 50, "flash_crash": 0}
    assert a.close.shape == (500, 40) and np.array_equal(a.close, b.close) and np.array_equal(a.family, b.family)
    assert not np.array_equal(a.family, np.sort(a.family))  # shuffled across rows, not in blocks


def test_batch_families_follow_mix(default_batch):
    counts = {f: len(default_batch.indices_of(f)) for f in FAMILY_NAMES}
    assert counts == {"mixed": 24, "crash": 12, "bear": 12, "vol_cluster": 6, "bull": 6, "flash_crash": 0}


def test_ohlc_consistent_positive_and_valid_bars(default_batch, tmp_path):
    b = default_batch
    assert np.all(b.high >= np.maximum(b.open, b.close))
    assert np.all(b.low <= np.minimum(b.open, b.close))
    assert np.all(b.low > 0) and np.all(b.volume > 0)
    assert np.array_equal(b.open[:, 1:], b.close[:, :-1])
    # Intrabar range exists (bridge extremes are not degenerate).
    assert np.mean(b.high > np.maximum(b.open, b.close)) > 0.9
    bars = b.to_bars(3)
    assert len(bars) == b.n_bars and str(bars.timeframe) == "1h" and not bars.gap_before.any()
    assert bars.symbol.startswith("SYN-") and bars.start.isoformat().startswith("2021-01-01T00:00:00")
    write_frame(bars.frame, tmp_path / "syn-1h.parquet")
    report, frame = validate_file(tmp_path / "syn-1h.parquet")
    assert report.ok and frame is not None and not report.gaps


def test_volume_rises_with_absolute_return(default_batch):
    b = default_batch
    corr = np.corrcoef(np.log(b.volume).ravel(), np.abs(b.log_return / b.sigma).ravel())[0, 1]
    assert corr > 0.15


def test_drift_is_expected_simple_return_thanks_to_compensator():
    """E[P_t / P_{t-1}] = exp(drift per bar) even with large negative jumps (Merton compensator)."""
    ppy = 8760.0
    mu_bar = 0.001
    cfg = SynthConfig(
        n_scenarios=200, n_bars=500, mix={"mixed": 1},
        regimes=_flat_regimes(drift_annual=mu_bar * ppy),
        garch=GarchParams(alpha=0.0, beta=0.0, annual_vol=0.5),
        jumps=JumpParams(intensity_per_year=0.1 * ppy, mean=-0.05, std=0.05),
    )
    b = generate_batch(cfg, seed=3)
    gross = np.exp(b.log_return).ravel()
    se = gross.std(ddof=1) / np.sqrt(gross.size)
    assert abs(gross.mean() - np.exp(mu_bar)) < 4 * se
    # The test has power: without the compensator the mean would differ by lam * k, many standard errors.
    lam_k = 0.1 * (np.exp(-0.05 + 0.5 * 0.05**2) - 1.0)
    assert abs(lam_k) > 20 * se
    # The expected log return is mu - sigma^2/2 - lam k + lam mu_J (stated in the module docstring).
    sigma2 = 0.5**2 / ppy
    expected_log = mu_bar - sigma2 / 2 - lam_k + 0.1 * -0.05
    assert abs(b.log_return.mean() - expected_log) < 4 * b.log_return.std() / np.sqrt(b.log_return.size)


def test_heavy_tails(default_batch):
    r = default_batch.log_return
    from scipy import stats

    pooled = stats.kurtosis((r / default_batch.sigma).ravel())  # excess kurtosis of sigma-scaled returns
    per_scenario = stats.kurtosis(r, axis=1)
    se_one = np.sqrt(24.0 / r.shape[1])
    assert per_scenario.mean() > 10 * se_one  # far beyond the normal's sampling noise
    assert np.mean(per_scenario > 2 * se_one) > 0.9
    assert pooled > 1.0


def _abs_acf(r: np.ndarray, lag: int) -> np.ndarray:
    a = np.abs(r) - np.abs(r).mean(axis=1, keepdims=True)
    return (a[:, lag:] * a[:, :-lag]).sum(axis=1) / (a**2).sum(axis=1)


def test_volatility_clustering_and_null_control():
    garch = SynthConfig(
        n_scenarios=20, n_bars=2000, mix={"vol_cluster": 1}, regimes=_flat_regimes(),
        jumps=JumpParams(intensity_per_year=0.0),
    )
    iid = garch.replace(garch={"alpha": 0.0, "beta": 0.0, "annual_vol": 0.5}, mix={"mixed": 1})
    r_garch = generate_batch(garch, seed=1).log_return
    r_iid = generate_batch(iid, seed=1).log_return
    se = 1.0 / np.sqrt(r_garch.size)  # sd of a pooled autocorrelation estimate under independence
    for lag in (1, 5, 10):
        assert _abs_acf(r_garch, lag).mean() > 6 * se, lag
        assert abs(_abs_acf(r_iid, lag).mean()) < 4 * se, lag
    # Default mixed batch (regimes + GARCH + jumps) clusters too.
    r_mixed = generate_batch(SynthConfig(n_scenarios=20, n_bars=2000, mix={"mixed": 1}), seed=2).log_return
    assert _abs_acf(r_mixed, 1).mean() > 6 * se


def test_jump_frequency_matches_intensity_per_regime(default_batch):
    b = default_batch
    cfg = b.config
    for k, name in enumerate(REGIME_NAMES):
        mask = b.regime == k
        lam = cfg.regimes[name].jump_intensity_multiplier * cfg.jumps.intensity_per_year / cfg.tf.periods_per_year
        expected = lam * mask.sum()
        observed = b.jump_count[mask].sum()
        assert abs(observed - expected) < 4 * np.sqrt(expected) + 1, (name, observed, expected)


def test_regime_durations_match_parameters():
    durations = {"bull": 40.0, "bear": 25.0, "range": 15.0, "crash": 8.0}
    regimes = {n: RegimeParams(duration_bars=d, drift_annual=0.0) for n, d in durations.items()}
    b = generate_batch(SynthConfig(n_scenarios=40, n_bars=2000, mix={"mixed": 1}, regimes=regimes), seed=4)
    reg = b.regime
    for k, name in enumerate(REGIME_NAMES):
        d = durations[name]
        # MLE of the expected sojourn: bars in state (with a successor) / exits from the state.
        in_state = reg[:, :-1] == k
        exits = in_state & (reg[:, 1:] != k)
        n_exits = exits.sum()
        d_hat = in_state.sum() / n_exits
        assert abs(d_hat / d - 1) < 4 / np.sqrt(n_exits), (name, d_hat, d)
        # Mean length of complete runs (not touching either end) agrees as well.
        lengths = []
        for row in reg:
            change = np.flatnonzero(np.diff(row) != 0) + 1
            bounds = np.r_[0, change, len(row)]
            for s, e in itertools.pairwise(bounds):
                if s > 0 and e < len(row) and row[s] == k:
                    lengths.append(e - s)
        lengths_arr = np.array(lengths)
        se = np.sqrt(d * (d - 1)) / np.sqrt(len(lengths_arr))
        assert abs(lengths_arr.mean() - d) < 4 * se + 0.02 * d, (name, lengths_arr.mean(), d)


def test_transition_matrix_rows_and_durations():
    p = transition_matrix(np.array([10.0, 4.0, 2.0, 1.0]), np.ones((4, 4)))
    assert np.allclose(p.sum(axis=1), 1.0)
    assert np.allclose(np.diag(p), [0.9, 0.75, 0.5, 0.0])
    assert np.allclose(1.0 / (1.0 - np.diag(p)), [10.0, 4.0, 2.0, 1.0])


def test_families_have_their_character(default_batch):
    rows = {r["family"]: r for r in stress_summary(default_batch)}
    assert rows["bull"]["share_bull"] > 0.8 and rows["bear"]["share_bear"] > 0.8
    assert rows["crash"]["share_crash"] > rows["mixed"]["share_crash"]
    assert rows["bull"]["total_return_mean"] > rows["bear"]["total_return_mean"]
    assert rows["crash"]["max_drawdown_mean"] > rows["bull"]["max_drawdown_mean"]
    assert rows["vol_cluster"]["share_range"] > 0.4


def test_flash_crash_has_one_deep_drop_and_rebound():
    cfg = SynthConfig(n_scenarios=10, n_bars=400, mix={"flash_crash": 1})
    b = generate_batch(cfg, seed=9)
    fc = cfg.flash_crash
    for i in range(b.n_scenarios):
        t = int(np.argmin(b.log_return[i]))
        assert b.log_return[i, t] < -fc.depth_min + 0.05
        assert 0.1 * 400 <= t < 0.9 * 400
        assert np.all(b.regime[i, t : t + fc.recovery_bars + 1] == CRASH)
        rebound = b.log_return[i, t + 1 : t + 1 + fc.recovery_bars].sum()
        assert rebound > 0


def test_initial_regimes_per_family():
    b = generate_batch(SynthConfig(n_scenarios=40, n_bars=50, mix={"bull": 1, "bear": 1}), seed=0)
    assert np.all(b.regime[b.indices_of("bull"), 0] == BULL)
    assert np.all(b.regime[b.indices_of("bear"), 0] == BEAR)
    assert RANGE == 2


def test_save_load_roundtrip_and_byte_identical(tmp_path):
    cfg = SynthConfig(n_scenarios=6, n_bars=120, mix={"mixed": 1, "crash": 1})
    save_batch(generate_batch(cfg, 2), str(tmp_path / "a"))
    save_batch(generate_batch(cfg, 2), str(tmp_path / "b"))
    for name in ("scenarios.parquet", "synth.json"):
        ha = hashlib.sha256((tmp_path / "a" / name).read_bytes()).hexdigest()
        hb = hashlib.sha256((tmp_path / "b" / name).read_bytes()).hexdigest()
        assert ha == hb, name
    back = load_batch(str(tmp_path / "a"))
    orig = generate_batch(cfg, 2)
    for name in ("open", "high", "low", "close", "volume", "regime", "jump_count", "family", "timestamps_ns"):
        assert np.array_equal(getattr(back, name), getattr(orig, name)), name
    assert np.allclose(back.log_return, orig.log_return, atol=1e-12)
    assert back.config == cfg


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="alpha \\+ beta"):
        SynthConfig.parse({"garch": {"alpha": 0.5, "beta": 0.6}})
    with pytest.raises(ConfigError, match="unknown scenario families"):
        SynthConfig.parse({"mix": {"moon": 1.0}})
    with pytest.raises(ConfigError, match="regimes"):
        SynthConfig.parse({"regimes": {"bull": {"duration_bars": 5, "drift_annual": 0}}})
    with pytest.raises(ConfigError, match="duration_bars"):
        SynthConfig.parse({"regimes": {n: {"duration_bars": 0.5, "drift_annual": 0} for n in REGIME_NAMES}})
