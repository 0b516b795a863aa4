"""Calibrating the synthetic market to a real asset: GARCH(1,1) + Merton jumps fitted on real log returns.

Method (a two-pass filtered jump estimator; see Andersen, Bollerslev & Diebold 2007 for threshold jump detection and
Press 1967 / Honore 1998 for the compound-Poisson normal mixture):

1. Fit GARCH(1,1) with a constant mean and normal innovations by maximum likelihood (``arch`` package) on the
   log returns (in percent, for the optimizer's numerics). ``sigma_t`` is its conditional sd.
2. Jumps: each bar is a Bernoulli(``lam``) mixture ``r_t - mu ~ (1 - lam) N(0, sigma_t^2) + lam N(mu_J, sigma_t^2 +
   sd_J^2)`` (the one-jump-per-bar approximation of the Poisson, exact to O(lam^2)). Start from threshold detection
   (``|r_t - mu| > threshold * sigma_t``) and run EM: E-step posterior jump probabilities ``w_t``; M-step
   ``lam = mean(w)``, ``mu_J`` the weighted mean with weights ``w_t / (sigma_t^2 + sd_J^2)``, ``sd_J`` by a 1-D
   maximization of the weighted jump-component likelihood.
3. Refit GARCH on returns with the likely jumps (``w_t > 0.5``) replaced by the mean, so the diffusion's persistence is
   not inflated by jumps, and repeat step 2 with the new ``sigma_t``. ``alpha``, ``beta`` come from the MLE; the
   unconditional diffusion level (``annual_vol``) is variance-targeted: the sample sd of the jump-cleaned returns.

The arithmetic drift is reported as ``mu = E[r] + E[sigma^2]/2 + lam (k - mu_J)`` per bar (``k = e^{mu_J+sd_J^2/2}-1``,
see ``himari.data.synth``), annualized. Calibration sets the base GARCH and jump parameters (multiplier 1.0 regime
level), the start price (last close) and the volume scale (median volume); the families' regime structure is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from himari.data.bars import Bars
from himari.data.synth import GarchParams, JumpParams, SynthConfig
from himari.data.timeframe import Timeframe
from himari.errors import DataError

_MIN_RETURNS = 500
_MAX_PERSISTENCE = 0.999


@dataclass(frozen=True)
class Calibration:
    """Fitted parameters and their provenance."""

    source: str
    timeframe: str
    n_returns: int
    garch: GarchParams
    jumps: JumpParams
    drift_annual: float
    n_jumps_detected: int
    garch_log_likelihood: float
    start_price: float | None = None
    median_volume: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "timeframe": self.timeframe, "n_returns": self.n_returns,
            "garch": self.garch.to_dict(), "jumps": self.jumps.to_dict(), "drift_annual": self.drift_annual,
            "n_jumps_detected": self.n_jumps_detected, "garch_log_likelihood": self.garch_log_likelihood,
            "start_price": self.start_price, "median_volume": self.median_volume,
        }

    def apply(self, config: SynthConfig) -> SynthConfig:
        """``config`` with the fitted base GARCH/jumps, the asset's timeframe, start price and volume scale."""
        changes: dict[str, Any] = {
            "garch": self.garch.to_dict(), "jumps": self.jumps.to_dict(), "timeframe": self.timeframe,
            "calibration": self.as_dict(),
        }
        if self.start_price is not None:
            changes["start_price"] = self.start_price
        if self.median_volume is not None and self.median_volume > 0:
            changes["volume"] = {**config.volume.to_dict(), "base": self.median_volume}
        return config.replace(**changes)


def fit_garch(returns_pct: np.ndarray) -> tuple[float, float, float, float, np.ndarray, float]:
    """GARCH(1,1)-normal MLE with constant mean on percent returns: ``(mu, omega, alpha, beta, sigma_t, loglik)``."""
    from arch import arch_model

    model = arch_model(returns_pct, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    result = model.fit(disp="off", show_warning=False)
    params = result.params
    return (
        float(params["mu"]), float(params["omega"]), float(params["alpha[1]"]), float(params["beta[1]"]),
        np.asarray(result.conditional_volatility, dtype=np.float64), float(result.loglikelihood),
    )


def _normal_logpdf(x: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2.0 * np.pi * var) + x**2 / var)


