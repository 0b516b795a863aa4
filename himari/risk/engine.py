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
from himari.risk.batched import GATE_NAMES, BatchedRisk, batched_risk, update_brake_peak
from himari.risk.budget import RiskBudget, budget_target
from himari.risk.config import RiskConfig
from himari.risk.evt import EvtTailCache, scheduled_fit_ns
from himari.risk.gate import GateResult
from himari.risk.validity import stream_problems, validity_reason
from himari.sizing.context import DecisionContext, check_context_shapes
from himari.sizing.kelly import KellyEstimate
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

    def reset(self) -> None:
        self.__init__(self.config, self.symbols)  # type: ignore[misc]

    def decide(self, sizing: SizingResult, ctx: DecisionContext) -> RiskDecision:
        """Approve, scale or deny the proposal for bar t (filled at t+1).

        The stream's state (tail fits, budget, reference peaks) is updated here with the pure functions of the
        gate modules; the gates themselves run in :func:`himari.risk.batched.batched_risk` with N = 1, the code the
        simulator runs over N episodes during training.
        """
        cfg = self.config
        n = self.n_assets
        proposal = np.asarray(sizing.proposal, dtype=np.float64)
        if proposal.shape != (n,):
            raise ConfigError(f"risk engine for {n} assets got a proposal of shape {proposal.shape}")
        check_context_shapes(ctx, n)
        ts = int(ctx.timestamp_ns)
        tf = ctx.timeframe
        ppy = tf.periods_per_year
        equity = float(ctx.equity)
        if math.isfinite(equity) and equity > 0:
            self.peak_equity = equity if self.peak_equity is None else max(self.peak_equity, equity)
        peak = ctx.peak_equity if ctx.peak_equity is not None else self.peak_equity
        reference = peak if peak is not None else equity
        problems = stream_problems(ctx, cfg, self.last_timestamp_ns)
        returns = np.asarray(ctx.returns, dtype=np.float64)
        if returns.shape[0] == 0:
            returns = np.full((1, n), np.nan)

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
        if cfg.evt_enabled and self.evt.needs_refit(ts, tf.nanoseconds) and returns.shape[0] > 0:
            fit_ns = int(scheduled_fit_ns(ts, cfg.evt_refit_every_bars, tf.nanoseconds))
            self.evt.refit(
                fit_ns,
                returns[: _rows_up_to(ctx, fit_ns, returns.shape[0])],
                window=cfg.evt_window_bars,
                level=cfg.evt_level,
                threshold_quantile=cfg.evt_threshold_quantile,
                min_exceedances=cfg.evt_min_exceedances,
                min_bars=cfg.evt_min_bars,
            )
        brake_peak = np.array([np.nan if self.brake_peak is None else self.brake_peak])
        if cfg.drawdown_peak_halflife_days is not None and math.isfinite(equity) and equity > 0:
            last = self.last_timestamp_ns
            elapsed = (ts - last) / tf.nanoseconds if last is not None and ts > last else 0.0
            brake_peak = update_brake_peak(brake_peak, np.array([equity]), np.array([float(reference)]),
                                           np.array([elapsed]), cfg.drawdown_peak_halflife_days * 86400.0 / tf.seconds)
            self.brake_peak = float(brake_peak[0])
        window = max(cfg.cov_window_bars, cfg.portfolio_var_window_bars, cfg.min_history_bars)
        kelly = sizing.kelly
        out = batched_risk(
            proposal[None, :],
            returns[-window:][None],
            np.asarray(ctx.regime_posterior, dtype=np.float64)[None],
            np.array([equity]),
            np.array([float(reference)]),
            cfg,
            ppy,
            tf.seconds,
            brake_peak=brake_peak if cfg.drawdown_peak_halflife_days is not None else None,
            es_long=self.evt.es_long[None] if cfg.evt_enabled else None,
            es_short=self.evt.es_short[None] if cfg.evt_enabled else None,
            kelly=KellyEstimate(*(np.asarray(v)[None] for v in kelly)),
            budget=np.array([budget]),
            position=np.asarray(ctx.position, dtype=np.float64)[None],
            blocked=np.array([bool(problems)]),
        )
        gates = self._gate_results(out, problems, kelly, target_b, tf.seconds)
        scales = np.array([g.scale for g in gates])
        recheck = float(out.details["portfolio_recheck"][0])
        idx = scales.argmin(0)
        binding = tuple(
            gates[int(idx[a])].name
            if scales[int(idx[a]), a] < 1.0
            else ("portfolio_recheck" if recheck < 1.0 else "none")
            for a in range(n)
        )
        if ts >= (self.last_timestamp_ns or ts):
            self.last_timestamp_ns = ts
        lev_cap = float(out.leverage_cap[0])
        return RiskDecision(
            ts, out.target[0], proposal, out.scale[0], tuple(gates), binding, lev_cap, budget, sizing.reasons
        )

    def _gate_results(
        self, out: BatchedRisk, problems: list[str], kelly: KellyEstimate, budget_target_value: float,
        bar_seconds: float,
    ) -> list[GateResult]:
        """Each gate's scale (stream 0 of ``out``) with the reason a person reads."""
        cfg = self.config
        d = {k: v[0] for k, v in out.details.items()}
        scale = {k: v[0] for k, v in out.gate_scales.items()}
        off = "disabled"
        reasons: dict[str, str] = {
            "validity": validity_reason(problems, out.details, cfg, self.symbols),
            "vol_target": f"portfolio vol {d['vol']:.1%}/yr vs cap {d['vol_cap']:.1%}" if cfg.vol_enabled else off,
            "drawdown_brake": (
                f"drawdown {d['drawdown']:.2%} -> cut {1 - float(scale['drawdown_brake'][0]):.0%}"
                if cfg.drawdown_enabled else off
            ),
            "safe_margin": (
                f"margin use {d['margin_usage']:.1%} of equity at {cfg.margin_sigma_k:g}σ over "
                f"{cfg.margin_horizon_bars} bars vs {1 - cfg.margin_buffer:.0%} allowed" if cfg.margin_enabled else off
            ),
            "leverage": f"gross leverage {d['gross']:.2f}x vs regime cap {d['leverage_cap']:.2f}x",
            "risk_budget": (
                f"risk budget {d['budget']:.2f} (target {budget_target_value:.2f})" if cfg.budget_enabled else off
            ),
        }
        if cfg.portfolio_var_enabled:
            reasons["portfolio_var"] = (
                f"VaR{cfg.portfolio_var_level:.0%} {d['var']:.2%}/bar (cov {d['var_cov']:.2%}, hist "
                f"{d['var_hist']:.2%}) vs limit {d['var_limit']:.2%}" if d["gross"] > 0 else "no exposure"
            )
        else:
            reasons["portfolio_var"] = off
        if cfg.evt_enabled:
            worst = int(np.argmin(scale["evt"]))
            e = float(d["evt_exposure"][worst])
            reasons["evt"] = (f"ES{cfg.evt_level:.0%} of position {e:.2%}/bar vs limit {d['evt_limit']:.2%}"
                              if e == e else "EVT: no tail estimate")
        else:
            reasons["evt"] = off
        if cfg.kelly_cap_enabled:
            i = int(np.argmin(scale["kelly_cap"]))
            if not kelly.informative[i]:
                reasons["kelly_cap"] = f"Kelly not yet informative ({int(np.min(kelly.n_outcomes))} outcomes)"
            elif kelly.edge[i] <= 0:
                reasons["kelly_cap"] = (
                    f"no positive posterior edge: p={float(kelly.win_prob[i]):.3f}, "
                    f"b={float(kelly.payoff_ratio[i]):.2f}, f*={float(kelly.edge[i]):.4f}"
                )
            else:
                reasons["kelly_cap"] = (
                    f"Kelly size {float(kelly.position[i]):.3f} (p={float(kelly.win_prob[i]):.3f}, "
                    f"b={float(kelly.payoff_ratio[i]):.2f}, n={int(kelly.n_outcomes[i])})"
                )
        else:
            reasons["kelly_cap"] = off
        return [GateResult(name, np.asarray(scale[name], dtype=np.float64), reasons[name]) for name in GATE_NAMES]

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


def _rows_up_to(ctx: DecisionContext, timestamp_ns: int, n_rows: int) -> int:
    """How many leading rows of ``ctx.returns`` (which end at bar t) have timestamps <= ``timestamp_ns``."""
    if ctx.returns_timestamps_ns is not None:
        return int(np.searchsorted(np.asarray(ctx.returns_timestamps_ns), timestamp_ns, side="right"))
    behind = (int(ctx.timestamp_ns) - int(timestamp_ns)) // ctx.timeframe.nanoseconds  # contiguous rows assumed
    return max(0, n_rows - int(behind))
