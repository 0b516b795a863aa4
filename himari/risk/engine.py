"""``RiskEngine``: composes the input checks and the eight risk gates; the policy proposes, risk approves or scales.

For a proposal x (A,) from :class:`~himari.sizing.sizer.PositionSizer` and the context at bar t::

    scale_a = min over gates g of scale_g,a          (validity, evt, kelly_cap, vol_target, drawdown_brake,
                                                       portfolio_var, safe_margin, leverage, risk_budget)
    target  = x · scale                              then clipped so that Σ|target| <= leverage cap

Each gate's scale is in [0, 1], so ``|target_a| <= |x_a|`` always. Portfolio gates (volatility, VaR) are checked
again on the scaled target, because scaling single assets down can raise the risk of a hedged book. Every decision
carries each gate's scale and reason and the binding gate per asset (nautilus_trader's RiskEngine denies with a
reason in the same spirit).

State (JSON-able via ``state_dict``): the EVT fit cache, the risk budget, the tracked peak equity, the drawdown
brake's decaying reference peak and the last decision timestamp, so paper trading can persist and resume with identical decisions.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from himari.errors import ConfigError
from himari.risk.budget import RiskBudget, budget_gate, budget_target
from himari.risk.config import RiskConfig, per_bar_limit
from himari.risk.drawdown import decayed_peak, drawdown, drawdown_gate
from himari.risk.evt import EvtTailCache, evt_gate
from himari.risk.gate import GateResult, passthrough
from himari.risk.kelly_cap import kelly_cap_gate
from himari.risk.leverage import leverage_gate, regime_leverage_cap
from himari.risk.margin import safe_margin_gate
from himari.risk.portfolio_var import portfolio_var_gate
from himari.risk.validity import check_inputs
from himari.risk.vol_target import vol_target_gate
from himari.sizing.context import DecisionContext, check_context_shapes
from himari.sizing.sizer import SizingResult


class RiskDecision(NamedTuple):
    timestamp_ns: int
    target: np.ndarray  # (A,) approved signed position, fraction of equity (filled at t+1)
    proposal: np.ndarray  # (A,) what sizing proposed
    scale: np.ndarray  # (A,) min over gates (target = proposal · scale, before the final leverage clip)
    gates: tuple[GateResult, ...]
    binding: tuple[str, ...]  # per asset: the gate with the smallest scale, "none" when nothing cut
    leverage_cap: float
    budget: float
    sizing_reasons: tuple[str, ...] = ()

    def reasons(self) -> list[str]:
        """Human-readable lines: sizing, then each gate that cut (or "all risk gates passed")."""
        lines = list(self.sizing_reasons)
        for g in self.gates:
            scales = g.scale.tolist()
            if scales and min(scales) < 1.0:
                lines.append(f"{g.name}: scale {', '.join(f'{v:.3f}' for v in scales)} - {g.reason}")
        if len(lines) == len(self.sizing_reasons):
            lines.append("all risk gates passed")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for logs and the API."""
        return {
            "timestamp_ns": int(self.timestamp_ns),
            "target": [float(v) for v in self.target],
            "proposal": [float(v) if np.isfinite(v) else None for v in self.proposal],
            "scale": [float(v) for v in self.scale],
            "binding": list(self.binding),
            "leverage_cap": float(self.leverage_cap),
            "budget": float(self.budget),
            "gates": [g.to_dict() for g in self.gates],
            "sizing_reasons": list(self.sizing_reasons),
        }


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