def fit_jump_mixture(
    excess: np.ndarray, sigma: np.ndarray, threshold: float = 4.0, iterations: int = 200, tol: float = 1e-9
) -> tuple[float, float, float, np.ndarray]:
    """EM for the Bernoulli-normal jump mixture (module docstring, step 2). Returns ``(lam, mu_J, sd_J, w)``."""
    var_d = sigma**2
    flagged = np.abs(excess) > threshold * sigma
    if flagged.sum() < 3:
        return 0.0, 0.0, 0.0, np.zeros_like(excess)
    lam = float(flagged.mean())
    mu_j = float(excess[flagged].mean())
    sd_j = float(max(np.sqrt(max(np.var(excess[flagged]) - var_d[flagged].mean(), 0.0)), np.median(sigma)))
    w = flagged.astype(np.float64)
    previous = -np.inf
    for _ in range(iterations):
        log_a = np.log1p(-lam) + _normal_logpdf(excess, var_d)
        log_b = np.log(lam) + _normal_logpdf(excess - mu_j, var_d + sd_j**2)
        top = np.maximum(log_a, log_b)
        log_total = top + np.log(np.exp(log_a - top) + np.exp(log_b - top))
        w = np.exp(log_b - log_total)
        total = float(log_total.sum())
        lam = float(np.clip(w.mean(), 1e-8, 0.5))

        def neg(log_sd: float, w: np.ndarray = w) -> float:
            v = var_d + np.exp(2.0 * log_sd)
            m = float(np.sum(w * excess / v) / np.sum(w / v))
            return -float(np.sum(w * _normal_logpdf(excess - m, v)))

        res = optimize.minimize_scalar(neg, bounds=(np.log(1e-6), np.log(5.0)), method="bounded")
        sd_j = float(np.exp(res.x))
        v = var_d + sd_j**2
        mu_j = float(np.sum(w * excess / v) / np.sum(w / v))
        if abs(total - previous) < tol * max(1.0, abs(total)):
            break
        previous = total
    return lam, mu_j, sd_j, w


def calibrate_returns(
    log_returns: np.ndarray, timeframe: str | Timeframe, source: str = "", threshold: float = 4.0
) -> Calibration:
    """Fit GARCH(1,1) and jump parameters to per-bar log returns (NaN entries, e.g. across gaps, are dropped)."""
    tf = Timeframe.parse(timeframe)
    r = np.asarray(log_returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < _MIN_RETURNS:
        raise DataError(f"calibration needs at least {_MIN_RETURNS} returns, got {len(r)}", source or None)
    if np.std(r) == 0:
        raise DataError("calibration: returns are constant", source or None)
    ppy = tf.periods_per_year
    r_pct = 100.0 * r
    mu, _omega, alpha, beta, sig, loglik = fit_garch(r_pct)
    lam = mu_j = sd_j = 0.0
    w = np.zeros_like(r)
    for _ in range(2):
        lam, mu_j, sd_j, w = fit_jump_mixture(r_pct - mu, sig, threshold)
        cleaned = np.where(w > 0.5, mu, r_pct)
        mu, _omega, alpha, beta, sig, loglik = fit_garch(cleaned)
    lam, mu_j, sd_j, w = fit_jump_mixture(r_pct - mu, sig, threshold)
    persistence = alpha + beta
    if persistence >= _MAX_PERSISTENCE:
        scale = _MAX_PERSISTENCE / persistence
        alpha, beta = alpha * scale, beta * scale
    # Variance targeting (Engle & Mezrich 1996): the unconditional level is the sample variance of the returns with
    # the likely jumps removed; omega / (1 - alpha - beta) is unstable when the persistence is close to 1.
    cleaned = np.where(w > 0.5, np.mean(r), r)
    annual_vol = float(np.std(cleaned, ddof=1) * np.sqrt(ppy))
    mu_j_log, sd_j_log = mu_j / 100.0, sd_j / 100.0
    k = np.exp(mu_j_log + 0.5 * sd_j_log**2) - 1.0
    mean_var = float(np.mean((sig / 100.0) ** 2))
    drift_bar = float(np.mean(r)) + 0.5 * mean_var + lam * (k - mu_j_log)
    return Calibration(
        source=source, timeframe=str(tf), n_returns=len(r),
        garch=GarchParams(alpha=float(alpha), beta=float(beta), annual_vol=float(np.clip(annual_vol, 1e-6, 20.0))),
        jumps=JumpParams(intensity_per_year=float(lam * ppy), mean=float(np.clip(mu_j_log, -1, 1)),
                         std=float(np.clip(sd_j_log, 0, 1))),
        drift_annual=float(drift_bar * ppy), n_jumps_detected=int(np.sum(w > 0.5)), garch_log_likelihood=loglik,
    )


def calibrate_from_bars(bars: Bars, threshold: float = 4.0) -> Calibration:
    """:func:`calibrate_returns` on ``bars.log_returns()`` (returns across gaps excluded), plus price/volume scale."""
    cal = calibrate_returns(bars.log_returns(), bars.timeframe, source=bars.source or bars.symbol, threshold=threshold)
    return Calibration(**{**cal.__dict__, "start_price": float(bars.close[-1]),
                          "median_volume": float(np.median(bars.volume))})
