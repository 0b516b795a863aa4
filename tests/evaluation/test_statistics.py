"""Statistics against published values and simulations with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from himari.errors import ConfigError, DataError
from himari.evaluation.statistics import (
    _bootstrap_stat,
    block_length,
    bootstrap_indices,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    paired_bootstrap_test,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    psr_from_moments,
    sharpe_confidence_interval,
    strategy_statistics,
)
from himari.utils.seeding import make_rng


def _ar1(rng: np.random.Generator, n: int, phi: float, scale: float, size: int | None = None) -> np.ndarray:
    shape = (n,) if size is None else (size, n)
    e = rng.normal(0, scale, shape)
    x = np.empty(shape)
    x[..., 0] = e[..., 0]
    for t in range(1, n):
        x[..., t] = phi * x[..., t - 1] + e[..., t]
    return x


# --- bootstrap ------------------------------------------------------------------------------------------------------


def test_stationary_indices_have_geometric_blocks() -> None:
    idx = bootstrap_indices(2000, 50, 10.0, "stationary", make_rng(0))
    assert idx.shape == (50, 2000) and idx.min() >= 0 and idx.max() < 2000
    continues = (idx[:, 1:] == (idx[:, :-1] + 1) % 2000).mean()
    # A block ends with probability 1/10 per bar (a random restart continues by chance with p = 1/2000).
    assert continues == pytest.approx(0.9, abs=0.01)


def test_circular_indices_are_fixed_blocks() -> None:
    idx = bootstrap_indices(100, 20, 7.0, "circular", make_rng(1))
    assert idx.shape == (20, 100)
    blocks = idx[:, : 98].reshape(20, 14, 7)
    assert (np.diff(blocks, axis=2) % 100 == 1).all()


@pytest.mark.parametrize("method", ["stationary", "circular"])
def test_block_sum_bootstrap_equals_index_bootstrap(method: str) -> None:
    """The fast path (sums of block sums) equals the statistic on explicitly resampled series, same generator."""
    x = make_rng(9).normal(0.001, 0.01, 700)
    fast = _bootstrap_stat(x, "sharpe", 40, 6.5, method, make_rng(10))  # type: ignore[arg-type]
    sample = x[bootstrap_indices(700, 40, 6.5, method, make_rng(10))]  # type: ignore[arg-type]
    np.testing.assert_allclose(fast, sample.mean(axis=1) / sample.std(axis=1, ddof=1), rtol=1e-9)
    fast_mean = _bootstrap_stat(x, "mean", 40, 6.5, method, make_rng(10))  # type: ignore[arg-type]
    np.testing.assert_allclose(fast_mean, sample.mean(axis=1), rtol=1e-9)


def test_block_length_rule() -> None:
    rng = make_rng(2)
    white = rng.normal(0, 0.01, 3000)
    persistent = _ar1(rng, 3000, 0.9, 0.01)
    assert 1.0 <= block_length(white) < block_length(persistent) <= 3000 / 4
    assert block_length(np.zeros(1000)) == pytest.approx(1000 ** (1 / 3))  # fallback for constant series


def test_sharpe_ci_width_matches_theory_for_iid_returns() -> None:
    rng = make_rng(3)
    n, ppy = 4000, 365.0
    r = rng.normal(0.001, 0.02, n)
    ci = sharpe_confidence_interval(r, ppy, make_rng(4), n_boot=1000, block=1.0)
    sr = r.mean() / r.std(ddof=1)
    assert ci.sharpe == pytest.approx(sr * math.sqrt(ppy))
    assert ci.low < ci.sharpe < ci.high
    # Lo (2002): se(SR) = sqrt((1 + SR^2 / 2) / n) per bar for i.i.d. normal returns.
    expected_width = 2 * 1.96 * math.sqrt((1 + sr**2 / 2) / n) * math.sqrt(ppy)
    assert (ci.high - ci.low) == pytest.approx(expected_width, rel=0.15)
    again = sharpe_confidence_interval(r, ppy, make_rng(4), n_boot=1000, block=1.0)
    assert again == ci  # same rng seed, same interval


def test_block_bootstrap_widens_ci_under_dependence() -> None:
    r = _ar1(make_rng(5), 3000, 0.6, 0.01) + 0.0005
    iid = sharpe_confidence_interval(r, 365.0, make_rng(6), n_boot=800, block=1.0)
    blocked = sharpe_confidence_interval(r, 365.0, make_rng(6), n_boot=800)
    assert blocked.block_length > 3
    # Positive autocorrelation inflates the variance of the mean by ~ (1 + phi) / (1 - phi) = 4.
    assert (blocked.high - blocked.low) > 1.5 * (iid.high - iid.low)


def test_bootstrap_input_errors() -> None:
    with pytest.raises(DataError, match="NaN or inf at bar 3"):
        sharpe_confidence_interval(np.array([0.0, 0.1, 0.2, np.nan, *[0.0] * 10]), 365.0, make_rng(0))
    with pytest.raises(ConfigError):
        sharpe_confidence_interval(np.zeros(50), 365.0, make_rng(0), n_boot=10)
    with pytest.raises(ConfigError):
        bootstrap_indices(10, 2, 3.0, "moving", make_rng(0))  # type: ignore[arg-type]


# --- PSR / DSR ------------------------------------------------------------------------------------------------------


def test_psr_formula_by_hand() -> None:
    sr, n, skew, kurt, bench = 0.1, 500, -1.0, 6.0, 0.02
    z = (sr - bench) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    assert psr_from_moments(sr, n, skew, kurt, bench) == pytest.approx(stats.norm.cdf(z))
    r = make_rng(0).standard_t(5, 800) * 0.01 + 0.001
    sr_hat = r.mean() / r.std(ddof=1)
    expected = psr_from_moments(sr_hat, 800, stats.skew(r), stats.kurtosis(r, fisher=False), 0.0)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(expected)


@pytest.mark.parametrize("family", ["normal", "skewed"])
def test_psr_is_calibrated_at_the_true_sharpe(family: str) -> None:
    """Under H0 (true SR = SR*), PSR(SR*) is ~uniform: P(PSR > 0.95) ≈ 5% — also for skewed, fat-tailed returns."""
    rng = make_rng(11)
    n, reps = 1000, 4000
    if family == "normal":
        r = rng.normal(0.05, 1.0, (reps, n))
        true_sr = 0.05
    else:
        # Negatively skewed: minus a centred lognormal plus drift. True moments from the lognormal (sigma = 0.8).
        s2 = 0.64
        mean_ln, var_ln = math.exp(s2 / 2), (math.exp(s2) - 1) * math.exp(s2)
        r = -(rng.lognormal(0.0, 0.8, (reps, n)) - mean_ln) + 0.1
        true_sr = 0.1 / math.sqrt(var_ln)
    mean = r.mean(axis=1)
    std = r.std(axis=1, ddof=1)
    psr = psr_from_moments(mean / std, n, stats.skew(r, axis=1), stats.kurtosis(r, axis=1, fisher=False), true_sr)
    rejection = float((np.asarray(psr) > 0.95).mean())
    assert rejection == pytest.approx(0.05, abs=0.02)


def test_expected_max_sharpe_matches_simulation() -> None:
    rng = make_rng(12)
    sd = 0.05
    maxima = rng.normal(0.0, sd, (20000, 100)).max(axis=1)
    assert expected_max_sharpe(100, sd**2) == pytest.approx(maxima.mean(), rel=0.03)
    assert expected_max_sharpe(1, 0.3) == 0.0


def test_dsr_reproduces_bailey_lopez_de_prado_2014_example() -> None:
    """Their numerical example: N=100 trials, V[SR]=1/2 (annual), SR=2.5 (annual), T=1250 days, skew -3, kurt 10
    -> SR0 ≈ 0.1132 per day and DSR ≈ 0.9004 (250 days a year in the paper)."""
    days = 250
    sr0 = expected_max_sharpe(100, 0.5 / days)
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    dsr = psr_from_moments(2.5 / math.sqrt(days), 1250, -3.0, 10.0, sr0)
    assert dsr == pytest.approx(0.9004, abs=1e-3)


def test_deflated_sharpe_honest_trials() -> None:
    r = make_rng(13).normal(0.002, 0.02, 1000)
    single = deflated_sharpe_ratio(r, 1)
    assert single.dsr == pytest.approx(single.psr)
    many = deflated_sharpe_ratio(r, 50, trial_sharpes_per_bar=make_rng(14).normal(0, 0.05, 50))
    assert many.dsr < single.dsr  # more trials -> higher bar -> lower DSR
    assert many.expected_max_sharpe_per_bar > 0
    with pytest.raises(ConfigError, match="no variance"):
        deflated_sharpe_ratio(r, 10)


# --- PBO ------------------------------------------------------------------------------------------------------------


def test_pbo_is_about_one_half_for_pure_noise() -> None:
    """For noise the IS winner's OOS rank is uniform: PBO averages 0.5 (one matrix alone varies a lot, since its
    C(S, S/2) splits are strongly dependent, so average over independent matrices)."""
    result = probability_of_backtest_overfitting(make_rng(20).normal(0.0, 0.01, (1600, 40)), n_splits=16)
    assert result.n_combinations == 12870
    assert result.logits.shape == (12870,)
    values = [probability_of_backtest_overfitting(make_rng(s).normal(0.0, 0.01, (800, 20)), n_splits=10).pbo
              for s in range(24)]
    assert 0.38 < float(np.mean(values)) < 0.62


def test_pbo_is_low_when_one_config_dominates() -> None:
    m = make_rng(21).normal(0.0, 0.01, (1600, 40))
    m[:, 7] += 0.004  # a real edge of 0.4 per-bar standard deviations
    result = probability_of_backtest_overfitting(m, n_splits=16)
    assert result.pbo < 0.05
    assert result.prob_oos_loss < 0.05


def test_pbo_is_high_when_in_sample_winners_reverse() -> None:
    """Configs whose first-half edge turns into a second-half loss: picking the IS best is systematically wrong."""
    rng = make_rng(22)
    t, n = 1600, 20
    m = rng.normal(0.0, 0.01, (t, n))
    edge = np.linspace(-0.003, 0.003, n)
    regime = np.where((np.arange(t) // 100) % 2 == 0, 1.0, -1.0)[:, None]  # alternating 100-bar blocks
    m += regime * edge[None, :]
    assert probability_of_backtest_overfitting(m, n_splits=16).pbo > 0.7


def test_pbo_input_errors() -> None:
    with pytest.raises(DataError, match="at least 2 configurations"):
        probability_of_backtest_overfitting(np.zeros((100, 1)))
    with pytest.raises(ConfigError, match="even"):
        probability_of_backtest_overfitting(np.zeros((100, 3)), n_splits=5)
    bad = np.zeros((100, 3))
    bad[42, 2] = np.nan
    with pytest.raises(DataError, match="bar 42, config 2"):
        probability_of_backtest_overfitting(bad)


# --- paired test ----------------------------------------------------------------------------------------------------


def test_paired_test_size_under_dependence() -> None:
    """Two correlated, autocorrelated series with equal means: rejections at 5% stay near 5%."""
    rng = make_rng(30)
    reps, n = 120, 400
    common = _ar1(rng, n, 0.5, 0.01, size=reps)
    a = common + _ar1(rng, n, 0.5, 0.005, size=reps)
    b = common + _ar1(rng, n, 0.5, 0.005, size=reps)
    p = np.array([paired_bootstrap_test(a[i], b[i], make_rng(100 + i), n_boot=300).p_value for i in range(reps)])
    assert (p < 0.05).mean() <= 0.12


def test_paired_test_detects_a_real_difference() -> None:
    rng = make_rng(31)
    common = _ar1(rng, 2000, 0.3, 0.01)
    a = common + rng.normal(0.0006, 0.002, 2000)
    b = common + rng.normal(0.0, 0.002, 2000)
    result = paired_bootstrap_test(a, b, make_rng(32), n_boot=1000)
    assert result.p_value < 0.01
    assert result.low < result.mean_difference < result.high
    assert result.low > 0
    with pytest.raises(DataError, match="differ in length"):
        paired_bootstrap_test(a, b[:-1], make_rng(0))


# --- metrics.json block ---------------------------------------------------------------------------------------------


def test_strategy_statistics_block() -> None:
    rng = make_rng(40)
    r = rng.normal(0.0002, 0.01, 2000)
    matrix = np.column_stack([r, rng.normal(0, 0.01, (2000, 5))])
    out = strategy_statistics(r, 8760.0, make_rng(41), n_trials=6, trial_sharpes_annual=rng.normal(0, 1, 6),
                              returns_matrix=matrix, n_boot=200, pbo_splits=8)
    assert out["sharpe_ci_low"] < out["sharpe"] < out["sharpe_ci_high"]
    assert 0 <= out["dsr"] <= out["psr"] <= 1
    assert out["n_trials"] == 6 and out["pbo_n_configs"] == 6 and 0 <= out["pbo"] <= 1
    no_pbo = strategy_statistics(r, 8760.0, make_rng(41), n_boot=200)
    assert no_pbo["pbo"] is None and no_pbo["dsr"] == pytest.approx(no_pbo["psr"])
    constant = strategy_statistics(np.full(100, 1e-4), 8760.0, make_rng(0), n_boot=200)
    assert math.isnan(constant["sharpe"]) and math.isnan(constant["dsr"])  # undefined, never inf
