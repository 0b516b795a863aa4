"""Gate 1, EVT tail risk: peaks over threshold with a generalized Pareto fit; VaR and expected shortfall.

Losses L (simple-return loss of a unit position: ``-expm1(r)`` for longs, ``expm1(r)`` for shorts) over a trailing
window of n bars. With threshold u (a high quantile of the losses), the N_u exceedances ``y = L - u > 0`` are fitted
by a GPD(ξ, β) by maximum likelihood (profile likelihood via ``scipy.optimize``, identical to ``scipy.stats.genpareto.fit``
with location 0, see :func:`gpd_mle`). The tail estimator
(McNeil & Frey 2000, "Estimation of tail-related risk measures for heteroscedastic financial time series", eq. 6-7;
McNeil, Frey & Embrechts, *Quantitative Risk Management*, 2015, §5.2.3)::

    VaR_q = u + (β / ξ) · (((n / N_u) · (1 - q))^(-ξ) - 1)          (ξ ≠ 0;  u - β log((n/N_u)(1 - q)) for ξ = 0)
    ES_q  = VaR_q / (1 - ξ) + (β - ξ u) / (1 - ξ)                      (ξ < 1)

The factor ``n / N_u`` — the inverse exceedance rate — is the one the original implementation left out. The formulas
hold for q >= 1 - N_u/n (VaR above u). The gate limits each position's ES: ``|x| · ES_q <= limit``.
Fits are cached and refit every ``evt_refit_every_bars`` bars on the trailing window (:class:`EvtTailCache`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize, stats

from himari.errors import ConfigError
from himari.risk.gate import GateResult, scalar_scale

XI_MAX_FOR_ES = 0.9  # ES is infinite for ξ >= 1; clamp the shape used for ES (and say so in the fit's method)


class TailEstimate(NamedTuple):
    var: float  # VaR_q, loss as a fraction of notional (positive = loss)
    es: float  # ES_q
    threshold: float  # u
    xi: float  # GPD shape (NaN for the empirical method)
    beta: float  # GPD scale
    n_total: int  # n
    n_exceed: int  # N_u
    method: str  # "gpd", "gpd-xi-clamped", "empirical" or "none"


def gpd_var(threshold: float, xi: float, beta: float, n_total: int, n_exceed: int, level: float) -> float:
    """McNeil-Frey POT VaR_q = u + (β/ξ)(((n/N_u)(1-q))^(-ξ) - 1), with the ξ -> 0 limit u - β log((n/N_u)(1-q))."""
    tail = (n_total / n_exceed) * (1.0 - level)
    if abs(xi) < 1e-9:
        return threshold - beta * math.log(tail)
    return threshold + (beta / xi) * (tail ** (-xi) - 1.0)


def gpd_es(var: float, threshold: float, xi: float, beta: float) -> float:
    """ES_q = VaR_q/(1-ξ) + (β - ξu)/(1-ξ), for ξ < 1."""
    if xi >= 1.0:
        return math.inf
    return var / (1.0 - xi) + (beta - xi * threshold) / (1.0 - xi)


def empirical_var_es(losses: np.ndarray, level: float) -> tuple[float, float]:
    """Historical VaR_q (the q-quantile of losses) and ES_q (mean of losses >= VaR_q)."""
    losses = np.asarray(losses, dtype=np.float64)
    var = float(np.quantile(losses, level))
    tail = losses[losses >= var]
    return var, float(tail.mean()) if tail.size else var


def gpd_mle(excess: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood GPD(ξ, β) of exceedances ``y > 0`` (location 0) by the profile likelihood (Grimshaw 1993).

    With θ = ξ/β the likelihood maximized over ξ for fixed θ gives ``ξ(θ) = mean(log(1 + θ y))`` and the profile
    ``-ℓ(θ) = n log(ξ(θ)/θ) + n (1 + ξ(θ))``; θ is found by bounded scalar minimization (``scipy.optimize``) on
    ``(-1/max(y), 50/mean(y))``. Same optimum as ``scipy.stats.genpareto.fit(y, floc=0)`` (tested), about 50× faster,
    which matters because the gate refits on a trailing window. Falls back to scipy's fit if the search fails.
    """
    y = np.asarray(excess, dtype=np.float64)
    n = y.size
    scale = float(y.mean())
    z = y / scale  # unit-mean exceedances: better conditioned, θ in units of 1/scale

    def neg_profile(theta: float) -> float:
        if abs(theta) < 1e-12:
            return float(n)  # exponential limit: β = mean(z) = 1, -ℓ = n log 1 + n
        logs = np.log1p(theta * z)
        xi = float(logs.mean())
        if xi == 0.0 or not math.isfinite(xi):
            return math.inf
        beta = xi / theta
        if beta <= 0:
            return math.inf
        return n * math.log(beta) + (1.0 + 1.0 / xi) * float(logs.sum())

    lower = -(1.0 - 1e-9) / float(z.max())
    res = optimize.minimize_scalar(
        neg_profile, bounds=(lower, 50.0), method="bounded", options={"xatol": 1e-10}
    )
    theta = float(res.x)
    if res.success and math.isfinite(res.fun) and abs(theta) >= 1e-12:
        xi = float(np.log1p(theta * z).mean())
        return xi, xi / theta * scale
    if res.success and abs(theta) < 1e-12:
        return 0.0, scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        xi, _, beta = stats.genpareto.fit(y, floc=0.0)
    return float(xi), float(beta)


