"""The risk gates over N parallel streams: the one implementation, batched in training rollouts (the simulator) and
run with N = 1 per bar by :class:`~himari.risk.engine.RiskEngine` (backtests, paper trading, the API).

Gates, in order, each a scale in [0, 1] per stream and asset (the formulas are documented in their modules):

====================  ====================================================================================
``validity``          inputs usable (``himari.risk.validity``): else flat
``evt``               ``|x| ES_q(side) <= limit`` from the fitted tails (``himari.risk.evt``); no estimate: flat
``kelly_cap``         ``|x| <= x_kelly`` once the signal's Kelly estimate is informative (``himari.sizing.kelly``)
``vol_target``        portfolio volatility ``σ_p = sqrt(xᵀ Σ x · P) <= cap`` (Σ: covariance of per-bar log returns
                      over the trailing window, P bars per year); one scale for all assets, which keeps the mix
``drawdown_brake``    step cuts by drawdown from the (decaying) reference peak (``himari.risk.drawdown``)
``portfolio_var``     covariance and/or historical VaR ``<= limit`` (``himari.risk.portfolio_var``)
``safe_margin``       ``Σ_a |x_a| (k σ_a sqrt(h) + c + mm) <= 1 - buffer``: a k-sigma adverse move over h bars,
                      the cost c of closing and the maintenance margin mm leave a buffer of equity unused
``leverage``          gross ``Σ|x_a| <=`` the regime's leverage ``Σ_k p_k L_k`` (the most cautious asset holding
                      a position sets it; ``RiskConfig`` keeps L non-increasing from LOW_VOL to CRISIS)
``risk_budget``       ``min(1, budget)`` (``himari.risk.budget``)
====================  ====================================================================================

``target = proposal · min over gates``; where assets were cut by different scales the portfolio gates (volatility,
VaR) are checked again on the scaled book; finally gross exposure is clipped to the leverage cap. A budget above 1
loosens the EVT, volatility and VaR limits by that factor. Shapes: N streams, W trailing bars, A assets, R = 4.
The stateful inputs (tail fits, Kelly estimate, budget, the brake's reference peak) are state the caller keeps per
stream and updates with the pure functions of their modules.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from himari.risk.config import RiskConfig, per_bar_limit
from himari.risk.drawdown import decayed_peak
from himari.risk.gate import scale_to_limit
from himari.risk.portfolio_var import normal_quantile
from himari.sizing.kelly import KellyEstimate

GATE_NAMES: tuple[str, ...] = (
    "validity",
    "evt",
    "kelly_cap",
    "vol_target",
    "drawdown_brake",
    "portfolio_var",
    "safe_margin",
    "leverage",
    "risk_budget",
)


class BatchedRisk(NamedTuple):
    target: np.ndarray  # (N, A) approved positions
    scale: np.ndarray  # (N, A) min over gates (and the portfolio recheck), before the final leverage clip
    gate_scales: dict[str, np.ndarray]  # name -> (N, A)
    leverage_cap: np.ndarray  # (N,)
    details: dict[str, np.ndarray]  # what each gate measured (for the reasons), per stream


def batched_covariance(window: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, A, A) covariance over the rows where every valid asset is finite (invalid assets: zero rows/cols)."""
    usable = np.isfinite(window) | ~valid[:, None, :]
    rows = usable.all(axis=2)  # (N, W)
    # every valid asset is finite on a usable row, so the raw values can be taken there (no nan_to_num pass)
    x = np.where(valid[:, None, :] & rows[:, :, None], window, 0.0)
    count = rows.sum(axis=1).astype(np.float64)  # (N,)
    mean = x.sum(axis=1) / np.maximum(count, 1.0)[:, None]
    centered = np.where(rows[:, :, None] & valid[:, None, :], x - mean[:, None, :], 0.0)
    cov = np.einsum("nwa,nwb->nab", centered, centered) / np.maximum(count - 1.0, 1.0)[:, None, None]
    cov[count < 2] = 0.0
    return cov


