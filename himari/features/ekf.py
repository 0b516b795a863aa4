"""Extended Kalman filter on log price with a stochastic log-variance state (filter only).

State ``(mu_t, h_t)``: the log-price level and the log of its per-bar innovation variance::

    y_t  = mu_t + eps_t,                   eps_t ~ N(0, R)
    mu_t = mu_{t-1} + exp(h_t / 2) eta_t,  eta_t ~ N(0, 1)
    h_t  = h_bar + phi (h_{t-1} - h_bar) + zeta_t,   zeta_t ~ N(0, q_h)

Per bar: predict ``h^- = h_bar + phi (h - h_bar)``, ``P_h^- = phi^2 P_h + q_h``, ``P_mu^- = P_mu + exp(h^-)``; the
price innovation ``v = y - mu`` has variance ``S = P_mu^- + R``; the level update is the linear Kalman step. The
volatility state is updated by an EKF step on the pseudo-observation ``z = log(v^2 + 1e-12)``, whose mean is
``log S(h) + E[log chi^2_1]`` (``E = -1.2704``, variance ``pi^2/2``; Harvey, Ruiz & Shephard 1994), linearized at
``h^-`` with Jacobian ``H = exp(h^-) / S``. Adaptation is bounded: ``h`` is clipped to ``[h_lo, h_hi]`` fitted on the
training window (the log of the 0.1% and 99.9% quantiles of squared returns, widened by log 4), so the noise level
cannot run away (the original system's adaptive R grew until its output equalled its input).

Parameters ``(R, phi, h_bar, q_h)`` are fitted by maximizing the Gaussian price-innovation log-likelihood
``-1/2 sum (log 2 pi S_t + v_t^2 / S_t)`` on the training window (``scipy.optimize``, bounded). Every contiguous
segment restarts the filter at ``mu = y_0`` and ``h = h_bar``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import optimize

from himari.errors import DataError

LOG_CHI2_MEAN = -1.2703628454614782  # E[log chi^2_1] = psi(1/2) + log 2
LOG_CHI2_VAR = math.pi**2 / 2.0


class EKFParams(NamedTuple):
    r_obs: float  # observation noise variance of log price
    phi: float  # persistence of h
    h_bar: float  # long-run log variance per bar
    q_h: float  # variance of the h innovation
    h_lo: float  # bounds of h (bounded adaptation)
    h_hi: float


class EKFOutput(NamedTuple):
    level: np.ndarray  # (T,) filtered log-price level
    log_var: np.ndarray  # (T,) filtered h_t (log per-bar variance)
    innovation: np.ndarray  # (T,) NaN at segment starts
    innovation_var: np.ndarray  # (T,)


def ekf_filter(y: np.ndarray, params: EKFParams, gap_before: np.ndarray | None = None) -> EKFOutput:
    """Run the EKF over ``y`` (log price per bar); a gap restarts it."""
    n = len(y)
    level = np.empty(n)
    logv = np.empty(n)
    innov = np.full(n, np.nan)
    ivar = np.full(n, np.nan)
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
    if gap_before is not None:
        starts |= np.asarray(gap_before, dtype=bool)
    ys = np.asarray(y, dtype=np.float64).tolist()
    st = starts.tolist()
    r, phi, hbar, qh, lo, hi = (float(v) for v in params)
    p_h0 = qh / max(1.0 - phi * phi, 1e-6)
    m = h = pm = ph = 0.0
    exp = math.exp
    log = math.log
    for t in range(n):
        yt = ys[t]
        if st[t]:
            m, h, pm, ph = yt, hbar, r, p_h0
            level[t] = m
            logv[t] = h
            continue
        h_pred = hbar + phi * (h - hbar)
        ph_pred = phi * phi * ph + qh
        ev = exp(h_pred)
        pm_pred = pm + ev
        v = yt - m
        s = pm_pred + r
        k = pm_pred / s
        m += k * v
        pm = (1.0 - k) * pm_pred
        jac = ev / s
        z = log(v * v + 1e-12)
        kh = ph_pred * jac / (jac * jac * ph_pred + LOG_CHI2_VAR)
        h = h_pred + kh * (z - log(s) - LOG_CHI2_MEAN)
        ph = (1.0 - kh * jac) * ph_pred
        h = lo if h < lo else (hi if h > hi else h)
        level[t] = m
        logv[t] = h
        innov[t] = v
        ivar[t] = s
    return EKFOutput(level, logv, innov, ivar)


class EKFState(NamedTuple):
    """Filter state after a bar (for bar-by-bar updates): level ``m``, log variance ``h`` and their variances."""

    m: float
    h: float
    pm: float
    ph: float


def ekf_step(state: EKFState | None, yt: float, params: EKFParams, start: bool) -> EKFState:
    """One bar of :func:`ekf_filter` (the same arithmetic in the same order: bit-equal to the batch filter;
    tested). ``start`` (or ``state=None``) restarts the segment at ``yt``."""
    r, phi, hbar, qh, lo, hi = (float(v) for v in params)
    if start or state is None:
        return EKFState(yt, hbar, r, qh / max(1.0 - phi * phi, 1e-6))
    m, h, pm, ph = state
    h_pred = hbar + phi * (h - hbar)
    ph_pred = phi * phi * ph + qh
    ev = math.exp(h_pred)
    pm_pred = pm + ev
    v = yt - m
    s = pm_pred + r
    k = pm_pred / s
    m += k * v
    pm = (1.0 - k) * pm_pred
    jac = ev / s
    z = math.log(v * v + 1e-12)
    kh = ph_pred * jac / (jac * jac * ph_pred + LOG_CHI2_VAR)
    h = h_pred + kh * (z - math.log(s) - LOG_CHI2_MEAN)
    ph = (1.0 - kh * jac) * ph_pred
    h = lo if h < lo else (hi if h > hi else h)
    return EKFState(m, h, pm, ph)


def ekf_loglik(out: EKFOutput) -> float:
    ok = np.isfinite(out.innovation)
    v, s = out.innovation[ok], out.innovation_var[ok]
    return float(-0.5 * np.sum(np.log(2.0 * np.pi * s) + v * v / s))


def _ekf_loglik_fast(ys: list[float], starts: list[bool], params: EKFParams) -> float:
    """Same recursion as :func:`ekf_filter`, returning only the log-likelihood (no arrays; for the optimizer)."""
    r, phi, hbar, qh, lo, hi = (float(v) for v in params)
    p_h0 = qh / max(1.0 - phi * phi, 1e-6)
    m = h = pm = ph = 0.0
    exp = math.exp
    log = math.log
    total = 0.0
    count = 0
    for yt, st in zip(ys, starts, strict=True):
        if st:
            m, h, pm, ph = yt, hbar, r, p_h0
            continue
        h_pred = hbar + phi * (h - hbar)
        ph_pred = phi * phi * ph + qh
        ev = exp(h_pred)
        pm_pred = pm + ev
        v = yt - m
        s = pm_pred + r
        k = pm_pred / s
        m += k * v
        pm = (1.0 - k) * pm_pred
        jac = ev / s
        ls = log(s)
        kh = ph_pred * jac / (jac * jac * ph_pred + LOG_CHI2_VAR)
        h = h_pred + kh * (log(v * v + 1e-12) - ls - LOG_CHI2_MEAN)
        ph = (1.0 - kh * jac) * ph_pred
        h = lo if h < lo else (hi if h > hi else h)
        total += ls + v * v / s
        count += 1
    return -0.5 * (total + count * math.log(2.0 * math.pi))


def fit_ekf_mle(y: np.ndarray, gap_before: np.ndarray | None = None, max_bars: int = 15_000, max_evals: int = 100) -> EKFParams:
    """MLE of ``(R, phi, h_bar, q_h)``; bounds of ``h`` from the training squared returns.

    The likelihood is evaluated on the last ``max_bars`` bars of the training window (the recursion is sequential, so
    this caps the fit cost; 15,000 1h bars = 1.7 years) and maximized by bounded Nelder-Mead (at most ``max_evals``
    likelihood evaluations) from moment-based starting values.
    """
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 50 or not np.isfinite(y).all():
        raise DataError(f"EKF MLE needs >= 50 finite observations, got {len(y)}")
    gap = np.zeros(len(y), dtype=bool) if gap_before is None else np.asarray(gap_before, dtype=bool).copy()
    if len(y) > max_bars:
        y, gap = y[-max_bars:], gap[-max_bars:]
    gap[0] = True
    r1 = np.diff(y)[~gap[1:]]
    sq = r1 * r1
    sq = sq[sq > 0]
    if len(sq) < 10:
        raise DataError("EKF MLE: training returns are (almost) all zero")
    var = float(np.mean(r1 * r1))
    h_lo = float(np.log(np.quantile(sq, 0.001)) - np.log(4.0))
    h_hi = float(np.log(np.quantile(sq, 0.999)) + np.log(4.0))
    ys = y.tolist()
    starts = gap.tolist()
    lower = np.array([math.log(var) - 15.0, -3.0, h_lo, -12.0])
    upper = np.array([math.log(var) + 3.0, 9.0, h_hi, 1.0])

    def unpack(theta: np.ndarray) -> EKFParams:
        th = np.clip(theta, lower, upper)
        return EKFParams(
            r_obs=math.exp(th[0]),
            phi=1.0 / (1.0 + math.exp(-th[1])),
            h_bar=float(th[2]),
            q_h=math.exp(th[3]),
            h_lo=h_lo,
            h_hi=h_hi,
        )

    def neg(theta: np.ndarray) -> float:
        ll = _ekf_loglik_fast(ys, starts, unpack(theta))
        return -ll if np.isfinite(ll) else 1e300

    x0 = np.array([math.log(var * 0.05), 3.5, math.log(var), math.log(0.05)])
    res = optimize.minimize(neg, x0, method="Nelder-Mead", bounds=list(zip(lower, upper, strict=True)),
                            options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-2})
    return unpack(res.x)