def fit_pot(losses: np.ndarray, threshold_quantile: float) -> tuple[float, float, float, int]:
    """Threshold u (quantile of losses) and the GPD MLE (ξ, β) of the exceedances; returns (u, ξ, β, N_u)."""
    losses = np.asarray(losses, dtype=np.float64)
    u = float(np.quantile(losses, threshold_quantile))
    excess = losses[losses > u] - u
    xi, beta = gpd_mle(excess)
    return u, xi, beta, int(excess.size)


def tail_risk(
    losses: np.ndarray, level: float, threshold_quantile: float, min_exceedances: int, min_bars: int
) -> TailEstimate:
    """POT/GPD VaR and ES of ``losses`` (finite values only); empirical when the sample is too small or the fit fails."""
    x = np.asarray(losses, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n < 2:
        return TailEstimate(math.nan, math.nan, math.nan, math.nan, math.nan, n, 0, "none")
    expected_exceed = n * (1.0 - threshold_quantile)
    if n >= min_bars and expected_exceed >= min_exceedances and level >= threshold_quantile:
        try:
            u, xi, beta, n_u = fit_pot(x, threshold_quantile)
        except (ValueError, RuntimeError, FloatingPointError):
            n_u = 0
        if n_u >= min_exceedances and np.isfinite(xi) and beta > 0:
            var = gpd_var(u, xi, beta, n, n_u, level)
            xi_es = min(xi, XI_MAX_FOR_ES)
            es = gpd_es(var if xi_es == xi else gpd_var(u, xi_es, beta, n, n_u, level), u, xi_es, beta)
            method = "gpd" if xi_es == xi else "gpd-xi-clamped"
            return TailEstimate(var, es, u, xi, beta, n, n_u, method)
    var, es = empirical_var_es(x, level)
    return TailEstimate(var, es, math.nan, math.nan, math.nan, n, int((x >= var).sum()), "empirical")


def unit_losses(log_returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Simple-return losses of a unit long and a unit short position from per-bar log returns."""
    simple = np.expm1(np.asarray(log_returns, dtype=np.float64))
    return -simple, simple


class EvtTailCache:
    """Per-asset, per-side (long/short) tail estimates, refit every ``refit_every_bars`` bars (by timestamp).

    Refit times depend only on the decision timestamps, so a backtest and a resumed paper-trading session make the
    same fits. State is JSON-able.
    """

    def __init__(self, n_assets: int, refit_every_bars: int) -> None:
        self.n_assets = int(n_assets)
        self.refit_every_bars = int(refit_every_bars)
        self.fitted_at_ns: int | None = None
        self.long: list[TailEstimate] = []
        self.short: list[TailEstimate] = []
        self.es_long = np.full(self.n_assets, np.nan)
        self.es_short = np.full(self.n_assets, np.nan)

    def needs_refit(self, timestamp_ns: int, bar_ns: int) -> bool:
        if self.fitted_at_ns is None or not self.long:
            return True
        return (
            timestamp_ns >= self.fitted_at_ns + self.refit_every_bars * bar_ns
            or timestamp_ns < self.fitted_at_ns
        )

    def refit(
        self,
        timestamp_ns: int,
        returns: np.ndarray,
        *,
        window: int,
        level: float,
        threshold_quantile: float,
        min_exceedances: int,
        min_bars: int,
    ) -> None:
        r = np.asarray(returns, dtype=np.float64)[-window:]
        long_losses, short_losses = unit_losses(r)
        self.long = [
            tail_risk(long_losses[:, a], level, threshold_quantile, min_exceedances, min_bars)
            for a in range(self.n_assets)
        ]
        self.short = [
            tail_risk(short_losses[:, a], level, threshold_quantile, min_exceedances, min_bars)
            for a in range(self.n_assets)
        ]
        self._arrays()
        self.fitted_at_ns = int(timestamp_ns)

    def _arrays(self) -> None:
        self.es_long = np.array([t.es for t in self.long], dtype=np.float64)
        self.es_short = np.array([t.es for t in self.short], dtype=np.float64)

    def state_dict(self) -> dict[str, Any]:
        def enc(t: TailEstimate) -> dict[str, Any]:
            return {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in t._asdict().items()
            }

        return {
            "fitted_at_ns": self.fitted_at_ns,
            "long": [enc(t) for t in self.long],
            "short": [enc(t) for t in self.short],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def dec(d: dict[str, Any]) -> TailEstimate:
            vals = {
                k: (math.nan if v is None and k not in ("n_total", "n_exceed", "method") else v)
                for k, v in d.items()
            }
            return TailEstimate(**vals)

        long = [dec(d) for d in state["long"]]
        short = [dec(d) for d in state["short"]]
        if long and len(long) != self.n_assets:
            raise ConfigError(f"EVT state has {len(long)} assets, expected {self.n_assets}")
        self.long, self.short = long, short
        self.fitted_at_ns = None if state["fitted_at_ns"] is None else int(state["fitted_at_ns"])
        if long:
            self._arrays()


def evt_gate(
    proposal: np.ndarray, es_long: np.ndarray, es_short: np.ndarray, limit_per_bar: float, level: float
) -> GateResult:
    """Scale each position so that its tail loss ``|x| · ES_q(side)`` stays within ``limit_per_bar``.

    A position whose side has no tail estimate (NaN) is denied. Per-asset arithmetic on Python floats (few assets).
    """
    scales, exposures = [], []
    for x, el, es_ in zip(
        np.asarray(proposal, dtype=np.float64).tolist(), es_long.tolist(), es_short.tolist(), strict=True
    ):
        exposure = 0.0 if x == 0 else abs(x) * max(el if x > 0 else es_, 0.0)  # max(NaN, 0) is NaN
        if (el != el and x > 0) or (es_ != es_ and x < 0):
            exposure = math.nan
        exposures.append(exposure)
        scales.append(scalar_scale(exposure, limit_per_bar))
    if not scales:
        return GateResult("evt", np.ones(0), "no assets")
    worst = min(range(len(scales)), key=scales.__getitem__)
    e = exposures[worst]
    reason = (
        f"ES{level:.0%} of position {e:.2%}/bar vs limit {limit_per_bar:.2%}"
        if e == e
        else "EVT: no tail estimate"
    )
    return GateResult("evt", np.array(scales), reason)