def batched_historical_var(x: np.ndarray, window: np.ndarray, valid: np.ndarray, level: float) -> np.ndarray:
    """(N,) q-quantile (linear interpolation, as ``numpy.quantile``) of the portfolio losses ``-Σ_a x_a expm1(r_a)``
    over the rows of ``window`` (N, W, A) where every valid asset is finite; NaN where no row is usable."""
    usable = (np.isfinite(window) | ~valid[:, None, :]).all(axis=2)  # (N, W)
    clean = np.where(valid[:, None, :] & np.isfinite(window), window, 0.0)  # non-finite only on unusable rows
    losses = np.where(usable, -np.einsum("nwa,na->nw", np.expm1(clean), x), np.nan)
    ordered = np.sort(losses, axis=1)  # NaN last
    count = usable.sum(axis=1)
    h = (np.maximum(count, 1) - 1) * level
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
    rows = np.arange(x.shape[0])
    q = ordered[rows, lo] + (h - lo) * (ordered[rows, hi] - ordered[rows, lo])
    return np.where(count > 0, q, np.nan)


def update_brake_peak(
    brake_peak: np.ndarray, equity: np.ndarray, peak_equity: np.ndarray, elapsed_bars: np.ndarray,
    halflife_bars: float,
) -> np.ndarray:
    """The drawdown brake's reference peak after a bar: ``max(peak_equity, equity)`` at the first decision (NaN
    state), then :func:`himari.risk.drawdown.decayed_peak` over ``elapsed_bars``, never below equity. Streams with
    non-positive or non-finite equity keep their state."""
    eq = np.asarray(equity, dtype=np.float64)
    ok = np.isfinite(eq) & (eq > 0)
    first = np.maximum(np.asarray(peak_equity, dtype=np.float64), eq)
    decayed = decayed_peak(brake_peak, eq, elapsed_bars, halflife_bars)
    moved = np.where(np.isnan(brake_peak), first, np.where(np.asarray(elapsed_bars) > 0, decayed, brake_peak))
    return np.where(ok, np.maximum(moved, eq), brake_peak)


