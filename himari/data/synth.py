"""Synthetic markets: Merton jump-diffusion with GARCH(1,1) volatility under a Markov regime chain.

Model (per scenario ``s``, bar ``t``; all draws from one explicit :class:`numpy.random.Generator`)::

    regime chain     r_t ~ Markov(P_s),   P[i, i] = 1 - 1/d_i,   P[i, j] = w_ij / d_i   (j != i, sum_j w_ij = 1)
    GARCH(1,1)       h_t = omega + alpha * h_{t-1} * z_{t-1}^2 + beta * h_{t-1},   omega = v (1 - alpha - beta)
    diffusion sd     sigma_t = m_{r_t} * sqrt(h_t)
    jumps            N_t ~ Poisson(lam_{r_t}),   J_t | N_t ~ Normal(N_t mu_J, N_t sd_J^2)   (sum of N_t log-jumps)
    log return       x_t = mu_{r_t} - sigma_t^2 / 2 - lam_{r_t} k_{r_t} + sigma_t z_t + J_t,
                     k = E[e^Y - 1] = exp(mu_J + sd_J^2 / 2) - 1   (the Merton jump compensator)

so ``E[P_t / P_{t-1} | regime, h_t] = exp(mu_r)`` exactly: **the drift is the expected arithmetic (simple) growth
rate, continuously compounded**: ``mu_r = drift_annual / periods_per_year`` per bar, and within a regime
``E[P_{t+n} / P_t] = exp(n mu_r)``, so ``drift_annual = ln E[P_{t+1 year} / P_t]`` whatever the volatility and jumps (Merton 1976, "Option pricing
when underlying stock returns are discontinuous", J. Financial Economics 3). The expected *log* return per bar is
``mu - sigma^2/2 - lam k + lam mu_J``. Innovations are Gaussian on purpose: with Student-t shocks ``E[e^x]`` is
infinite and no compensator could exist; heavy tails come from GARCH mixing, jumps and regime switches instead.

The expected time in a regime is ``d_i`` bars (geometric sojourn, mean ``1 / (1 - P[i, i])``): regime parameters are
durations, not probabilities. Bars are internally consistent: ``open_t = close_{t-1}`` (24/7 market), and the
intrabar extremes are drawn from the Brownian-bridge maximum/minimum given the bar's log move ``b`` and diffusion
variance ``s^2`` (``max = (b + sqrt(b^2 - 2 s^2 ln U)) / 2``), so ``high >= max(open, close)`` and
``low <= min(open, close)`` by construction. Volume is log-normal with an AR(1) component and rises with
``|x_t| / sigma_t`` and with regime stress.

Scenario families (``FAMILIES``) change the chain (start state, duration multipliers, exit weights) and GARCH
persistence; ``flash_crash`` adds one deterministic crash-and-partial-rebound event (not compensated: a stress event).
The default mix is the seeds' 40% mixed, 20% crash, 20% bear, 10% vol_cluster, 10% bull.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from himari.config import FrozenConfig
from himari.data.bars import Bars
from himari.data.timeframe import Timeframe
from himari.errors import ConfigError, DataError
from himari.utils.seeding import make_rng

REGIME_NAMES: tuple[str, ...] = ("bull", "bear", "range", "crash")
BULL, BEAR, RANGE, CRASH = range(4)
FAMILY_NAMES: tuple[str, ...] = ("mixed", "crash", "bear", "vol_cluster", "bull", "flash_crash")


class GarchParams(FrozenConfig):
    """GARCH(1,1) of the diffusion part: ``h_t = omega + alpha h_{t-1} z_{t-1}^2 + beta h_{t-1}``.

    ``annual_vol`` is the unconditional volatility ``sqrt(v * periods_per_year)`` with ``v = omega / (1-alpha-beta)``
    (before the regime multiplier).
    """

    alpha: float = Field(0.08, ge=0.0, lt=1.0)
    beta: float = Field(0.90, ge=0.0, lt=1.0)
    annual_vol: float = Field(0.55, gt=0.0, le=20.0)

    @model_validator(mode="after")
    def _stationary(self) -> GarchParams:
        if self.alpha + self.beta >= 1.0:
            raise ValueError(f"alpha + beta = {self.alpha + self.beta:.4f} must be < 1 (covariance stationary)")
        return self


class JumpParams(FrozenConfig):
    """Base Merton jumps: Poisson arrivals ``intensity_per_year``; log jump size ~ Normal(mean, std^2)."""

    intensity_per_year: float = Field(25.0, ge=0.0)
    mean: float = Field(-0.005, ge=-1.0, le=1.0)
    std: float = Field(0.02, ge=0.0, le=1.0)


class RegimeParams(FrozenConfig):
    """One regime: expected duration (bars); ``drift_annual`` = ln E[P_{t+1y}/P_t] (the compensated Merton drift,
    see the module docstring); multipliers of the base GARCH vol and jump intensity; jump mean shift (log)."""

    duration_bars: float = Field(..., ge=1.0)
    drift_annual: float = Field(..., ge=-200.0, le=200.0)
    vol_multiplier: float = Field(1.0, gt=0.0, le=20.0)
    jump_intensity_multiplier: float = Field(1.0, ge=0.0)
    jump_mean_shift: float = Field(0.0, ge=-1.0, le=1.0)
    jump_std_multiplier: float = Field(1.0, ge=0.0)
    volume_multiplier: float = Field(1.0, gt=0.0)


def _default_regimes() -> dict[str, RegimeParams]:
    return {
        "bull": RegimeParams(duration_bars=720, drift_annual=0.8, vol_multiplier=0.85, jump_intensity_multiplier=0.8),
        "bear": RegimeParams(
            duration_bars=480, drift_annual=-0.7, vol_multiplier=1.2, jump_intensity_multiplier=1.5,
            jump_mean_shift=-0.005, volume_multiplier=1.2,
        ),
        "range": RegimeParams(duration_bars=360, drift_annual=0.0, vol_multiplier=0.6, jump_intensity_multiplier=0.5),
        "crash": RegimeParams(
            duration_bars=48, drift_annual=-25.0, vol_multiplier=2.5, jump_intensity_multiplier=8.0,
            jump_mean_shift=-0.02, jump_std_multiplier=1.5, volume_multiplier=2.5,
        ),
    }


class FlashCrashParams(FrozenConfig):
    """One flash crash per ``flash_crash`` scenario: a one-bar log drop ``depth`` ~ U[min, max] at a uniform bar in
    the middle 80% of the path, then a rebound of ``recovery`` ~ U[min, max] of the drop spread over
    ``recovery_bars`` bars (labelled ``crash``)."""

    depth_min: float = Field(0.10, gt=0.0, lt=3.0)
    depth_max: float = Field(0.30, gt=0.0, lt=3.0)
    recovery_min: float = Field(0.3, ge=0.0, le=1.5)
    recovery_max: float = Field(0.8, ge=0.0, le=1.5)
    recovery_bars: int = Field(12, ge=1, le=10_000)


class VolumeParams(FrozenConfig):
    """``log V_t = log(base) + log(regime multiplier) + sensitivity * |x_t| / sigma_t + eta_t``,
    ``eta`` AR(1) with coefficient ``persistence`` and stationary sd ``noise_sd``."""

    base: float = Field(1000.0, gt=0.0)
    sensitivity: float = Field(0.35, ge=0.0, le=5.0)
    persistence: float = Field(0.7, ge=0.0, lt=1.0)
    noise_sd: float = Field(0.35, ge=0.0, le=5.0)


def _default_mix() -> dict[str, float]:
    return {"mixed": 0.4, "crash": 0.2, "bear": 0.2, "vol_cluster": 0.1, "bull": 0.1, "flash_crash": 0.0}


class SynthConfig(FrozenConfig):
    """Configuration of a synthetic batch (defaults: 500 hourly scenarios of 2000 bars, the seeds' family mix)."""

    n_scenarios: int = Field(500, ge=1, le=1_000_000)
    n_bars: int = Field(2000, ge=2, le=10_000_000)
    timeframe: str = "1h"
    start: str = "2021-01-01T00:00:00Z"
    start_price: float = Field(30_000.0, gt=0.0)
    symbol_prefix: str = "SYN"
    garch: GarchParams = GarchParams()
    jumps: JumpParams = JumpParams()
    regimes: dict[str, RegimeParams] = Field(default_factory=_default_regimes)
    mix: dict[str, float] = Field(default_factory=_default_mix)
    flash_crash: FlashCrashParams = FlashCrashParams()
    volume: VolumeParams = VolumeParams()
    calibration: dict[str, Any] | None = None  # provenance of calibrated parameters (see himari.data.calibrate)

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        Timeframe.parse(self.timeframe)
        if set(self.regimes) != set(REGIME_NAMES):
            raise ValueError(f"regimes must define exactly {REGIME_NAMES}, got {sorted(self.regimes)}")
        unknown = set(self.mix) - set(FAMILY_NAMES)
        if unknown:
            raise ValueError(f"unknown scenario families {sorted(unknown)}; known: {FAMILY_NAMES}")
        if any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError("mix weights must be >= 0 and not all zero")
        if self.flash_crash.depth_max < self.flash_crash.depth_min:
            raise ValueError("flash_crash.depth_max < depth_min")
        if self.flash_crash.recovery_max < self.flash_crash.recovery_min:
            raise ValueError("flash_crash.recovery_max < recovery_min")
        try:
            pd.Timestamp(self.start)
        except ValueError as exc:
            raise ValueError(f"start {self.start!r} is not a timestamp") from exc
        return self

    @property
    def tf(self) -> Timeframe:
        return Timeframe.parse(self.timeframe)


@dataclass(frozen=True)
class FamilySpec:
    """How a scenario family changes the regime chain and GARCH: start distribution, duration multipliers per
    regime, exit weights ``w[i, j]`` (rows: from-regime, normalized over j != i), optional GARCH persistence."""

    initial: tuple[float, float, float, float]
    duration_multiplier: tuple[float, float, float, float]
    exit_weights: tuple[tuple[float, float, float, float], ...]
    garch_alpha: float | None = None
    garch_beta: float | None = None
    vol_scale: float = 1.0
    flash_crash: bool = False


#                 to:  bull  bear  range crash
_MIXED_EXITS = ((0.0, 0.30, 0.50, 0.20), (0.30, 0.0, 0.40, 0.30), (0.45, 0.45, 0.0, 0.10), (0.0, 0.60, 0.40, 0.0))
FAMILIES: dict[str, FamilySpec] = {
    "mixed": FamilySpec((1 / 3, 1 / 3, 1 / 3, 0.0), (1.0, 1.0, 1.0, 1.0), _MIXED_EXITS),
    "bull": FamilySpec(
        (1.0, 0.0, 0.0, 0.0), (3.0, 0.25, 0.5, 0.5),
        ((0.0, 0.15, 0.80, 0.05), (0.7, 0.0, 0.3, 0.0), (0.9, 0.1, 0.0, 0.0), (0.5, 0.0, 0.5, 0.0)),
    ),
    "bear": FamilySpec(
        (0.0, 1.0, 0.0, 0.0), (0.25, 3.0, 0.5, 1.0),
        ((0.0, 0.8, 0.2, 0.0), (0.0, 0.0, 0.6, 0.4), (0.0, 0.9, 0.0, 0.1), (0.0, 1.0, 0.0, 0.0)),
    ),
    "crash": FamilySpec(
        (0.5, 0.0, 0.5, 0.0), (0.5, 1.0, 0.75, 1.5),
        ((0.0, 0.2, 0.2, 0.6), (0.1, 0.0, 0.4, 0.5), (0.2, 0.3, 0.0, 0.5), (0.0, 0.8, 0.2, 0.0)),
    ),
    "vol_cluster": FamilySpec(
        (0.0, 0.0, 1.0, 0.0), (0.5, 0.5, 2.0, 0.5), _MIXED_EXITS, garch_alpha=0.15, garch_beta=0.83, vol_scale=1.3,
    ),
    "flash_crash": FamilySpec(
        (0.5, 0.0, 0.5, 0.0), (1.0, 1.0, 1.0, 1.0),
        ((0.0, 0.2, 0.8, 0.0), (0.4, 0.0, 0.6, 0.0), (0.6, 0.4, 0.0, 0.0), (0.5, 0.0, 0.5, 0.0)), flash_crash=True,
    ),
}


def family_counts(mix: dict[str, float], n: int) -> dict[str, int]:
    """Scenario counts per family by largest-remainder rounding of ``n * weight`` (ties in ``FAMILY_NAMES`` order)."""
    names = [f for f in FAMILY_NAMES if mix.get(f, 0.0) > 0]
    weights = np.array([mix[f] for f in names], dtype=np.float64)
    quota = n * weights / weights.sum()
    counts = np.floor(quota).astype(np.int64)
    order = sorted(range(len(names)), key=lambda i: (-(quota[i] - counts[i]), i))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    return {name: int(c) for name, c in zip(names, counts, strict=True)}


def transition_matrix(durations: np.ndarray, exit_weights: np.ndarray) -> np.ndarray:
    """Markov matrix with expected sojourn ``durations[i]`` bars: ``P[i,i] = 1 - 1/d_i``, ``P[i,j] = w_ij / d_i``."""
    d = np.asarray(durations, dtype=np.float64)
    w = np.array(exit_weights, dtype=np.float64)
    np.fill_diagonal(w, 0.0)
    row = w.sum(axis=1, keepdims=True)
    w = np.divide(w, row, out=np.zeros_like(w), where=row > 0)
    stay = 1.0 - 1.0 / d
    p = w * (1.0 / d)[:, None]
    p[np.arange(len(d)), np.arange(len(d))] = stay
    # A regime with no exits stays forever (weights all zero): keep rows stochastic.
    p[row[:, 0] == 0] = np.eye(len(d))[row[:, 0] == 0]
    return p


@dataclass(frozen=True)
class SyntheticBatch:
    """A batch of ``S`` scenarios of ``T`` bars. Arrays are ``(S, T)`` float64 unless noted.

    ``log_return[:, 0]`` is the move from ``start_price`` to ``close[:, 0]``; ``open[:, t] = close[:, t-1]``.
    ``regime`` (int8, index into ``REGIME_NAMES``), ``jump_count`` (int32, Poisson jumps plus the flash-crash event),
    ``sigma`` (diffusion sd per bar), ``family`` (S,) index into ``FAMILY_NAMES``.
    """

    config: SynthConfig
    seed: int
    family: np.ndarray
    regime: np.ndarray
    log_return: np.ndarray
    sigma: np.ndarray
    jump_count: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    timestamps_ns: np.ndarray = field(repr=False)

    @property
    def n_scenarios(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_bars(self) -> int:
        return int(self.close.shape[1])

    def family_name(self, i: int) -> str:
        return FAMILY_NAMES[int(self.family[i])]

    def symbol(self, i: int) -> str:
        return f"{self.config.symbol_prefix}-{self.family_name(i).upper()}-{i:05d}"

    def to_bars(self, i: int) -> Bars:
        """Scenario ``i`` as canonical :class:`Bars` (UTC timestamps from ``config.start``, synthetic symbol)."""
        if not 0 <= i < self.n_scenarios:
            raise IndexError(f"scenario {i} out of range [0, {self.n_scenarios})")
        return Bars.from_arrays(
            self.timestamps_ns.astype("datetime64[ns]"),
            self.open[i], self.high[i], self.low[i], self.close[i], self.volume[i],
            symbol=self.symbol(i), timeframe=self.config.tf, source=f"synthetic:seed={self.seed}:scenario={i}",
        )

    def indices_of(self, family: str) -> np.ndarray:
        return np.flatnonzero(self.family == FAMILY_NAMES.index(family))


def _family_arrays(config: SynthConfig, family_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per-scenario parameter arrays (S, 4) / (S, 4, 4) / (S,) from the config and the family specs."""
    tf = config.tf
    ppy = tf.periods_per_year
    base_d = np.array([config.regimes[r].duration_bars for r in REGIME_NAMES])
    reg = [config.regimes[r] for r in REGIME_NAMES]
    s = len(family_idx)
    trans = np.zeros((len(FAMILY_NAMES), 4, 4))
    init = np.zeros((len(FAMILY_NAMES), 4))
    alpha = np.zeros(len(FAMILY_NAMES))
    beta = np.zeros(len(FAMILY_NAMES))
    vscale = np.zeros(len(FAMILY_NAMES))
    for k, name in enumerate(FAMILY_NAMES):
        spec = FAMILIES[name]
        d = np.maximum(base_d * np.array(spec.duration_multiplier), 1.0)
        trans[k] = transition_matrix(d, np.array(spec.exit_weights))
        init[k] = np.array(spec.initial) / np.sum(spec.initial)
        alpha[k] = config.garch.alpha if spec.garch_alpha is None else spec.garch_alpha
        beta[k] = config.garch.beta if spec.garch_beta is None else spec.garch_beta
        vscale[k] = spec.vol_scale
    mu = np.array([r.drift_annual for r in reg]) / ppy
    m = np.array([r.vol_multiplier for r in reg])
    lam = np.array([r.jump_intensity_multiplier for r in reg]) * config.jumps.intensity_per_year / ppy
    mu_j = config.jumps.mean + np.array([r.jump_mean_shift for r in reg])
    sd_j = config.jumps.std * np.array([r.jump_std_multiplier for r in reg])
    vol_mult = np.array([r.volume_multiplier for r in reg])
    if np.any(lam > 5.0):
        raise ConfigError(f"jump intensity of {lam.max():.2f} per bar is implausible (> 5): check intensity_per_year")
    return {
        "trans": trans[family_idx], "init": init[family_idx], "alpha": alpha[family_idx], "beta": beta[family_idx],
        "vscale": vscale[family_idx], "mu": np.broadcast_to(mu, (s, 4)), "m": np.broadcast_to(m, (s, 4)),
        "lam": lam, "mu_j": mu_j, "sd_j": sd_j, "vol_mult": vol_mult,
    }


def simulate_regimes(trans: np.ndarray, init: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Markov chains for S scenarios at once: ``trans`` (S, K, K), ``init`` (S, K), ``uniforms`` (S, T) in [0, 1).

    State ``t`` is the first ``j`` with ``cumsum(P[prev])_j > u_t`` (inverse-CDF sampling). Returns int8 (S, T).
    """
    s, t_len = uniforms.shape
    k = init.shape[1]
    out = np.empty((s, t_len), dtype=np.int8)
    rows = np.arange(s)
    # Normalizing each cumulative row by its last entry makes trailing zero-probability states unreachable
    # (their cumulative value is exactly 1.0 > u) despite rounding in the sums.
    init_cum = np.cumsum(init, axis=1)
    init_cum /= init_cum[:, -1:]
    state = np.minimum((uniforms[:, 0, None] >= init_cum).sum(axis=1), k - 1)
    out[:, 0] = state
    cum = np.cumsum(trans, axis=2)
    cum /= cum[:, :, -1:]
    for t in range(1, t_len):
        state = (uniforms[:, t, None] >= cum[rows, state]).sum(axis=1)
        out[:, t] = state
    return out


def garch_variance(z: np.ndarray, omega: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """GARCH(1,1) conditional variances (S, T) driven by standard normal ``z`` (S, T); ``h_0 = omega/(1-a-b)``."""
    s, t_len = z.shape
    h = np.empty((s, t_len))
    h_t = omega / (1.0 - alpha - beta)
    for t in range(t_len):
        h[:, t] = h_t
        h_t = omega + (alpha * z[:, t] ** 2 + beta) * h_t
    return h


def bridge_extremes(
    move: np.ndarray, variance: np.ndarray, u_high: np.ndarray, u_low: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log high/low relative to the open from the Brownian-bridge extremes (Karatzas & Shreve 1991, 2.8).

    For a bridge ending at ``b`` with variance ``s^2``: ``P(max > m) = exp(-2 m (m - b) / s^2)`` for
    ``m >= max(0, b)``, so ``max = (b + sqrt(b^2 - 2 s^2 ln U)) / 2`` and ``min = (b - sqrt(b^2 - 2 s^2 ln U')) / 2``.
    """
    log_u_h = np.log(np.maximum(u_high, 1e-300))
    log_u_l = np.log(np.maximum(u_low, 1e-300))
    hi = 0.5 * (move + np.sqrt(move**2 - 2.0 * variance * log_u_h))
    lo = 0.5 * (move - np.sqrt(move**2 - 2.0 * variance * log_u_l))
    return hi, lo


def generate_batch(config: SynthConfig, seed: int) -> SyntheticBatch:
    """Generate ``config.n_scenarios`` scenarios of ``config.n_bars`` bars, vectorized over scenarios.

    Reproducible: the same ``(config, seed)`` gives bit-identical arrays (one PCG64 generator, fixed draw order).
    """
    rng = make_rng(seed)
    s, t_len = config.n_scenarios, config.n_bars
    counts = family_counts(config.mix, s)
    family = np.concatenate([np.full(c, FAMILY_NAMES.index(f), dtype=np.int8) for f, c in counts.items()])
    family = family[rng.permutation(s)]
    par = _family_arrays(config, family.astype(np.int64))
    ppy = config.tf.periods_per_year

    # Draw order is part of the reproducibility contract: do not reorder.
    u_regime = rng.random((s, t_len))
    z = rng.standard_normal((s, t_len))
    z_jump = rng.standard_normal((s, t_len))
    u_high = rng.random((s, t_len))
    u_low = rng.random((s, t_len))
    e_volume = rng.standard_normal((s, t_len))
    fc_u = rng.random((s, 3))

    regime = simulate_regimes(par["trans"], par["init"], u_regime)
    reg_i = regime.astype(np.int64)
    lam = par["lam"][reg_i]
    jump_count = rng.poisson(lam).astype(np.int32)

    v_bar = (config.garch.annual_vol * par["vscale"]) ** 2 / ppy
    omega = v_bar * (1.0 - par["alpha"] - par["beta"])
    h = garch_variance(z, omega, par["alpha"], par["beta"])
    sigma = np.take_along_axis(par["m"], reg_i, axis=1) * np.sqrt(h)
    mu = np.take_along_axis(par["mu"], reg_i, axis=1)
    mu_j, sd_j = par["mu_j"][reg_i], par["sd_j"][reg_i]
    compensator = lam * (np.exp(mu_j + 0.5 * sd_j**2) - 1.0)
    jumps = jump_count * mu_j + np.sqrt(jump_count) * sd_j * z_jump
    log_return = mu - 0.5 * sigma**2 - compensator + sigma * z + jumps

    flash_rows = np.flatnonzero(family == FAMILY_NAMES.index("flash_crash"))
    if len(flash_rows):
        fc = config.flash_crash
        k = fc.recovery_bars
        lo_t, hi_t = int(0.1 * t_len), max(int(0.9 * t_len) - k - 1, int(0.1 * t_len) + 1)
        tau = np.minimum(lo_t + np.floor(fc_u[flash_rows, 0] * (hi_t - lo_t)).astype(np.int64), t_len - 1)
        depth = fc.depth_min + fc_u[flash_rows, 1] * (fc.depth_max - fc.depth_min)
        recovery = fc.recovery_min + fc_u[flash_rows, 2] * (fc.recovery_max - fc.recovery_min)
        log_return[flash_rows, tau] -= depth
        jump_count[flash_rows, tau] += 1
        regime[flash_rows, tau] = CRASH
        offsets = np.arange(1, k + 1)
        cols = tau[:, None] + offsets[None, :]
        inside = cols < t_len
        r_idx = np.broadcast_to(flash_rows[:, None], cols.shape)[inside]
        c_idx = cols[inside]
        np.add.at(log_return, (r_idx, c_idx), np.broadcast_to((recovery * depth / k)[:, None], cols.shape)[inside])
        regime[r_idx, c_idx] = CRASH

    log_close = np.log(config.start_price) + np.cumsum(log_return, axis=1)
    close = np.exp(log_close)
    open_ = np.empty_like(close)
    open_[:, 0] = config.start_price
    open_[:, 1:] = close[:, :-1]
    hi, lo = bridge_extremes(log_return, sigma**2, u_high, u_low)
    high = np.maximum(open_ * np.exp(hi), np.maximum(open_, close))
    low = np.minimum(open_ * np.exp(lo), np.minimum(open_, close))

    vp = config.volume
    from scipy.signal import lfilter

    eta = lfilter([np.sqrt(1.0 - vp.persistence**2) * vp.noise_sd], [1.0, -vp.persistence], e_volume, axis=1)
    standardized_move = np.abs(log_return) / np.maximum(sigma, 1e-12)
    volume = vp.base * par["vol_mult"][reg_i] * np.exp(vp.sensitivity * np.minimum(standardized_move, 20.0) + eta)

    start = pd.Timestamp(config.start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    step = config.tf.nanoseconds
    first = (start.value // step) * step
    timestamps = first + step * np.arange(t_len, dtype=np.int64)
    if not (np.all(np.isfinite(close)) and np.all(close > 0)):
        raise DataError("synthetic prices overflowed or reached zero: drift/vol parameters are extreme")
    return SyntheticBatch(
        config=config, seed=int(seed), family=family, regime=regime, log_return=log_return, sigma=sigma,
        jump_count=jump_count, open=open_, high=high, low=low, close=close, volume=volume, timestamps_ns=timestamps,
    )


# -- summary statistics --------------------------------------------------------------------------------------------


def max_drawdown(close: np.ndarray) -> np.ndarray:
    """Per-row maximum drawdown ``max_t (1 - C_t / max_{u<=t} C_u)`` of (S, T) closes, as a positive fraction."""
    peak = np.maximum.accumulate(close, axis=1)
    return np.max(1.0 - close / peak, axis=1)


def excess_kurtosis(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sample excess kurtosis ``m4 / m2^2 - 3`` (biased moment estimator, as scipy.stats.kurtosis default)."""
    d = x - x.mean(axis=axis, keepdims=True)
    m2 = np.mean(d**2, axis=axis)
    m4 = np.mean(d**4, axis=axis)
    return m4 / np.maximum(m2**2, 1e-300) - 3.0


def scenario_stats(batch: SyntheticBatch) -> dict[str, np.ndarray]:
    """Per-scenario total return, max drawdown, annualized vol, excess kurtosis and jump count (arrays (S,))."""
    ppy = batch.config.tf.periods_per_year
    return {
        "total_return": batch.close[:, -1] / batch.config.start_price - 1.0,
        "max_drawdown": max_drawdown(np.concatenate([np.full((batch.n_scenarios, 1), batch.config.start_price),
                                                     batch.close], axis=1)),
        "annual_vol": batch.log_return.std(axis=1, ddof=1) * np.sqrt(ppy),
        "excess_kurtosis": excess_kurtosis(batch.log_return, axis=1),
        "jumps": batch.jump_count.sum(axis=1).astype(np.float64),
    }


def stress_summary(batch: SyntheticBatch) -> list[dict[str, float | int | str]]:
    """One row per family present: count, mean/min total return, mean/worst max drawdown, mean annualized vol,
    mean excess kurtosis, mean jumps per scenario, and the share of bars in each regime."""
    stats = scenario_stats(batch)
    rows: list[dict[str, float | int | str]] = []
    for name in FAMILY_NAMES:
        idx = batch.indices_of(name)
        if len(idx) == 0:
            continue
        reg = batch.regime[idx]
        row: dict[str, float | int | str] = {
            "family": name,
            "count": len(idx),
            "total_return_mean": float(stats["total_return"][idx].mean()),
            "total_return_min": float(stats["total_return"][idx].min()),
            "max_drawdown_mean": float(stats["max_drawdown"][idx].mean()),
            "max_drawdown_worst": float(stats["max_drawdown"][idx].max()),
            "annual_vol_mean": float(stats["annual_vol"][idx].mean()),
            "excess_kurtosis_mean": float(stats["excess_kurtosis"][idx].mean()),
            "jumps_mean": float(stats["jumps"][idx].mean()),
        }
        for k, regime_name in enumerate(REGIME_NAMES):
            row[f"share_{regime_name}"] = float(np.mean(reg == k))
        rows.append(row)
    return rows


def format_summary(rows: list[dict[str, float | int | str]]) -> str:
    """The stress-scenario table as aligned text."""
    header = (f"{'family':<12}{'n':>5}{'ret mean':>10}{'ret min':>10}{'MDD mean':>10}{'MDD worst':>10}"
              f"{'vol ann':>9}{'ex.kurt':>9}{'jumps':>8}  regimes bull/bear/range/crash")
    lines = [header, "-" * len(header)]
    for r in rows:
        shares = "/".join(f"{float(r[f'share_{n}']) * 100:.0f}" for n in REGIME_NAMES)
        lines.append(
            f"{r['family']!s:<12}{int(r['count']):>5}{float(r['total_return_mean']) * 100:>9.1f}%"
            f"{float(r['total_return_min']) * 100:>9.1f}%{float(r['max_drawdown_mean']) * 100:>9.1f}%"
            f"{float(r['max_drawdown_worst']) * 100:>9.1f}%{float(r['annual_vol_mean']) * 100:>8.0f}%"
            f"{float(r['excess_kurtosis_mean']):>9.1f}{float(r['jumps_mean']):>8.1f}  {shares} %"
        )
    return "\n".join(lines)


# -- persistence ----------------------------------------------------------------------------------------------------

BATCH_FILE = "scenarios.parquet"
MANIFEST_FILE = "synth.json"


def batch_to_table(batch: SyntheticBatch) -> Any:
    """Long-format pyarrow Table: one row per (scenario, bar), with family and regime names as dictionary columns."""
    import pyarrow as pa

    s, t_len = batch.n_scenarios, batch.n_bars
    scen = np.repeat(np.arange(s, dtype=np.int32), t_len)
    fam_codes = np.repeat(batch.family.astype(np.int32), t_len)
    ts = np.tile(batch.timestamps_ns, s)
    columns = {
        "scenario": pa.array(scen),
        "family": pa.DictionaryArray.from_arrays(pa.array(fam_codes), pa.array(list(FAMILY_NAMES))),
        "timestamp": pa.array(ts.astype("datetime64[ns]"), type=pa.timestamp("ns", tz="UTC")),
        "open": pa.array(batch.open.ravel()),
        "high": pa.array(batch.high.ravel()),
        "low": pa.array(batch.low.ravel()),
        "close": pa.array(batch.close.ravel()),
        "volume": pa.array(batch.volume.ravel()),
        "regime": pa.DictionaryArray.from_arrays(pa.array(batch.regime.ravel().astype(np.int32)),
                                                 pa.array(list(REGIME_NAMES))),
        "jump_count": pa.array(batch.jump_count.ravel()),
        "sigma": pa.array(batch.sigma.ravel().astype(np.float32)),
    }
    return pa.table(columns)


def save_batch(batch: SyntheticBatch, directory: str | Path, summary: list[dict[str, Any]] | None = None) -> list[str]:
    """Write ``scenarios.parquet`` and ``synth.json`` (config, seed, family counts, summary) atomically.

    Output is byte-identical for the same ``(config, seed)`` and library versions (no wall-clock metadata).
    """
    import io

    import pyarrow.parquet as pq

    from himari.utils.io import atomic_write_bytes, atomic_write_json

    out = Path(directory)
    buffer = io.BytesIO()
    pq.write_table(batch_to_table(batch), buffer, compression="zstd", row_group_size=256_000)
    p1 = atomic_write_bytes(out / BATCH_FILE, buffer.getvalue())
    manifest = {
        "format": "himari.synth/1",
        "seed": batch.seed,
        "config": batch.config.to_dict(),
        "n_scenarios": batch.n_scenarios,
        "n_bars": batch.n_bars,
        "families": {name: len(batch.indices_of(name)) for name in FAMILY_NAMES},
        "summary": summary if summary is not None else stress_summary(batch),
        "columns": "scenario, family, timestamp (UTC open time), open, high, low, close, volume, regime, "
                   "jump_count, sigma (diffusion sd per bar, float32); log_return = ln(close / open)",
    }
    p2 = atomic_write_json(out / MANIFEST_FILE, manifest)
    return [str(p1), str(p2)]


def load_batch(directory: str | Path) -> SyntheticBatch:
    """Read a batch written by :func:`save_batch` back into arrays (no pickle)."""
    import pyarrow.parquet as pq

    from himari.utils.io import read_json

    root = Path(directory)
    if not (root / BATCH_FILE).exists() or not (root / MANIFEST_FILE).exists():
        raise DataError(f"not a synthetic batch directory (needs {BATCH_FILE} and {MANIFEST_FILE})", str(root))
    manifest = read_json(root / MANIFEST_FILE)
    config = SynthConfig.parse(manifest["config"])
    table = pq.read_table(root / BATCH_FILE)
    s, t_len = int(manifest["n_scenarios"]), int(manifest["n_bars"])
    if table.num_rows != s * t_len:
        raise DataError(f"{BATCH_FILE} has {table.num_rows} rows, expected {s}x{t_len}", str(root))

    def col(name: str, dtype: Any = np.float64) -> np.ndarray:
        return table.column(name).to_numpy().astype(dtype).reshape(s, t_len)

    def codes(name: str, names: tuple[str, ...]) -> np.ndarray:
        chunked = table.column(name).combine_chunks()
        lookup = np.array([names.index(str(v)) for v in chunked.dictionary.to_pylist()], dtype=np.int8)
        return lookup[chunked.indices.to_numpy()].reshape(s, t_len)

    ts = table.column("timestamp").combine_chunks().cast("int64").to_numpy()[:t_len]
    return SyntheticBatch(
        config=config, seed=int(manifest["seed"]), family=codes("family", FAMILY_NAMES)[:, 0].astype(np.int8),
        regime=codes("regime", REGIME_NAMES).astype(np.int8), log_return=np.log(col("close") / col("open")),
        sigma=col("sigma"),
        jump_count=col("jump_count", np.int32), open=col("open"), high=col("high"), low=col("low"),
        close=col("close"), volume=col("volume"), timestamps_ns=ts.astype(np.int64),
    )
