"""Kalman filters on log price: local level and local linear trend (filter only, never a smoother).

Local level (Harvey 1989, ch. 3; Durbin & Koopman 2012, ch. 2)::

    y_t = mu_t + eps_t,        eps_t ~ N(0, R)
    mu_t = mu_{t-1} + eta_t,   eta_t ~ N(0, Q)

Local linear trend adds a slope: ``mu_t = mu_{t-1} + beta_{t-1} + eta_t``, ``beta_t = beta_{t-1} + zeta_t``
(``zeta ~ N(0, Q_slope)``). Each contiguous segment starts from a diffuse-like prior (``mu_0 = y_0`` with variance R,
``beta_0 = 0`` with variance 1e4 (R + Q + Q_slope), its first innovation left out of the likelihood): a gap restarts the filter, it is never bridged.

Noise variances are estimated by maximum likelihood on the training window: the Gaussian innovation log-likelihood
``l = -1/2 sum_t (log 2 pi F_t + v_t^2 / F_t)`` is maximized with ``R`` concentrated out (``R_hat = mean(v_t^2 /
f_t)`` with ``f_t`` the innovation variance for ``R = 1``), so the numeric search is over the signal-to-noise
ratios only (``scipy.optimize``). Steady-state gain of the local level model with ``q = Q/R``:
``K = (-q + sqrt(q^2 + 4q)) / 2`` (tested).

Diagnostics (:func:`filter_diagnostics`): lag in bars against a known signal (centroid of the fitted impulse response), noise
reduction (variance of ``y - signal`` over variance of ``filtered - signal``) and innovation whiteness (Ljung-Box).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import optimize, stats

from himari.errors import DataError

_PRIOR_SCALE = 1e4


class KalmanParams(NamedTuple):
    """Noise variances (log-price units squared per bar). ``q_slope = 0`` gives the local level model."""

    q_level: float
    r_obs: float
    q_slope: float = 0.0


class KalmanOutput(NamedTuple):
    level: np.ndarray  # (T,) filtered mu_t|t
    slope: np.ndarray  # (T,) filtered beta_t|t (0 for the local level model)
    innovation: np.ndarray  # (T,) v_t = y_t - E[y_t | y_<t]; NaN on each segment's first bar
    innovation_var: np.ndarray  # (T,) F_t
    gain: np.ndarray  # (T,) level gain K_t


def _segment_starts(n: int, gap_before: np.ndarray | None) -> np.ndarray:
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
    if gap_before is not None and n:
        starts |= np.asarray(gap_before, dtype=bool)
    return starts


def kalman_filter(y: np.ndarray, params: KalmanParams, gap_before: np.ndarray | None = None, trend: bool = False) -> KalmanOutput:
    """Run the local level (``trend=False``) or local linear trend filter over ``y`` (one value per bar)."""
    n = len(y)
    level = np.empty(n)
    slope = np.zeros(n)
    innov = np.full(n, np.nan)
    ivar = np.full(n, np.nan)
    gain = np.empty(n)
    starts = _segment_starts(n, gap_before).tolist()
    ys = np.asarray(y, dtype=np.float64).tolist()
    q, r, qs = float(params.q_level), float(params.r_obs), float(params.q_slope) if trend else 0.0
    m = b = 0.0
    p11 = p12 = p22 = 0.0
    age = 0
    for t in range(n):
        yt = ys[t]
        age = 0 if starts[t] else age + 1
        if starts[t]:
            # first bar of a segment: the level is observed with noise R, slope unknown
            m, b = yt, 0.0
            p11, p12, p22 = r, 0.0, (_PRIOR_SCALE * (r + q + qs) if trend else 0.0)
            level[t] = m
            slope[t] = b
            gain[t] = 1.0
            continue
        # predict: x = F x, P = F P F' + Q  with F = [[1, 1], [0, 1]] (trend) or [[1]]
        if trend:
            m = m + b
            p11, p12, p22 = p11 + 2.0 * p12 + p22 + q, p12 + p22, p22 + qs
        else:
            p11 = p11 + q
        v = yt - m
        f = p11 + r
        k1 = p11 / f
        k2 = p12 / f
        m += k1 * v
        b += k2 * v
        p11, p12, p22 = p11 - k1 * p11, p12 - k1 * p12, p22 - k2 * p12
        level[t] = m
        slope[t] = b
        if not (trend and age == 1):  # the slope is diffuse until the second bar: no proper innovation yet
            innov[t] = v
            ivar[t] = f
        gain[t] = k1
    return KalmanOutput(level, slope, innov, ivar, gain)


class KalmanState(NamedTuple):
    """Filter state after a bar (for bar-by-bar updates): mean ``(m, b)``, covariance ``(p11, p12, p22)`` and the
    bars since the segment start (``age``)."""

    m: float
    b: float
    p11: float
    p12: float
    p22: float
    age: int


def kalman_step(
    state: KalmanState | None, yt: float, params: KalmanParams, start: bool, trend: bool = False
) -> KalmanState:
    """One bar of :func:`kalman_filter` (the same arithmetic in the same order, so a bar-by-bar run equals the
    batch filter bit for bit; tested). ``start`` (or ``state=None``) restarts the segment at ``yt``."""
    q, r, qs = float(params.q_level), float(params.r_obs), float(params.q_slope) if trend else 0.0
    if start or state is None:
        return KalmanState(yt, 0.0, r, 0.0, (_PRIOR_SCALE * (r + q + qs) if trend else 0.0), 0)
    m, b, p11, p12, p22, age = state
    if trend:
        m = m + b
        p11, p12, p22 = p11 + 2.0 * p12 + p22 + q, p12 + p22, p22 + qs
    else:
        p11 = p11 + q
    v = yt - m
    f = p11 + r
    k1 = p11 / f
    k2 = p12 / f
    m += k1 * v
    b += k2 * v
    p11, p12, p22 = p11 - k1 * p11, p12 - k1 * p12, p22 - k2 * p12
    return KalmanState(m, b, p11, p12, p22, age + 1)




def steady_state_gain(q_over_r: float) -> float:
    """Steady-state level gain of the local level model: ``K = (-q + sqrt(q^2 + 4q)) / 2``, ``q = Q/R``."""
    q = float(q_over_r)
    return (-q + math.sqrt(q * q + 4.0 * q)) / 2.0


def _concentrated_terms(ys: list[float], starts: list[bool], q: float, qs: float, trend: bool) -> tuple[float, float, int]:
    """``(sum v^2/f, sum log f, n)`` of the filter with ``R = 1`` (same recursion as :func:`kalman_filter`, no
    arrays; for the optimizer)."""
    m = b = 0.0
    p11 = p12 = p22 = 0.0
    age = 0
    s_vf = s_lf = 0.0
    n = 0
    log = math.log
    prior = _PRIOR_SCALE * (1.0 + q + qs) if trend else 0.0
    for yt, st in zip(ys, starts, strict=True):
        if st:
            age = 0
            m, b = yt, 0.0
            p11, p12, p22 = 1.0, 0.0, prior
            continue
        age += 1
        if trend:
            m = m + b
            p11, p12, p22 = p11 + 2.0 * p12 + p22 + q, p12 + p22, p22 + qs
        else:
            p11 = p11 + q
        v = yt - m
        f = p11 + 1.0
        k1 = p11 / f
        k2 = p12 / f
        m += k1 * v
        b += k2 * v
        p11, p12, p22 = p11 - k1 * p11, p12 - k1 * p12, p22 - k2 * p12
        if not (trend and age == 1):
            s_vf += v * v / f
            s_lf += log(f)
            n += 1
    return s_vf, s_lf, n


# Floor of the slope noise relative to the level noise in the local linear trend model. On crypto log prices the
# MLE slope variance is ~0 (a random walk has no persistent drift), which makes the slope an infinite-memory average
# whose value depends on where the filter started. With q_slope >= 1e-3 q_level the filter forgets its start within
# ~1000 bars (measured on BTC: difference < 1e-12 after 1000 bars), so features computed from a trailing history
# (paper trading, the API) equal those computed from the full series (backtests).
SLOPE_FLOOR_REL = 1e-3


def fit_kalman_mle(
    y: np.ndarray,
    gap_before: np.ndarray | None = None,
    trend: bool = False,
    max_bars: int = 15_000,
    slope_floor_rel: float = SLOPE_FLOOR_REL,
) -> KalmanParams:
    """Maximum-likelihood noise variances on ``y`` (the training window; its last ``max_bars`` bars, since the
    recursion is sequential), R concentrated out. For the trend model the slope variance is then floored at
    ``slope_floor_rel * q_level`` (bounded memory, see :data:`SLOPE_FLOOR_REL`; 0 disables the floor).

    For ``R = 1`` and ratios ``(q, q_s)`` the filter gives innovations ``v_t`` and variances ``f_t``; the likelihood
    is maximized over R by ``R_hat = mean(v^2 / f)``, leaving ``-n/2 (log R_hat + 1) - 1/2 sum log f_t``.
    """
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 10 or not np.isfinite(y).all():
        raise DataError(f"Kalman MLE needs >= 10 finite observations, got {len(y)} (finite: {int(np.isfinite(y).sum())})")
    starts = _segment_starts(len(y), gap_before)
    if len(y) > max_bars:
        y, starts = y[-max_bars:], starts[-max_bars:].copy()
        starts[0] = True
    ys, st = y.tolist(), starts.tolist()

    def neg_concentrated(theta: np.ndarray) -> float:
        q = math.exp(theta[0])
        qs = math.exp(theta[1]) if trend else 0.0
        s_vf, s_lf, n = _concentrated_terms(ys, st, q, qs, trend)
        if n == 0:
            return 1e300
        r_hat = s_vf / n
        if not np.isfinite(r_hat) or r_hat <= 0:
            return 1e300
        return 0.5 * (n * (math.log(r_hat) + 1.0) + s_lf)

    # a coarse grid for a good start (the likelihood can be flat), then a bounded quasi-Newton refinement
    grid = np.linspace(-9.0, 9.0, 7)
    if trend:
        cands = [np.array([a, c]) for a in grid for c in (-14.0, -10.0, -6.0)]
    else:
        cands = [np.array([a, 0.0]) for a in grid]
    best = min(cands, key=neg_concentrated)
    bounds = [(-20.0, 20.0), (-30.0, 5.0) if trend else (0.0, 0.0)]
    res = optimize.minimize(neg_concentrated, best, method="L-BFGS-B", bounds=bounds)
    theta = res.x
    q = math.exp(theta[0])
    qs = math.exp(theta[1]) if trend else 0.0
    s_vf, _, n = _concentrated_terms(ys, st, q, qs, trend)
    r_hat = s_vf / n
    q_level, q_slope = q * r_hat, qs * r_hat
    if trend:
        q_slope = max(q_slope, slope_floor_rel * q_level)
    return KalmanParams(q_level=q_level, r_obs=r_hat, q_slope=q_slope)


class FilterDiagnostics(NamedTuple):
    lag_bars: float  # centroid of the filter's impulse response w.r.t. the true signal (0 = no lag)
    noise_reduction: float  # var(y - signal) / var(filtered - signal); > 1 means the filter removed noise
    ljung_box_stat: float
    ljung_box_pvalue: float  # innovation whiteness: large p-value = no evidence of autocorrelation
    innovation_acf1: float


def ljung_box(x: np.ndarray, lags: int = 10) -> tuple[float, float]:
    """Ljung-Box ``Q = n(n+2) sum_k rho_k^2/(n-k)`` on finite values, chi-square with ``lags`` dof."""
    x = x[np.isfinite(x)]
    n = len(x)
    if n <= lags + 1:
        return float("nan"), float("nan")
    d = x - x.mean()
    den = float(d @ d)
    if den == 0:
        return 0.0, 1.0
    q = 0.0
    for k in range(1, lags + 1):
        rho = float(d[k:] @ d[:-k]) / den
        q += rho * rho / (n - k)
    q *= n * (n + 2)
    return float(q), float(stats.chi2.sf(q, lags))


def estimate_lag(filtered: np.ndarray, signal: np.ndarray, max_lag: int = 50) -> float:
    """Mean lag (bars) of ``filtered`` behind a known ``signal``: the centroid ``sum_j j w_j / sum_j w_j`` of the
    impulse response ``w`` fitted by least squares on first differences, ``df_t = sum_{j<=max_lag} w_j ds_{t-j}``.
    For an exponential smoother with gain K the answer is ``(1 - K)/K``."""
    a = np.diff(filtered)
    b = np.diff(signal)
    n = len(a)
    if n <= 2 * max_lag + 10:
        max_lag = max(1, n // 4)
    cols = [b[max_lag - j : n - j] for j in range(max_lag + 1)]
    design = np.column_stack(cols)
    target = a[max_lag:]
    ok = np.isfinite(design).all(axis=1) & np.isfinite(target)
    if ok.sum() < max_lag + 10:
        return float("nan")
    w = np.linalg.lstsq(design[ok], target[ok], rcond=None)[0]
    total = float(w.sum())
    if abs(total) < 1e-12:
        return float("nan")
    return float(np.arange(max_lag + 1) @ w / total)


def step_response_lag(params: KalmanParams, trend: bool = False, settle: int = 2000, horizon: int = 2000) -> float:
    """Lag (bars) of the filter behind a unit step in a noise-free signal, after the gain has settled:
    ``sum_t (1 - mu_t)`` over the bars after the step. For the local level model this is exactly ``(1 - K)/K``;
    the local linear trend can overshoot (smaller or negative area)."""
    y = np.concatenate([np.zeros(settle), np.ones(horizon)])
    out = kalman_filter(y, params, None, trend)
    return float(np.sum(1.0 - out.level[settle:]))


def filter_diagnostics(y: np.ndarray, filtered: np.ndarray, innovation: np.ndarray, signal: np.ndarray | None) -> FilterDiagnostics:
    """Lag and noise reduction against a known ``signal`` (synthetic data; NaN without it) and whiteness."""
    lb, p = ljung_box(innovation)
    v = innovation[np.isfinite(innovation)]
    acf1 = float(np.corrcoef(v[1:], v[:-1])[0, 1]) if len(v) > 3 else float("nan")
    if signal is None:
        return FilterDiagnostics(float("nan"), float("nan"), lb, p, acf1)
    ok = np.isfinite(filtered) & np.isfinite(signal) & np.isfinite(y)
    nr = float(np.var(y[ok] - signal[ok]) / max(np.var(filtered[ok] - signal[ok]), 1e-300))
    return FilterDiagnostics(estimate_lag(filtered, signal), nr, lb, p, acf1)