def _portfolio_var(
    x: np.ndarray, cov: np.ndarray, window: np.ndarray, valid: np.ndarray, cfg: RiskConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(VaR used by the gate, covariance VaR, historical VaR), each (N,)."""
    var_c = normal_quantile(cfg.portfolio_var_level) * np.sqrt(np.einsum("na,nab,nb->n", x, cov, x).clip(min=0.0))
    method = cfg.portfolio_var_method
    var_h = (
        batched_historical_var(x, window, valid, cfg.portfolio_var_level)
        if method != "covariance"
        else np.full(x.shape[0], np.nan)
    )
    if method == "covariance":
        return var_c, var_c, var_h
    if method == "historical":
        return var_h, var_c, var_h
    return np.where(np.isnan(var_h), var_c, np.fmax(var_c, var_h)), var_c, var_h


def batched_risk(
    proposal: np.ndarray,
    returns_window: np.ndarray,
    regime_posterior: np.ndarray,
    equity: np.ndarray,
    peak_equity: np.ndarray,
    config: RiskConfig,
    periods_per_year: float,
    bar_seconds: float,
    *,
    brake_peak: np.ndarray | None = None,
    es_long: np.ndarray | None = None,
    es_short: np.ndarray | None = None,
    kelly: KellyEstimate | None = None,
    budget: np.ndarray | None = None,
    position: np.ndarray | None = None,
    blocked: np.ndarray | None = None,
) -> BatchedRisk:
    """Apply every gate to proposals (N, A) given trailing returns (N, W, A) ending at the decision bar.

    Stateful inputs (each None = that gate passes / is off): ``brake_peak`` (N,) the drawdown brake's reference
    peak (drawdown from ``min(peak_equity, brake_peak)``; None: the all-time peak), ``es_long`` / ``es_short``
    (N, A) expected shortfall of a unit long / short position, ``kelly`` the signal's Kelly estimate (arrays (N, A)),
    ``budget`` (N,) the smoothed risk budget. ``position`` (N, A) current positions (non-finite: flat) and
    ``blocked`` (N,) streams whose inputs failed a whole-stream check (stale data, timestamps going back): flat.
    """
    cfg = config
    x = np.asarray(proposal, dtype=np.float64)
    r = np.asarray(returns_window, dtype=np.float64)
    post = np.asarray(regime_posterior, dtype=np.float64)
    eq = np.asarray(equity, dtype=np.float64)
    peak = np.asarray(peak_equity, dtype=np.float64)
    n, a = x.shape
    ones = np.ones((n, a))
    gates: dict[str, np.ndarray] = {}
    details: dict[str, np.ndarray] = {}

    # validity
    ok_account = np.isfinite(eq) & (eq > 0) & np.isfinite(peak) & (peak > 0)
    ok_proposal = np.isfinite(x)
    ok_position = np.ones((n, a), dtype=bool) if position is None else np.isfinite(position)
    ok_post = (np.abs(post.sum(axis=2) - 1.0) <= cfg.posterior_tolerance) & (post.min(axis=2) >= 0.0)
    hist = r[:, -max(cfg.min_history_bars, cfg.cov_window_bars) :, :]
    ok_hist = np.isfinite(hist).sum(axis=1) >= cfg.min_history_bars
    ok_gap = np.isfinite(r[:, -1, :]) if cfg.flat_after_gap else np.ones((n, a), dtype=bool)
    valid = ok_proposal & ok_position & ok_post & ok_hist & ok_gap & ok_account[:, None]
    if blocked is not None:
        valid &= ~np.asarray(blocked, dtype=bool)[:, None]
    details.update(ok_account=ok_account, ok_proposal=ok_proposal, ok_position=ok_position, ok_posterior=ok_post,
                   ok_gap=ok_gap, ok_history=ok_hist)
    gates["validity"] = valid.astype(np.float64)
    x = np.where(valid, x, 0.0)

    b = np.ones(n) if budget is None or not cfg.budget_enabled else np.asarray(budget, dtype=np.float64)
    loosen = np.maximum(1.0, b)

    # 1. EVT tail risk: each position's expected shortfall within the limit (no estimate for its side: denied)
    if cfg.evt_enabled and es_long is not None and es_short is not None:
        side_es = np.where(x > 0, es_long, es_short)
        exposure = np.where(x == 0, 0.0, np.abs(x) * np.fmax(side_es, 0.0))
        exposure = np.where((x != 0) & np.isnan(side_es), np.nan, exposure)
        limit = per_bar_limit(cfg.evt_es_limit_daily, bar_seconds) * loosen
        gates["evt"] = scale_to_limit(exposure, limit[:, None])
        details.update(evt_exposure=exposure, evt_limit=limit)
    else:
        gates["evt"] = ones
    # 2. Kelly cap: no position beyond the signal's fractional Bayesian Kelly size once it is informative
    if cfg.kelly_cap_enabled and kelly is not None:
        size = np.asarray(kelly.position, dtype=np.float64)
        ax = np.abs(x)
        cut = np.asarray(kelly.informative, dtype=bool) & (ax > 0) & (ax > size)
        with np.errstate(over="ignore"):  # only cut entries (|x| > size >= 0) are used
            gates["kelly_cap"] = np.where(cut, np.where(size > 0, size / np.where(cut, ax, 1.0), 0.0), 1.0)
    else:
        gates["kelly_cap"] = ones
    # 3. volatility target on the portfolio
    w = cfg.cov_window_bars
    cov = batched_covariance(r[:, -w:, :], valid)
    vol = np.sqrt(np.einsum("na,nab,nb->n", x, cov, x).clip(min=0.0) * periods_per_year)
    vol_cap = cfg.vol_cap_annual * loosen
    gates["vol_target"] = ones * scale_to_limit(vol, vol_cap)[:, None] if cfg.vol_enabled else ones
    details.update(vol=vol, vol_cap=vol_cap)
    # 4. drawdown brake
    reference = peak if brake_peak is None else np.fmin(peak, brake_peak)
    dd = np.clip(1.0 - eq / np.where(reference > 0, reference, np.nan), 0.0, 1.0)
    steps = np.searchsorted(np.asarray(cfg.drawdown_thresholds), np.where(np.isnan(dd), 1.0, dd), side="right")
    cuts = np.concatenate([[0.0], np.asarray(cfg.drawdown_cuts)])
    dd_scale = np.where(np.isfinite(dd), 1.0 - cuts[steps], 0.0)
    gates["drawdown_brake"] = ones * dd_scale[:, None] if cfg.drawdown_enabled else ones
    details.update(drawdown=dd)
    # 5. portfolio VaR
    var_window = r[:, -cfg.portfolio_var_window_bars :, :]
    var_cov = cov if cfg.portfolio_var_window_bars == w else batched_covariance(var_window, valid)
    var_limit = per_bar_limit(cfg.portfolio_var_limit_daily, bar_seconds) * loosen
    if cfg.portfolio_var_enabled:
        var, var_c, var_h = _portfolio_var(x, var_cov, var_window, valid, cfg)
        held = np.abs(x).sum(axis=1) > 0  # no exposure: nothing to scale
        gates["portfolio_var"] = ones * np.where(held, scale_to_limit(var, var_limit), 1.0)[:, None]
        details.update(var=var, var_cov=var_c, var_hist=var_h, var_limit=var_limit)
    else:
        gates["portfolio_var"] = ones
    # 6. safe margin
    sigma = np.sqrt(np.einsum("naa->na", cov))
    per_unit = cfg.margin_sigma_k * sigma * np.sqrt(cfg.margin_horizon_bars)
    per_unit = per_unit + cfg.execution_cost_bps * 1e-4 + cfg.maintenance_margin_rate
    usage = np.where(x != 0, np.abs(x) * per_unit, 0.0).sum(axis=1)
    gates["safe_margin"] = ones * scale_to_limit(usage, 1.0 - cfg.margin_buffer)[:, None] if cfg.margin_enabled else ones
    details.update(margin_usage=usage)
    # 7. regime leverage cap: the most cautious asset holding a position (all assets when none does)
    per_asset = post @ np.asarray(cfg.leverage_by_regime)  # (N, A); ±inf is clipped below like nan_to_num's ±max
    per_asset = np.where(np.isnan(per_asset), 0.0, per_asset)
    active = x != 0
    pick = np.where(active.any(axis=1, keepdims=True), active, True)
    lev_cap = np.where(pick, per_asset, np.inf).min(axis=1)
    lev_cap = np.clip(lev_cap, 0.0, cfg.max_leverage) if cfg.leverage_enabled else np.full(n, cfg.max_leverage)
    gross = np.abs(x).sum(axis=1)
    gates["leverage"] = ones * scale_to_limit(gross, lev_cap)[:, None]
    details.update(gross=gross)
    # 8. risk budget
    gates["risk_budget"] = ones * np.minimum(1.0, b)[:, None] if cfg.budget_enabled else ones
    details.update(budget=b)

    scale = np.minimum.reduce([gates[name] for name in GATE_NAMES])
    target = x * scale
    # Second pass of the portfolio gates on the scaled book: a hedged book can gain risk when one leg shrinks.
    # Only needed where assets were scaled differently; a common scale keeps every portfolio gate satisfied.
    post_scale = np.ones(n)
    if a > 1:
        uneven = (scale.max(axis=1) - scale.min(axis=1)) > 0.0
        if uneven.any():
            if cfg.vol_enabled:
                vol2 = np.sqrt(np.einsum("na,nab,nb->n", target, cov, target).clip(min=0.0) * periods_per_year)
                post_scale = np.minimum(post_scale, scale_to_limit(vol2, vol_cap))
            if cfg.portfolio_var_enabled:
                var2, _, _ = _portfolio_var(target, var_cov, var_window, valid, cfg)
                post_scale = np.minimum(post_scale, np.where(np.abs(target).sum(axis=1) > 0,
                                                             scale_to_limit(var2, var_limit), 1.0))
            post_scale = np.where(uneven, post_scale, 1.0)
    scale = scale * post_scale[:, None]
    target = target * post_scale[:, None]
    details.update(portfolio_recheck=post_scale, leverage_cap=lev_cap)
    gross_t = np.abs(target).sum(axis=1)
    over = gross_t > lev_cap
    target[over] *= (lev_cap[over] / gross_t[over])[:, None]
    return BatchedRisk(target, scale, gates, lev_cap, details)
