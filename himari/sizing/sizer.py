"""``PositionSizer``: turns a policy signal into a proposed position (fraction of equity) with its reasons.

The arithmetic is the positioning layer's (:mod:`himari.sizing.positioning`, the same functions the simulator
runs during training), at N = 1: σ from the trailing ``vol_lookback_bars`` returns, the vol-targeted base, the regime
multiplier with hysteresis, and per signal kind::

    discrete  : proposal = direction · base · m · confidence               direction ∈ {-1, 0, +1}
    continuous: proposal = clip(target, ±max_position) [· m if configured]
    delta (L3): proposal = direction · (base + delta_max tanh(raw)) · m     (or base · (1 + δ): delta_mode)

``confidence`` is 1 unless ``use_confidence`` is set and the policy gave probabilities; then it is
``clip(P(chosen direction) - P(opposite direction), 0, 1)``. HOLD proposes flat, or keeps the current position when
``hold_keeps_position`` is set. The Bayesian Kelly estimate of the signal (kelly.py) is computed here and enforced by
the risk layer's Kelly-cap gate, so it also bounds continuous targets that bypass the vol-target base.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from himari.errors import ConfigError, DataError
from himari.sizing.config import SizingConfig
from himari.sizing.context import DecisionContext, PolicySignal, check_context_shapes, shape_of
from himari.sizing.kelly import KellyEstimate, SignalOutcomeTracker, kelly_from_sums
from himari.sizing.positioning import propose_positions, trailing_vol_per_bar, vol_target_position


class SizingResult(NamedTuple):
    proposal: np.ndarray  # (A,) proposed signed position, fraction of equity
    direction: np.ndarray  # (A,) sign of the signal
    base: np.ndarray  # (A,) vol-targeted base size (>= 0)
    regime_multiplier: np.ndarray  # (A,) applied (hysteresis) multiplier
    confidence: np.ndarray  # (A,)
    sigma_per_bar: np.ndarray  # (A,) trailing σ of per-bar log returns (NaN when unknown)
    kelly: KellyEstimate
    reasons: tuple[str, ...]  # one line per asset


class PositionSizer:
    """Stateful sizer (regime hysteresis + Kelly outcome tracker); ``state_dict`` is JSON-able."""

    def __init__(self, config: SizingConfig | None = None, symbols: tuple[str, ...] = ("asset",)) -> None:
        self.config = config or SizingConfig()
        self.symbols = tuple(symbols)
        self.n_assets = len(self.symbols)
        cfg = self.config
        self.held_multiplier = np.full(self.n_assets, np.nan)  # regime multiplier hysteresis state
        self.tracker = SignalOutcomeTracker(self.n_assets, cfg.kelly_window_bars)

    def reset(self) -> None:
        self.held_multiplier = np.full(self.n_assets, np.nan)
        self.tracker.reset()

    def _check(self, signal: PolicySignal, ctx: DecisionContext) -> None:
        a = self.n_assets
        if shape_of(signal.values) != (a,):
            raise DataError(f"policy signal: values have shape {np.shape(signal.values)}, expected ({a},)")
        if signal.probs is not None and shape_of(signal.probs) != (a, 3):
            raise DataError(f"policy signal: probs have shape {np.shape(signal.probs)}, expected ({a}, 3)")
        check_context_shapes(ctx, a)

    def propose(self, signal: PolicySignal, ctx: DecisionContext) -> SizingResult:
        """Proposed position for bar t's decision (filled at t+1). Updates the hysteresis and Kelly state once per bar."""
        self._check(signal, ctx)
        cfg = self.config
        returns = ctx.returns
        sigma = trailing_vol_per_bar(returns, cfg.vol_lookback_bars, cfg.vol_min_bars)
        base = vol_target_position(
            sigma, cfg.target_vol_annual, ctx.timeframe.periods_per_year, cfg.max_position
        )
        values = np.asarray(signal.values, dtype=np.float64)
        out = propose_positions(
            signal.kind,
            values[None, :],
            base[None, :],
            np.asarray(ctx.regime_posterior, dtype=np.float64)[None],
            self.held_multiplier[None, :],
            np.asarray(ctx.position, dtype=np.float64)[None, :],
            cfg,
            probs=None if signal.probs is None else np.asarray(signal.probs, dtype=np.float64)[None],
            direction=None if signal.direction is None else np.asarray(signal.direction, dtype=np.float64)[None],
        )
        self.held_multiplier = out.held[0]
        proposal, direction, mult, conf = out.proposal[0], out.direction[0], out.multiplier[0], out.confidence[0]
        values = np.where(np.isfinite(values), values, 0.0)
        last = returns[-1] if len(returns) else np.full(self.n_assets, np.nan)
        self.tracker.update(int(ctx.timestamp_ns), last, direction)
        t = self.tracker
        kelly = kelly_from_sums(
            t.wins,
            t.losses,
            t.sum_gain,
            t.sum_loss,
            prior_alpha=cfg.kelly_prior_alpha,
            prior_beta=cfg.kelly_prior_beta,
            fraction=cfg.kelly_fraction,
            max_position=cfg.kelly_max_position,
            min_outcomes=cfg.kelly_min_outcomes,
            win_prob_quantile=cfg.kelly_win_prob_quantile,
        )
        ann = math.sqrt(ctx.timeframe.periods_per_year)
        reasons = tuple(
            f"{name}: {signal.kind} signal {v:+.3g} -> proposal {x:+.3f} (vol-target base {b:.3f} at σ_ann {sd * ann:.1%}, "
            f"regime x{m:.2f}, confidence {c:.2f})"
            for name, v, x, b, sd, m, c in zip(
                self.symbols,
                values.tolist(),
                proposal.tolist(),
                base.tolist(),
                sigma.tolist(),
                mult.tolist(),
                conf.tolist(),
                strict=True,
            )
        )
        return SizingResult(proposal, direction, base, mult, conf, sigma, kelly, reasons)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "symbols": list(self.symbols),
            "regime": {"held": [None if not np.isfinite(v) else float(v) for v in self.held_multiplier]},
            "kelly": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["symbols"]) != self.symbols:
            raise ConfigError(
                f"sizer state is for symbols {state['symbols']}, this sizer has {list(self.symbols)}"
            )
        if state.get("config") is not None and SizingConfig.parse(state["config"]) != self.config:
            raise ConfigError("sizer state was saved with a different SizingConfig")
        held = np.array([np.nan if v is None else v for v in state["regime"]["held"]], dtype=np.float64)
        if held.shape != (self.n_assets,):
            raise ConfigError(f"regime multiplier state has {held.size} assets, expected {self.n_assets}")
        self.held_multiplier = held
        self.tracker.load_state_dict(state["kelly"])
