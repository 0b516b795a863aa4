"""Statistics that tell a real edge from luck: block-bootstrap Sharpe intervals, probabilistic and deflated Sharpe
ratios, the probability of backtest overfitting (CSCV), and a paired block-bootstrap test for two strategies.

Conventions: return series are per-bar simple returns (NumPy arrays). Sharpe ratios inside this module are **per
bar** (``mean / std``) unless a name says ``annual``; multiply by ``sqrt(periods_per_year)`` to annualize. Every
random procedure takes an explicit ``np.random.Generator``.

References
----------
- Politis, D. & Romano, J. (1994). The stationary bootstrap. JASA 89(428).
- Politis, D. & White, H. (2004), with Patton, Politis & White (2009) correction. Automatic block-length selection
  for the dependent bootstrap. Econometric Reviews.
- Bailey, D. & López de Prado, M. (2012). The Sharpe ratio efficient frontier. Journal of Risk 15(2).
- Bailey, D. & López de Prado, M. (2014). The deflated Sharpe ratio. Journal of Portfolio Management 40(5).
- Bailey, D., Borwein, J., López de Prado, M. & Zhu, Q. (2015/2017). The probability of backtest overfitting.
  Journal of Computational Finance 20(4).
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Literal, NamedTuple

import numpy as np
from scipy import stats

from himari.errors import ConfigError, DataError

BootstrapMethod = Literal["stationary", "circular"]
EULER_MASCHERONI = 0.5772156649015329
# Blocks (samples x blocks per sample) drawn at once; bounds memory per chunk.
_CHUNK_ELEMENTS = 4_000_000


def _returns(name: str, values: np.ndarray, min_length: int = 2) -> np.ndarray:
    r = np.asarray(values, dtype=np.float64)
    if r.ndim != 1:
        raise DataError(f"statistics: {name} must be a 1-D array of per-bar returns, got shape {r.shape}")
    if r.size < min_length:
        raise DataError(f"statistics: {name} has {r.size} bars, at least {min_length} are needed")
    bad = ~np.isfinite(r)
    if bad.any():
        raise DataError(f"statistics: {name} is NaN or inf at bar {int(np.argmax(bad))}")
    return r


# --------------------------------------------------------------------------------------------------------------------
# Block bootstrap
# --------------------------------------------------------------------------------------------------------------------


def block_length(returns: np.ndarray, method: BootstrapMethod = "stationary") -> float:
    """Expected block length (bars) for the dependent bootstrap of a Sharpe ratio.

    Rule: the Politis-White (2004, corrected 2009) automatic length for the chosen method, computed on the returns
    **and** on the squared returns (the Sharpe ratio depends on the variance too, and volatility clustering makes the
    squares far more persistent than the returns), taking the larger; then clipped to ``[1, T / 4]``. The
    implementation is ``arch.bootstrap.optimal_block_length``. If it fails (e.g. a constant series) the rule falls
    back to ``T ** (1/3)``, the optimal growth rate of the block length for variance estimation.
    """
    r = _returns("returns", returns, min_length=8)
    n = r.size
    from arch.bootstrap import optimal_block_length

    column = "stationary" if method == "stationary" else "circular"
    lengths = []
    for series in (r, r * r):
        if float(series.std()) <= 1e-12 * max(1.0, float(np.abs(series).mean())):
            continue  # constant: no dependence to preserve (and the autocorrelations are undefined)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                value = float(optimal_block_length(series)[column].iloc[0])
        except (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if math.isfinite(value):
            lengths.append(value)
    length = max(lengths) if lengths else n ** (1.0 / 3.0)
    return float(min(max(length, 1.0), n / 4.0))


def bootstrap_blocks(
    n_bars: int, n_samples: int, block: float, method: BootstrapMethod, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of a stationary or circular block bootstrap: ``(starts, lengths)``, each ``(n_samples, m)``.

    - stationary (Politis & Romano 1994): geometric block lengths with mean ``block`` (a new block starts at each
      bar with probability ``1 / block``);
    - circular (Politis & Romano 1992): blocks of fixed length ``round(block)``.

    Starts are uniform over the bars and blocks wrap around the end. Each row's lengths sum to exactly ``n_bars``
    (the last block is cut, later ones have length 0).
    """
    if n_bars < 1 or n_samples < 1:
        raise ConfigError("bootstrap: need at least one bar and one sample")
    if block < 1:
        raise ConfigError(f"bootstrap: block length must be >= 1, got {block}")
    if method == "stationary":
        p = 1.0 / block
        m = math.ceil(n_bars * p + 8.0 * math.sqrt(n_bars * p) + 16)
        lengths = rng.geometric(p, size=(n_samples, m))
        while (lengths.sum(axis=1) < n_bars).any():  # rare: draw more blocks for every row
            lengths = np.concatenate([lengths, rng.geometric(p, size=(n_samples, m))], axis=1)
    elif method == "circular":
        size = max(1, round(block))
        lengths = np.full((n_samples, -(-n_bars // size)), size, dtype=np.int64)
    else:
        raise ConfigError(f"bootstrap: unknown method {method!r} (stationary, circular)")
    ends = np.minimum(np.cumsum(lengths, axis=1), n_bars)
    lengths = np.diff(ends, axis=1, prepend=0)
    starts = rng.integers(0, n_bars, size=lengths.shape)
    return starts, lengths


def bootstrap_indices(
    n_bars: int, n_samples: int, block: float, method: BootstrapMethod, rng: np.random.Generator
) -> np.ndarray:
    """Resampled bar indices ``(n_samples, n_bars)`` from :func:`bootstrap_blocks` (same random stream)."""
    starts, lengths = bootstrap_blocks(n_bars, n_samples, block, method, rng)
    flat_lengths = lengths.ravel()
    block_first = np.cumsum(flat_lengths) - flat_lengths  # position of each block's first bar in the flat output
    position = np.arange(n_samples * n_bars)
    offset = position - np.repeat(block_first, flat_lengths)
    return ((np.repeat(starts.ravel(), flat_lengths) + offset) % n_bars).reshape(n_samples, n_bars)


def _bootstrap_stat(
    data: np.ndarray,
    statistic: str,
    n_boot: int,
    block: float,
    method: BootstrapMethod,
    rng: np.random.Generator,
) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the per-bar Sharpe ratio or the mean of ``data``.

    Each resample's sum (and sum of squares) is a sum of block sums, read from cumulative sums of the series
    concatenated with itself (blocks wrap), so the cost is per block, not per bar. Equal to computing the statistic
    on ``data[bootstrap_indices(...)]`` with the same generator state (tested).
    """
    n = data.size
    doubled = np.concatenate([data, data])
    c1 = np.concatenate([[0.0], np.cumsum(doubled)])
    c2 = np.concatenate([[0.0], np.cumsum(doubled * doubled)]) if statistic == "sharpe" else None
    chunk = max(1, _CHUNK_ELEMENTS // max(1, round(n / block)))
    out = np.empty(n_boot)
    for first in range(0, n_boot, chunk):
        k = min(chunk, n_boot - first)
        starts, lengths = bootstrap_blocks(n, k, block, method, rng)
        s1 = (c1[starts + lengths] - c1[starts]).sum(axis=1)
        mean = s1 / n
        if statistic == "mean":
            out[first : first + k] = mean
            continue
        assert c2 is not None
        s2 = (c2[starts + lengths] - c2[starts]).sum(axis=1)
        std = np.sqrt(np.maximum(s2 - n * mean * mean, 0.0) / (n - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[first : first + k] = np.where(std > 1e-12, mean / std, 0.0)
    return out


class SharpeCI(NamedTuple):
    """A bootstrap confidence interval for the annualized Sharpe ratio."""

    sharpe: float  # point estimate, annualized
    low: float  # lower bound, annualized
    high: float  # upper bound, annualized
    confidence: float  # e.g. 0.95
    block_length: float  # expected block length in bars
    method: str  # "stationary" or "circular"
    n_boot: int


def sharpe_confidence_interval(
    returns: np.ndarray,
    periods_per_year: float,
    rng: np.random.Generator,
    n_boot: int = 2000,
    confidence: float = 0.95,
    method: BootstrapMethod = "stationary",
    block: float | None = None,
) -> SharpeCI:
    """Percentile block-bootstrap confidence interval of the annualized Sharpe ratio.

    Blocks keep the serial dependence (autocorrelation, volatility clustering) that an i.i.d. bootstrap would
    destroy, which would make the interval too narrow. ``block=None`` uses :func:`block_length`.
    """
    r = _returns("returns", returns, min_length=8)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"bootstrap: confidence must be in (0, 1), got {confidence}")
    if n_boot < 100:
        raise ConfigError(f"bootstrap: n_boot must be >= 100, got {n_boot}")
    length = block_length(r, method) if block is None else float(block)
    scale = math.sqrt(periods_per_year)
    std = float(r.std(ddof=1))
    if std <= 1e-12:  # constant returns: Sharpe 0 when they are all zero, undefined (NaN, not inf) otherwise
        value = 0.0 if abs(float(r.mean())) <= 1e-12 else math.nan
        return SharpeCI(value, value, value, confidence, length, method, n_boot)
    point = float(r.mean()) / std * scale
    replicates = _bootstrap_stat(r, "sharpe", n_boot, length, method, rng) * scale
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return SharpeCI(point, float(low), float(high), confidence, length, method, n_boot)


class PairedTest(NamedTuple):
    """Paired block-bootstrap test of ``mean(a - b) = 0`` for two return series on the same bars."""

    mean_difference: float  # mean of a - b per bar
    low: float  # CI of the mean difference per bar
    high: float
    p_value: float  # two-sided
    confidence: float
    block_length: float
    method: str
    n_boot: int


def paired_bootstrap_test(
    returns_a: np.ndarray,
    returns_b: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 2000,
    confidence: float = 0.95,
    method: BootstrapMethod = "stationary",
    block: float | None = None,
) -> PairedTest:
    """Test whether strategy A's mean per-bar return differs from B's on the same bars (e.g. shadow A/B).

    The per-bar difference ``d_t = a_t - b_t`` is resampled in blocks (the pairing keeps the strong dependence
    between the two series; the blocks keep serial dependence), so it stays valid where an independent or i.i.d.
    t-test is not. Two-sided p-value from the null-centred bootstrap distribution
    ``p = (1 + #{|mean*(d) - mean(d)| >= |mean(d)|}) / (1 + n_boot)``; the CI is the percentile interval of
    ``mean*(d)``. ``block=None`` uses :func:`block_length` of ``d``.
    """
    a = _returns("returns_a", returns_a, min_length=8)
    b = _returns("returns_b", returns_b, min_length=8)
    if a.size != b.size:
        raise DataError(f"statistics: paired series differ in length ({a.size} vs {b.size} bars)")
    if n_boot < 100:
        raise ConfigError(f"bootstrap: n_boot must be >= 100, got {n_boot}")
    d = a - b
    observed = float(d.mean())
    if float(d.std()) <= 1e-15:
        return PairedTest(observed, observed, observed, 1.0 if abs(observed) <= 1e-15 else 0.0, confidence, 1.0,
                          method, n_boot)
    length = block_length(d, method) if block is None else float(block)
    replicates = _bootstrap_stat(d, "mean", n_boot, length, method, rng)
    extreme = np.abs(replicates - observed) >= abs(observed)
    p_value = (1.0 + float(extreme.sum())) / (1.0 + n_boot)
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return PairedTest(observed, float(low), float(high), p_value, confidence, length, method, n_boot)


# --------------------------------------------------------------------------------------------------------------------
# Probabilistic and deflated Sharpe ratio
# --------------------------------------------------------------------------------------------------------------------


def sample_moments(returns: np.ndarray) -> tuple[float, float, float, int]:
    """``(sharpe_per_bar, skewness, kurtosis, n)`` with kurtosis **non-excess** (3 for a normal distribution).

    Skewness and kurtosis are the (biased) sample moments, as in Bailey & López de Prado (2012).
    """
    r = _returns("returns", returns, min_length=3)
    std = float(r.std(ddof=1))
    if std <= 1e-12:  # constant: Sharpe 0 if all zero, undefined (NaN) otherwise; moments of a point mass
        sharpe = 0.0 if abs(float(r.mean())) <= 1e-12 else math.nan
        return sharpe, 0.0, 3.0, int(r.size)
    skew = float(stats.skew(r, bias=True))
    kurt = float(stats.kurtosis(r, fisher=False, bias=True))
    return float(r.mean()) / std, skew, kurt, int(r.size)


def psr_from_moments(
    sharpe_per_bar: float | np.ndarray,
    n_bars: int,
    skewness: float | np.ndarray,
    kurtosis: float | np.ndarray,
    sharpe_benchmark_per_bar: float | np.ndarray = 0.0,
) -> float | np.ndarray:
    """Probabilistic Sharpe ratio (Bailey & López de Prado 2012, eq. 11), vectorized over its arguments.

    ``PSR(SR*) = Φ( (SR - SR*) sqrt(n - 1) / sqrt(1 - γ3 SR + (γ4 - 1) / 4 SR²) )`` with per-bar ``SR``,
    skewness ``γ3`` and non-excess kurtosis ``γ4``: the probability that the true Sharpe ratio exceeds ``SR*`` given
    the estimate, its sample length and the non-normality of the returns.
    """
    sr = np.asarray(sharpe_per_bar, dtype=np.float64)
    denom_sq = 1.0 - np.asarray(skewness) * sr + (np.asarray(kurtosis) - 1.0) / 4.0 * sr * sr
    denom = np.sqrt(np.maximum(denom_sq, 1e-12))
    z = (sr - np.asarray(sharpe_benchmark_per_bar)) * math.sqrt(max(n_bars - 1, 1)) / denom
    result = stats.norm.cdf(z)
    return float(result) if np.ndim(result) == 0 else result


def probabilistic_sharpe_ratio(returns: np.ndarray, sharpe_benchmark_per_bar: float = 0.0) -> float:
    """PSR of a return series against a per-bar benchmark Sharpe ratio (0 = "is the Sharpe ratio positive?")."""
    sr, skew, kurt, n = sample_moments(returns)
    return float(psr_from_moments(sr, n, skew, kurt, sharpe_benchmark_per_bar))


def expected_max_sharpe(n_trials: int, trial_sharpe_variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios under the null of no skill (Bailey & López de Prado 2014).

    ``SR0 = sqrt(V[SR]) ((1 - γ) Φ^-1(1 - 1/N) + γ Φ^-1(1 - 1/(N e)))``, γ the Euler-Mascheroni constant, in the
    units of ``trial_sharpe_variance`` (per bar here). ``SR0 = 0`` for a single trial.
    """
    if n_trials < 1:
        raise ConfigError(f"deflated Sharpe: n_trials must be >= 1, got {n_trials}")
    if trial_sharpe_variance < 0 or not math.isfinite(trial_sharpe_variance):
        raise ConfigError(f"deflated Sharpe: trial Sharpe variance must be finite and >= 0, got {trial_sharpe_variance}")
    if n_trials == 1:
        return 0.0
    z1 = stats.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(trial_sharpe_variance) * ((1.0 - EULER_MASCHERONI) * z1 + EULER_MASCHERONI * z2))


class DeflatedSharpe(NamedTuple):
    dsr: float  # PSR against the expected maximum Sharpe of n_trials unskilled trials
    psr: float  # PSR against 0
    sharpe_per_bar: float
    expected_max_sharpe_per_bar: float  # SR0
    n_trials: int
    trial_sharpe_variance_per_bar: float
    skewness: float
    kurtosis: float
    n_bars: int


def deflated_sharpe_ratio(
    returns: np.ndarray,
    n_trials: int,
    trial_sharpe_variance_per_bar: float | None = None,
    trial_sharpes_per_bar: np.ndarray | None = None,
) -> DeflatedSharpe:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014): ``DSR = PSR(SR0)``, SR0 from
    :func:`expected_max_sharpe`.

    ``n_trials`` is the number of configurations tried before this one was selected (record it honestly: every
    hyper-parameter set, seed or model evaluated on data that influenced the choice). The variance of the trials'
    per-bar Sharpe ratios is given directly or computed from ``trial_sharpes_per_bar`` (ddof=1). With one trial
    no variance is needed and DSR = PSR(0).
    """
    if trial_sharpes_per_bar is not None:
        trials = np.asarray(trial_sharpes_per_bar, dtype=np.float64)
        if trials.ndim != 1 or not np.isfinite(trials).all():
            raise DataError("deflated Sharpe: trial Sharpe ratios must be a finite 1-D array")
        if trial_sharpe_variance_per_bar is None:
            trial_sharpe_variance_per_bar = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    if trial_sharpe_variance_per_bar is None:
        if n_trials > 1:
            raise ConfigError(
                f"deflated Sharpe: {n_trials} trials but no variance of their Sharpe ratios; pass "
                "trial_sharpe_variance_per_bar or trial_sharpes_per_bar"
            )
        trial_sharpe_variance_per_bar = 0.0
    sr0 = expected_max_sharpe(n_trials, trial_sharpe_variance_per_bar)
    sr, skew, kurt, n = sample_moments(returns)
    dsr = float(psr_from_moments(sr, n, skew, kurt, sr0))
    psr = float(psr_from_moments(sr, n, skew, kurt, 0.0))
    return DeflatedSharpe(dsr, psr, sr, sr0, int(n_trials), float(trial_sharpe_variance_per_bar), skew, kurt, n)


# --------------------------------------------------------------------------------------------------------------------
# Probability of backtest overfitting (CSCV)
# --------------------------------------------------------------------------------------------------------------------


class PBOResult(NamedTuple):
    pbo: float  # share of splits where the in-sample best config ranks at or below the out-of-sample median
    logits: np.ndarray  # (n_combinations,) λ = log(ω / (1 - ω)) of the IS-best config's OOS relative rank ω
    n_splits: int  # S, the number of row blocks
    n_combinations: int  # C(S, S/2)
    n_configs: int
    performance_degradation_slope: float  # OLS slope of OOS Sharpe on IS Sharpe of the IS-best config
    prob_oos_loss: float  # share of splits where the IS-best config has a negative OOS Sharpe


def probability_of_backtest_overfitting(returns_matrix: np.ndarray, n_splits: int = 16) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation (Bailey et al. 2015).

    ``returns_matrix`` is ``(T, N)``: per-bar returns of N configurations on the same bars. The T rows are cut into
    ``S = n_splits`` contiguous blocks; for each of the ``C(S, S/2)`` ways to choose half of them as in-sample (IS),
    the complement is out-of-sample (OOS). The config with the best IS Sharpe ratio is found, its OOS relative rank
    ``ω = rank / (N + 1)`` (1 = worst .. N = best) turned into the logit ``λ = log(ω / (1 - ω))``, and
    ``PBO = P(λ <= 0)``: how often the IS winner is no better than the OOS median. Noise gives PBO ≈ 0.5; a truly
    dominant config gives PBO ≈ 0. Sharpe ratios of each half are computed from per-block sums, so all
    combinations are evaluated vectorized.
    """
    m = np.asarray(returns_matrix, dtype=np.float64)
    if m.ndim != 2:
        raise DataError(f"PBO: returns matrix must be (T, n_configs), got shape {m.shape}")
    t, n_configs = m.shape
    if n_configs < 2:
        raise DataError(f"PBO: needs at least 2 configurations, got {n_configs}")
    if n_splits < 2 or n_splits % 2 or n_splits > 24:
        raise ConfigError(f"PBO: n_splits must be an even number in [2, 24], got {n_splits}")
    if t < 2 * n_splits:
        raise DataError(f"PBO: {t} bars are too few for {n_splits} blocks of at least 2 bars")
    bad = ~np.isfinite(m)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"PBO: returns matrix is NaN or inf at bar {row}, config {col}")

    edges = np.linspace(0, t, n_splits + 1).round().astype(int)
    counts = np.diff(edges).astype(np.float64)  # (S,)
    s1 = np.add.reduceat(m, edges[:-1], axis=0)  # (S, N) block sums
    s2 = np.add.reduceat(m * m, edges[:-1], axis=0)

    combos = np.array(list(itertools.combinations(range(n_splits), n_splits // 2)), dtype=np.int64)
    is_mask = np.zeros((combos.shape[0], n_splits))
    np.put_along_axis(is_mask, combos, 1.0, axis=1)
    oos_mask = 1.0 - is_mask

    def half_sharpe(mask: np.ndarray) -> np.ndarray:
        n = mask @ counts  # (C,)
        mean = (mask @ s1) / n[:, None]
        var = np.maximum((mask @ s2) - n[:, None] * mean * mean, 0.0) / (n[:, None] - 1.0)
        std = np.sqrt(var)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(std > 1e-12, mean / std, 0.0)

    sr_is = half_sharpe(is_mask)  # (C, N)
    sr_oos = half_sharpe(oos_mask)
    best = np.argmax(sr_is, axis=1)  # (C,)
    rows = np.arange(combos.shape[0])
    best_oos = sr_oos[rows, best]
    # Rank 1..N of the IS-best config among OOS Sharpe ratios (ties share the average rank).
    below = (sr_oos < best_oos[:, None]).sum(axis=1)
    ties = (sr_oos == best_oos[:, None]).sum(axis=1)
    rank = below + (ties + 1) / 2.0
    omega = rank / (n_configs + 1.0)
    logits = np.log(omega / (1.0 - omega))
    best_is = sr_is[rows, best]
    if float(np.var(best_is)) > 1e-18:
        slope = float(np.polyfit(best_is, best_oos, 1)[0])
    else:
        slope = math.nan
    return PBOResult(
        pbo=float((logits <= 0).mean()),
        logits=logits,
        n_splits=n_splits,
        n_combinations=int(combos.shape[0]),
        n_configs=int(n_configs),
        performance_degradation_slope=slope,
        prob_oos_loss=float((best_oos < 0).mean()),
    )


# --------------------------------------------------------------------------------------------------------------------
# The ``statistics`` block of metrics.json
# --------------------------------------------------------------------------------------------------------------------


def strategy_statistics(
    returns: np.ndarray,
    periods_per_year: float,
    rng: np.random.Generator,
    n_trials: int = 1,
    trial_sharpes_annual: np.ndarray | None = None,
    returns_matrix: np.ndarray | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    pbo_splits: int = 16,
) -> dict[str, float | int | str | None]:
    """The ``statistics`` block of ``metrics.json`` (keys documented in docs/METRICS.md).

    ``n_trials``: configurations tried before this one was selected (1 if none); ``trial_sharpes_annual``: their
    annualized Sharpe ratios (needed when ``n_trials > 1``; their variance feeds the DSR). ``returns_matrix``
    ``(T, n_configs)``: per-bar returns of the compared configurations for PBO (omitted -> PBO keys are None).
    """
    r = _returns("returns", returns, min_length=8)
    scale = math.sqrt(periods_per_year)
    ci = sharpe_confidence_interval(r, periods_per_year, rng, n_boot=n_boot, confidence=confidence)
    trials_per_bar = None if trial_sharpes_annual is None else np.asarray(trial_sharpes_annual, dtype=np.float64) / scale
    deflated = deflated_sharpe_ratio(r, n_trials, trial_sharpes_per_bar=trials_per_bar)
    out: dict[str, float | int | str | None] = {
        "sharpe": ci.sharpe,
        "sharpe_ci_low": ci.low,
        "sharpe_ci_high": ci.high,
        "sharpe_ci_confidence": confidence,
        "bootstrap_method": ci.method,
        "bootstrap_block_length": ci.block_length,
        "bootstrap_n": ci.n_boot,
        "psr": deflated.psr,
        "dsr": deflated.dsr,
        "n_trials": deflated.n_trials,
        "trial_sharpe_variance_annual": deflated.trial_sharpe_variance_per_bar * periods_per_year,
        "expected_max_sharpe_annual": deflated.expected_max_sharpe_per_bar * scale,
        "skewness": deflated.skewness,
        "kurtosis": deflated.kurtosis,
        "n_bars": deflated.n_bars,
        "pbo": None,
        "pbo_n_configs": None,
        "pbo_n_splits": None,
        "pbo_n_combinations": None,
        "pbo_prob_oos_loss": None,
        "pbo_degradation_slope": None,
    }
    if returns_matrix is not None:
        pbo = probability_of_backtest_overfitting(returns_matrix, n_splits=pbo_splits)
        out.update(
            pbo=pbo.pbo,
            pbo_n_configs=pbo.n_configs,
            pbo_n_splits=pbo.n_splits,
            pbo_n_combinations=pbo.n_combinations,
            pbo_prob_oos_loss=pbo.prob_oos_loss,
            pbo_degradation_slope=pbo.performance_degradation_slope,
        )
    return out