class RiskEngine:
    """The risk layer between any policy/sizer and execution (one instance per trading stream)."""

    def __init__(self, config: RiskConfig | None = None, symbols: tuple[str, ...] = ("asset",)) -> None:
        self.config = config or RiskConfig()
        self.symbols = tuple(symbols)
        self.n_assets = len(self.symbols)
        cfg = self.config
        self.evt = EvtTailCache(self.n_assets, cfg.evt_refit_every_bars)
        self.budget = RiskBudget(cfg.budget_halflife_bars, cfg.budget_min, cfg.budget_max)
        self.peak_equity: float | None = None
        self.brake_peak: float | None = None  # the drawdown brake's decaying reference peak
        self.last_timestamp_ns: int | None = None
        self._leverage_levels = np.asarray(cfg.leverage_by_regime, dtype=np.float64)

    def reset(self) -> None:
        self.__init__(self.config, self.symbols)  # type: ignore[misc]

    def decide(self, sizing: SizingResult, ctx: DecisionContext) -> RiskDecision:
        """Approve, scale or deny the proposal for bar t (filled at t+1)."""
        cfg = self.config
        n = self.n_assets
        proposal = np.asarray(sizing.proposal, dtype=np.float64)
        if proposal.shape != (n,):
            raise ConfigError(f"risk engine for {n} assets got a proposal of shape {proposal.shape}")
        check_context_shapes(ctx, n)
        ts = int(ctx.timestamp_ns)
        tf = ctx.timeframe
        ppy = tf.periods_per_year
        if math.isfinite(ctx.equity) and ctx.equity > 0:
            self.peak_equity = ctx.equity if self.peak_equity is None else max(self.peak_equity, ctx.equity)
        peak = ctx.peak_equity if ctx.peak_equity is not None else self.peak_equity

        validity = check_inputs(ctx, proposal, cfg, self.symbols, self.last_timestamp_ns)
        valid = validity.scale > 0
        x = np.where(valid & np.isfinite(proposal), proposal, 0.0)
        returns = np.asarray(ctx.returns, dtype=np.float64)
        gates: list[GateResult] = [validity]

        target_b = budget_target(
            ctx.strategy_returns,
            ppy,
            window=cfg.budget_window_bars,
            min_bars=cfg.budget_min_bars,
            sensitivity=cfg.budget_sensitivity,
            budget_min=cfg.budget_min,
            budget_max=cfg.budget_max,
        )
        budget = self.budget.update(ts, target_b) if cfg.budget_enabled else 1.0
        loosen = max(1.0, budget)

        window = returns[-cfg.cov_window_bars :]
        cov, clean = _covariance(window, valid)
        # per-bar σ over the same rows (0 for invalid assets, which hold nothing)
        sigma = np.sqrt(np.diagonal(cov))
        if (
            returns.shape[0] > cfg.portfolio_var_window_bars
            and cfg.portfolio_var_window_bars != cfg.cov_window_bars
        ):
            var_cov, var_clean = _covariance(returns[-cfg.portfolio_var_window_bars :], valid)
        else:
            var_cov, var_clean = cov, clean

        # 1. EVT tail risk
        if cfg.evt_enabled:
            # refit on schedule, or early when a held asset has no tail estimate yet (e.g. it just became valid)
            missing = bool(
                np.any(((x > 0) & np.isnan(self.evt.es_long)) | ((x < 0) & np.isnan(self.evt.es_short)))
            )
            if (missing or self.evt.needs_refit(ts, tf.nanoseconds)) and valid.any():
                self.evt.refit(
                    ts,
                    returns,
                    window=cfg.evt_window_bars,
                    level=cfg.evt_level,
                    threshold_quantile=cfg.evt_threshold_quantile,
                    min_exceedances=cfg.evt_min_exceedances,
                    min_bars=cfg.evt_min_bars,
                )
            limit = per_bar_limit(cfg.evt_es_limit_daily, tf.seconds) * loosen
            gates.append(evt_gate(x, self.evt.es_long, self.evt.es_short, limit, cfg.evt_level))
        else:
            gates.append(passthrough("evt", n, "disabled"))
        # 2. Kelly cap
        gates.append(
            kelly_cap_gate(x, sizing.kelly)
            if cfg.kelly_cap_enabled
            else passthrough("kelly_cap", n, "disabled")
        )
        # 3. volatility targeting
        vol_cap = cfg.vol_cap_annual * loosen
        gates.append(
            vol_target_gate(x, cov, ppy, vol_cap)
            if cfg.vol_enabled
            else passthrough("vol_target", n, "disabled")
        )
        # 4. drawdown brake
        reference = peak if peak is not None else ctx.equity
        if cfg.drawdown_peak_halflife_days is not None and math.isfinite(ctx.equity) and ctx.equity > 0:
            if self.brake_peak is None:
                self.brake_peak = max(reference, ctx.equity)
            elif self.last_timestamp_ns is not None and ts > self.last_timestamp_ns:
                elapsed = (ts - self.last_timestamp_ns) / tf.nanoseconds
                halflife = cfg.drawdown_peak_halflife_days * 86400.0 / tf.seconds
                self.brake_peak = decayed_peak(self.brake_peak, ctx.equity, elapsed, halflife)
            self.brake_peak = max(self.brake_peak, ctx.equity)
            reference = min(reference, self.brake_peak)
        dd = drawdown(ctx.equity, reference)
        gates.append(
            drawdown_gate(n, dd, cfg.drawdown_thresholds, cfg.drawdown_cuts)
            if cfg.drawdown_enabled
            else passthrough("drawdown_brake", n, "disabled")
        )
        # 5. portfolio VaR
        var_limit = per_bar_limit(cfg.portfolio_var_limit_daily, tf.seconds) * loosen
        gates.append(
            portfolio_var_gate(
                x, var_cov, var_clean, cfg.portfolio_var_level, var_limit, cfg.portfolio_var_method
            )
            if cfg.portfolio_var_enabled
            else passthrough("portfolio_var", n, "disabled")
        )
        # 6. safe margin
        gates.append(
            safe_margin_gate(
                x,
                sigma,
                cfg.margin_horizon_bars,
                cfg.margin_sigma_k,
                cfg.execution_cost_bps * 1e-4,
                cfg.maintenance_margin_rate,
                cfg.margin_buffer,
            )
            if cfg.margin_enabled
            else passthrough("safe_margin", n, "disabled")
        )
        # 7. leverage controller
        posterior = np.asarray(ctx.regime_posterior, dtype=np.float64)
        if cfg.leverage_enabled:
            lev_cap = regime_leverage_cap(posterior, self._leverage_levels, cfg.max_leverage, x != 0)
        else:
            lev_cap = cfg.max_leverage
        gates.append(leverage_gate(x, lev_cap))
        # 8. risk budget
        gates.append(
            budget_gate(n, budget, target_b)
            if cfg.budget_enabled
            else passthrough("risk_budget", n, "disabled")
        )

        scales = np.array([g.scale for g in gates])
        scale = scales.min(0)
        target = x * scale
        # Second pass of the portfolio gates on the scaled book: a hedged book can gain risk when one leg shrinks.
        # Only needed when assets were scaled differently; a common scale keeps every portfolio gate satisfied.
        post = 1.0
        if n > 1 and float(scale.max() - scale.min()) > 0.0:
            if cfg.vol_enabled:
                post = min(post, float(vol_target_gate(target, cov, ppy, vol_cap).scale[0]))
            if cfg.portfolio_var_enabled:
                recheck = portfolio_var_gate(
                    target, var_cov, var_clean, cfg.portfolio_var_level, var_limit, cfg.portfolio_var_method
                )
                post = min(post, float(recheck.scale[0]))
        if post < 1.0:
            scale = scale * post
            target = target * post
        gross = float(np.abs(target).sum())
        if gross > lev_cap:  # numerical guard: the leverage cap holds exactly
            target = target * (lev_cap / gross)

        idx = scales.argmin(0)
        binding = tuple(
            gates[int(idx[a])].name
            if scales[int(idx[a]), a] < 1.0
            else ("portfolio_recheck" if post < 1.0 else "none")
            for a in range(n)
        )
        if ts >= (self.last_timestamp_ns or ts):
            self.last_timestamp_ns = ts
        return RiskDecision(
            ts, target, proposal, scale, tuple(gates), binding, lev_cap, budget, sizing.reasons
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "symbols": list(self.symbols),
            "evt": self.evt.state_dict(),
            "budget": self.budget.state_dict(),
            "peak_equity": self.peak_equity,
            "brake_peak": self.brake_peak,
            "last_timestamp_ns": self.last_timestamp_ns,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["symbols"]) != self.symbols:
            raise ConfigError(
                f"risk state is for symbols {state['symbols']}, this engine has {list(self.symbols)}"
            )
        if state.get("config") is not None and RiskConfig.parse(state["config"]) != self.config:
            raise ConfigError("risk state was saved with a different RiskConfig")
        self.evt.load_state_dict(state["evt"])
        self.budget.load_state_dict(state["budget"])
        self.peak_equity = None if state["peak_equity"] is None else float(state["peak_equity"])
        self.brake_peak = None if state.get("brake_peak") is None else float(state["brake_peak"])
        ts = state["last_timestamp_ns"]
        self.last_timestamp_ns = None if ts is None else int(ts)
