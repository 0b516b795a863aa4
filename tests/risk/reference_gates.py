"""Plain per-stream reference implementations of the risk gates (the formulas of ``himari.risk``, one stream at a
time on Python floats), against which the batched implementation that trades and trains is checked."""

from __future__ import annotations

import bisect
import math

import numpy as np

from himari.risk.config import RiskConfig, per_bar_limit
from himari.risk.gate import GateResult
from himari.risk.portfolio_var import normal_quantile
from himari.sizing.context import DecisionContext
from himari.sizing.kelly import KellyEstimate


def scale_to_limit(exposure: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
    """``min(1, limit / exposure)`` per element: 1 where exposure <= limit (or is 0), 0 where exposure is NaN."""
    e = np.asarray(exposure, dtype=np.float64)
    s = np.ones_like(e)
    np.divide(limit, e, out=s, where=e > limit)  # broadcasts an array of limits
    s[np.isnan(e)] = 0.0
    return s


def scalar_scale(exposure: float, limit: float) -> float:
    """Scalar :func:`scale_to_limit` (plain floats: cheaper than NumPy for one value)."""
    if exposure != exposure:  # NaN
        return 0.0
    return 1.0 if exposure <= limit else max(limit / exposure, 0.0)


def passthrough(name: str, n_assets: int, reason: str) -> GateResult:
    return GateResult(name, np.ones(n_assets), reason)


def portfolio_vol_annual(weights: np.ndarray, cov: np.ndarray, periods_per_year: float) -> float:
    w = np.asarray(weights, dtype=np.float64)
    return float(np.sqrt(max(float(w @ cov @ w), 0.0) * periods_per_year))


def vol_target_gate(
    proposal: np.ndarray, cov: np.ndarray, periods_per_year: float, cap_annual: float
) -> GateResult:
    vol = portfolio_vol_annual(proposal, cov, periods_per_year)
    s = scalar_scale(vol, cap_annual)
    return GateResult(
        "vol_target", np.full(len(proposal), s), f"portfolio vol {vol:.1%}/yr vs cap {cap_annual:.1%}"
    )


def kelly_cap_gate(proposal: np.ndarray, kelly: KellyEstimate) -> GateResult:
    """``min(1, x_kelly / |x|)`` per informative asset; 1 while not informative; 0 when the Kelly size is 0."""
    scales = []
    for x, size, informative in zip(
        np.asarray(proposal, dtype=np.float64).tolist(),
        kelly.position.tolist(),
        kelly.informative.tolist(),
        strict=True,
    ):
        x = abs(x)
        if not informative or x == 0 or x <= size:
            scales.append(1.0)
        else:
            scales.append(size / x if size > 0 else 0.0)
    if not scales:
        return GateResult("kelly_cap", np.ones(0), "no assets")
    i = min(range(len(scales)), key=scales.__getitem__)
    if not kelly.informative[i]:
        reason = f"Kelly not yet informative ({int(kelly.n_outcomes.min())} outcomes)"
    elif kelly.edge[i] <= 0:
        reason = (
            f"no positive posterior edge: p={float(kelly.win_prob[i]):.3f}, b={float(kelly.payoff_ratio[i]):.2f}, "
            f"f*={float(kelly.edge[i]):.4f}"
        )
    else:
        reason = (
            f"Kelly size {float(kelly.position[i]):.3f} (p={float(kelly.win_prob[i]):.3f}, "
            f"b={float(kelly.payoff_ratio[i]):.2f}, n={int(kelly.n_outcomes[i])})"
        )
    return GateResult("kelly_cap", np.array(scales), reason)


def regime_leverage_cap(
    regime_posterior: np.ndarray, leverage_by_regime: np.ndarray, max_leverage: float, active: np.ndarray
) -> float:
    """``min over active assets of Σ_k p_ak L_k`` (all assets when none is active), within [0, max_leverage]."""
    per_asset = (np.asarray(regime_posterior, dtype=np.float64) @ leverage_by_regime).tolist()
    flags = np.asarray(active).tolist()
    chosen = [v if math.isfinite(v) else 0.0 for v, on in zip(per_asset, flags, strict=True) if on] or [
        v if math.isfinite(v) else 0.0 for v in per_asset
    ]
    return min(max(min(chosen), 0.0), max_leverage)


def leverage_gate(proposal: np.ndarray, cap: float) -> GateResult:
    gross = float(np.abs(proposal).sum())
    s = scalar_scale(gross, cap)
    return GateResult(
        "leverage", np.full(len(proposal), s), f"gross leverage {gross:.2f}x vs regime cap {cap:.2f}x"
    )


def margin_usage(
    proposal: np.ndarray,
    sigma_per_bar: np.ndarray,
    horizon_bars: int,
    k: float,
    cost_frac: float,
    maintenance: float,
) -> float:
    """``Σ_a |x_a| (k σ_a sqrt(h) + c + mm)``; an unknown σ (NaN) on a held asset gives inf."""
    root_h = math.sqrt(horizon_bars)
    usage = 0.0
    for x, sigma in zip(
        np.asarray(proposal, dtype=np.float64).tolist(), np.asarray(sigma_per_bar).tolist(), strict=True
    ):
        if x != 0:
            move = k * sigma * root_h if math.isfinite(sigma) else math.inf
            usage += abs(x) * (move + cost_frac + maintenance)
    return usage


def safe_margin_gate(
    proposal: np.ndarray,
    sigma_per_bar: np.ndarray,
    horizon_bars: int,
    k: float,
    cost_frac: float,
    maintenance: float,
    buffer: float,
) -> GateResult:
    usage = margin_usage(proposal, sigma_per_bar, horizon_bars, k, cost_frac, maintenance)
    s = scalar_scale(usage, 1.0 - buffer)
    reason = (
        f"margin use {usage:.1%} of equity at {k:g}σ over {horizon_bars} bars vs {1 - buffer:.0%} allowed"
    )
    return GateResult("safe_margin", np.full(len(proposal), s), reason)


def covariance_var(weights: np.ndarray, cov: np.ndarray, level: float) -> float:
    w = np.asarray(weights, dtype=np.float64)
    return normal_quantile(level) * math.sqrt(max(float(w @ cov @ w), 0.0))


def quantile_linear(values: np.ndarray, level: float) -> float:
    """``numpy.quantile(values, level)`` (linear method) via a partial sort."""
    n = values.size
    h = (n - 1) * level
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    part = np.partition(values, (lo, hi))
    return float(part[lo] + (h - lo) * (part[hi] - part[lo]))


def historical_var(weights: np.ndarray, window_returns: np.ndarray, level: float) -> float:
    """q-quantile of portfolio losses over rows of ``window_returns`` (log returns, finite rows only)."""
    if len(window_returns) == 0:
        return float("nan")
    losses = -(np.expm1(window_returns) @ np.asarray(weights, dtype=np.float64))
    return quantile_linear(losses, level)


def portfolio_var_gate(
    proposal: np.ndarray,
    cov: np.ndarray,
    window_returns: np.ndarray,
    level: float,
    limit_per_bar: float,
    method: str = "max",
) -> GateResult:
    """Scale so that the portfolio VaR (``method``: max of both, "covariance" or "historical") meets the limit."""
    if not proposal.any():
        return GateResult("portfolio_var", np.ones(len(proposal)), "no exposure")
    v_cov = covariance_var(proposal, cov, level) if method != "historical" else math.nan
    v_hist = historical_var(proposal, window_returns, level) if method != "covariance" else math.nan
    if method == "max":
        var = max(v_cov, v_hist) if v_hist == v_hist else v_cov
    else:
        var = v_cov if method == "covariance" else v_hist
    s = scalar_scale(var, limit_per_bar)
    reason = f"VaR{level:.0%} {var:.2%}/bar (cov {v_cov:.2%}, hist {v_hist:.2%}) vs limit {limit_per_bar:.2%}"
    return GateResult("portfolio_var", np.full(len(proposal), s), reason)


def drawdown(equity: float, peak_equity: float) -> float:
    """``1 - equity / peak`` clipped to [0, 1]; NaN for non-positive or non-finite inputs."""
    if not (math.isfinite(equity) and math.isfinite(peak_equity)) or peak_equity <= 0:
        return math.nan
    return float(min(max(1.0 - equity / peak_equity, 0.0), 1.0))


def drawdown_scale(dd: float, thresholds: tuple[float, ...], cuts: tuple[float, ...]) -> float:
    """Step scale: ``1 - cuts[k]`` for the largest k with ``dd >= thresholds[k]``; 0 for NaN drawdown."""
    if not math.isfinite(dd):
        return 0.0
    k = bisect.bisect_right(thresholds, dd)
    return 1.0 if k == 0 else 1.0 - float(cuts[k - 1])


def drawdown_gate(
    n_assets: int, dd: float, thresholds: tuple[float, ...], cuts: tuple[float, ...]
) -> GateResult:
    s = drawdown_scale(dd, thresholds, cuts)
    return GateResult("drawdown_brake", np.full(n_assets, s), f"drawdown {dd:.2%} -> cut {1 - s:.0%}")


def _names(symbols: tuple[str, ...], bad: np.ndarray) -> str:
    return ", ".join(s for s, b in zip(symbols, bad.tolist(), strict=True) if b)


def check_inputs(
    ctx: DecisionContext,
    proposal: np.ndarray,
    cfg: RiskConfig,
    symbols: tuple[str, ...],
    last_timestamp_ns: int | None,
) -> GateResult:
    """Scale 1 for usable assets, 0 for the others, with every problem listed in the reason."""
    n = len(symbols)
    problems: list[str] = []
    if ctx.is_stale:
        problems.append("data flagged stale by the feed")
    age = float(ctx.data_age_bars)
    if not age <= cfg.max_data_age_bars:  # also catches NaN
        problems.append(f"newest data is {age:g} bars old (max {cfg.max_data_age_bars:g})")
    equity = float(ctx.equity)
    if not (math.isfinite(equity) and equity > 0):
        problems.append(f"equity {equity!r} is not positive")
    if ctx.peak_equity is not None and not (math.isfinite(ctx.peak_equity) and ctx.peak_equity > 0):
        problems.append(f"peak equity {ctx.peak_equity!r} is not positive")
    if last_timestamp_ns is not None and ctx.timestamp_ns < last_timestamp_ns:
        problems.append(f"timestamp {ctx.timestamp_ns} is before the last decision {last_timestamp_ns}")
    returns = ctx.returns
    posterior = np.asarray(ctx.regime_posterior, dtype=np.float64)
    # NaN compares False, so these masks are False for NaN inputs as well
    ok_proposal = np.isfinite(proposal)
    ok_position = np.isfinite(np.asarray(ctx.position, dtype=np.float64))
    ok_posterior = (np.abs(posterior.sum(1) - 1.0) <= cfg.posterior_tolerance) & (posterior.min(1) >= 0.0)
    valid = ok_proposal & ok_position & ok_posterior
    if len(returns) == 0:
        problems.append("no returns history")
        ok_gap = ok_history = np.zeros(n, dtype=bool)
    else:
        ok_gap = np.isfinite(returns[-1]) if cfg.flat_after_gap else np.ones(n, dtype=bool)
        window = returns[-max(cfg.min_history_bars, cfg.cov_window_bars) :]
        ok_history = np.isfinite(window).sum(0) >= cfg.min_history_bars
        valid &= ok_gap & ok_history
    if problems:
        valid[:] = False
    if not valid.all():
        for ok, text in (
            (ok_proposal, "proposal is not finite"),
            (ok_position, "current position is not finite"),
            (ok_posterior, "regime posterior invalid (NaN, negative or not summing to 1)"),
            (ok_gap, "no return at this bar (gap)"),
            (ok_history, f"fewer than {cfg.min_history_bars} finite returns in the trailing window"),
        ):
            if not ok.all() and len(returns):
                problems.append(f"{text} for {_names(symbols, ~ok)}")
    reason = "; ".join(problems) if problems else "inputs valid"
    return GateResult("validity", valid.astype(np.float64), reason)


def budget_target(
    strategy_returns: np.ndarray | None,
    periods_per_year: float,
    *,
    window: int,
    min_bars: int,
    sensitivity: float,
    budget_min: float,
    budget_max: float,
) -> float:
    """``clip(1 + sensitivity · annualized Sharpe, min, max)``; 1 when there is too little history."""
    if strategy_returns is None:
        return 1.0
    r = np.asarray(strategy_returns, dtype=np.float64)[-window:]
    finite = np.isfinite(r)
    if not finite.all():
        r = r[finite]
    n = r.size
    if n < max(min_bars, 2):
        return 1.0
    mean = float(r.sum()) / n
    centered = r - mean
    var = float(centered @ centered) / (n - 1)
    if var <= 0:
        return 1.0
    sharpe = mean / math.sqrt(var) * math.sqrt(periods_per_year)
    return min(max(1.0 + sensitivity * sharpe, budget_min), budget_max)


def budget_gate(n_assets: int, budget: float, target: float) -> GateResult:
    s = min(1.0, budget)
    return GateResult("risk_budget", np.full(n_assets, s), f"risk budget {budget:.2f} (target {target:.2f})")


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


def _covariance(window: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariance of per-bar log returns over rows where every valid asset is finite; invalid assets get 0 rows/cols.

    Returns (cov (A, A), clean window (n, A) with invalid columns zeroed).
    """
    a = window.shape[1]
    if valid.all():
        rows = np.isfinite(window).all(1)
        sub = window if rows.all() else window[rows]
        if sub.shape[0] < 2:
            return np.zeros((a, a)), np.zeros((0, a))
        centered = sub - sub.sum(0) / sub.shape[0]
        return centered.T @ centered / (sub.shape[0] - 1), sub
    cols = np.flatnonzero(valid)
    clean = np.zeros((0, a))
    cov = np.zeros((a, a))
    if cols.size == 0:
        return cov, clean
    sub = window[:, cols]
    sub = sub[np.isfinite(sub).all(1)]
    if sub.shape[0] < 2:
        return cov, clean
    centered = sub - sub.sum(0) / sub.shape[0]
    cov[np.ix_(cols, cols)] = centered.T @ centered / (sub.shape[0] - 1)
    clean = np.zeros((sub.shape[0], a))
    clean[:, cols] = sub
    return cov, clean



def reference_risk(
    proposal: np.ndarray,
    ctx: DecisionContext,
    cfg: RiskConfig,
    symbols: tuple[str, ...],
    *,
    es_long: np.ndarray,
    es_short: np.ndarray,
    kelly: KellyEstimate,
    budget: float,
    budget_target_value: float,
    brake_reference: float,
) -> tuple[np.ndarray, list[GateResult], float]:
    """One stream's decision, gate by gate on Python floats (the composition the risk layer documents):
    returns (target, gates, leverage cap). The drawdown brake measures from ``brake_reference``."""
    n = len(symbols)
    tf = ctx.timeframe
    ppy = tf.periods_per_year
    validity = check_inputs(ctx, proposal, cfg, symbols, None)
    valid = validity.scale > 0
    x = np.where(valid & np.isfinite(proposal), proposal, 0.0)
    returns = np.asarray(ctx.returns, dtype=np.float64)
    gates: list[GateResult] = [validity]
    loosen = max(1.0, budget) if cfg.budget_enabled else 1.0
    cov, clean = _covariance(returns[-cfg.cov_window_bars :], valid)
    sigma = np.sqrt(np.diagonal(cov))
    if returns.shape[0] > cfg.portfolio_var_window_bars and cfg.portfolio_var_window_bars != cfg.cov_window_bars:
        var_cov, var_clean = _covariance(returns[-cfg.portfolio_var_window_bars :], valid)
    else:
        var_cov, var_clean = cov, clean
    limit = per_bar_limit(cfg.evt_es_limit_daily, tf.seconds) * loosen
    gates.append(evt_gate(x, es_long, es_short, limit, cfg.evt_level) if cfg.evt_enabled else passthrough("evt", n, ""))
    gates.append(kelly_cap_gate(x, kelly) if cfg.kelly_cap_enabled else passthrough("kelly_cap", n, ""))
    vol_cap = cfg.vol_cap_annual * loosen
    gates.append(vol_target_gate(x, cov, ppy, vol_cap) if cfg.vol_enabled else passthrough("vol_target", n, ""))
    gates.append(drawdown_gate(n, drawdown(ctx.equity, brake_reference), cfg.drawdown_thresholds, cfg.drawdown_cuts)
                 if cfg.drawdown_enabled else passthrough("drawdown_brake", n, ""))
    var_limit = per_bar_limit(cfg.portfolio_var_limit_daily, tf.seconds) * loosen
    gates.append(portfolio_var_gate(x, var_cov, var_clean, cfg.portfolio_var_level, var_limit,
                                    cfg.portfolio_var_method) if cfg.portfolio_var_enabled
                 else passthrough("portfolio_var", n, ""))
    gates.append(safe_margin_gate(x, sigma, cfg.margin_horizon_bars, cfg.margin_sigma_k, cfg.execution_cost_bps * 1e-4,
                                  cfg.maintenance_margin_rate, cfg.margin_buffer) if cfg.margin_enabled
                 else passthrough("safe_margin", n, ""))
    lev_cap = (regime_leverage_cap(np.asarray(ctx.regime_posterior, dtype=np.float64),
                                   np.asarray(cfg.leverage_by_regime), cfg.max_leverage, x != 0)
               if cfg.leverage_enabled else cfg.max_leverage)
    gates.append(leverage_gate(x, lev_cap))
    gates.append(budget_gate(n, budget, budget_target_value) if cfg.budget_enabled else passthrough("risk_budget", n, ""))
    scale = np.array([g.scale for g in gates]).min(0)
    target = x * scale
    post = 1.0
    if n > 1 and float(scale.max() - scale.min()) > 0.0:
        if cfg.vol_enabled:
            post = min(post, float(vol_target_gate(target, cov, ppy, vol_cap).scale[0]))
        if cfg.portfolio_var_enabled:
            recheck = portfolio_var_gate(target, var_cov, var_clean, cfg.portfolio_var_level, var_limit,
                                         cfg.portfolio_var_method)
            post = min(post, float(recheck.scale[0]))
    target = target * post
    gross = float(np.abs(target).sum())
    if gross > lev_cap:
        target = target * (lev_cap / gross)
    return target, gates, lev_cap
