"""The stateless risk gates vectorized over N parallel streams, for the simulator's training loop.

Same formulas as :class:`~himari.risk.engine.RiskEngine` (and tested equal to it with the stateful gates off): input
validity, volatility target, drawdown brake, covariance portfolio VaR, safe margin and the regime leverage cap. Left
out, because they need per-stream history that the engine keeps: EVT tail fits, the Kelly cap (signal outcome
tracker), the risk budget, historical VaR. Shapes: N streams, W trailing bars, A assets, R = 4 regimes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from himari.risk.config import RiskConfig, per_bar_limit
from himari.risk.gate import scale_to_limit
from himari.risk.portfolio_var import normal_quantile

BATCHED_GATES: tuple[str, ...] = (
    "validity",
    "vol_target",
    "drawdown_brake",
    "portfolio_var",
    "safe_margin",
    "leverage",
)


class BatchedRisk(NamedTuple):
    target: np.ndarray  # (N, A) approved positions
    scale: np.ndarray  # (N, A) min over gates
    gate_scales: dict[str, np.ndarray]  # name -> (N, A)
    leverage_cap: np.ndarray  # (N,)


def batched_covariance(window: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, A, A) covariance over the rows where every valid asset is finite (invalid assets: zero rows/cols)."""
    usable = np.isfinite(window) | ~valid[:, None, :]
    rows = usable.all(axis=2)  # (N, W)
    x = np.where(valid[:, None, :] & rows[:, :, None], np.nan_to_num(window), 0.0)
    count = rows.sum(axis=1).astype(np.float64)  # (N,)
    mean = x.sum(axis=1) / np.maximum(count, 1.0)[:, None]
    centered = np.where(rows[:, :, None] & valid[:, None, :], x - mean[:, None, :], 0.0)
    cov = np.einsum("nwa,nwb->nab", centered, centered) / np.maximum(count - 1.0, 1.0)[:, None, None]
    cov[count < 2] = 0.0
    return cov


def batched_risk(
    proposal: np.ndarray,
    returns_window: np.ndarray,
    regime_posterior: np.ndarray,
    equity: np.ndarray,
    peak_equity: np.ndarray,
    config: RiskConfig,
    periods_per_year: float,
    bar_seconds: float,
) -> BatchedRisk:
    """Apply the stateless gates to proposals (N, A) given trailing returns (N, W, A) ending at the decision bar."""
    cfg = config
    x = np.asarray(proposal, dtype=np.float64)
    r = np.asarray(returns_window, dtype=np.float64)
    post = np.asarray(regime_posterior, dtype=np.float64)
    eq = np.asarray(equity, dtype=np.float64)
    peak = np.asarray(peak_equity, dtype=np.float64)
    n, a = x.shape
    gates: dict[str, np.ndarray] = {}

    # validity (the per-stream parts of himari.risk.validity)
    ok_account = np.isfinite(eq) & (eq > 0) & np.isfinite(peak) & (peak > 0)
    ok_post = (np.abs(post.sum(axis=2) - 1.0) <= cfg.posterior_tolerance) & (post.min(axis=2) >= 0.0)
    hist = r[:, -max(cfg.min_history_bars, cfg.cov_window_bars) :, :]
    ok_hist = np.isfinite(hist).sum(axis=1) >= cfg.min_history_bars
    valid = np.isfinite(x) & ok_post & ok_hist & ok_account[:, None]
    if cfg.flat_after_gap:
        valid &= np.isfinite(r[:, -1, :])
    gates["validity"] = valid.astype(np.float64)
    x = np.where(valid, x, 0.0)

    cov = batched_covariance(r[:, -cfg.cov_window_bars :, :], valid)
    port_var = np.einsum("na,nab,nb->n", x, cov, x).clip(min=0.0)
    ones = np.ones((n, a))
    # vol target
    vol = np.sqrt(port_var * periods_per_year)
    gates["vol_target"] = ones * scale_to_limit(vol, cfg.vol_cap_annual)[:, None] if cfg.vol_enabled else ones
    # drawdown brake
    dd = np.clip(1.0 - eq / np.where(peak > 0, peak, np.nan), 0.0, 1.0)
    steps = np.searchsorted(np.asarray(cfg.drawdown_thresholds), np.nan_to_num(dd, nan=1.0), side="right")
    cuts = np.concatenate([[0.0], np.asarray(cfg.drawdown_cuts)])
    dd_scale = np.where(np.isfinite(dd), 1.0 - cuts[steps], 0.0)
    gates["drawdown_brake"] = ones * dd_scale[:, None] if cfg.drawdown_enabled else ones
    # covariance portfolio VaR
    if cfg.portfolio_var_enabled:
        if cfg.portfolio_var_window_bars != cfg.cov_window_bars:
            var_cov = batched_covariance(r[:, -cfg.portfolio_var_window_bars :, :], valid)
            var_w = np.einsum("na,nab,nb->n", x, var_cov, x).clip(min=0.0)
        else:
            var_w = port_var
        var = normal_quantile(cfg.portfolio_var_level) * np.sqrt(var_w)
        limit = per_bar_limit(cfg.portfolio_var_limit_daily, bar_seconds)
        gates["portfolio_var"] = ones * scale_to_limit(var, limit)[:, None]
    else:
        gates["portfolio_var"] = ones
    # safe margin
    if cfg.margin_enabled:
        sigma = np.sqrt(np.einsum("naa->na", cov))
        per_unit = cfg.margin_sigma_k * sigma * np.sqrt(cfg.margin_horizon_bars)
        per_unit = per_unit + cfg.execution_cost_bps * 1e-4 + cfg.maintenance_margin_rate
        usage = np.where(x != 0, np.abs(x) * per_unit, 0.0).sum(axis=1)
        gates["safe_margin"] = ones * scale_to_limit(usage, 1.0 - cfg.margin_buffer)[:, None]
    else:
        gates["safe_margin"] = ones
    # regime leverage cap: the most cautious asset holding a position (all assets when none does)
    per_asset = np.nan_to_num(post @ np.asarray(cfg.leverage_by_regime), nan=0.0)  # (N, A)
    active = x != 0
    any_active = active.any(axis=1, keepdims=True)
    pick = np.where(any_active, active, True)
    lev_cap = np.where(pick, per_asset, np.inf).min(axis=1)
    lev_cap = (
        np.clip(lev_cap, 0.0, cfg.max_leverage) if cfg.leverage_enabled else np.full(n, cfg.max_leverage)
    )
    gross = np.abs(x).sum(axis=1)
    gates["leverage"] = ones * scale_to_limit(gross, lev_cap)[:, None]

    scale = np.minimum.reduce([gates[name] for name in BATCHED_GATES])
    target = x * scale
    gross_t = np.abs(target).sum(axis=1)
    over = gross_t > lev_cap
    target[over] *= (lev_cap[over] / gross_t[over])[:, None]
    return BatchedRisk(target, scale, gates, lev_cap)
