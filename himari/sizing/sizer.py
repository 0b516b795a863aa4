"""``PositionSizer``: turns a policy signal into a proposed position (fraction of equity) with its reasons.

Composition, per asset (σ from the trailing ``vol_lookback_bars`` returns, m from the regime posterior)::

    base      = min(max_position, σ_target / (σ_bar sqrt(P)))             (vol_target.py)
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
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field, model_validator

from himari.config import FrozenConfig
from himari.errors import ConfigError, DataError
from himari.sizing.context import DecisionContext, PolicySignal, check_context_shapes, shape_of
from himari.sizing.kelly import KellyEstimate, SignalOutcomeTracker, kelly_from_sums
from himari.sizing.regime import RegimeMultiplier
from himari.sizing.vol_target import apply_delta, bounded_delta, trailing_vol_per_bar, vol_target_position


class SizingConfig(FrozenConfig):
    """Position sizing parameters (defaults as in the issue: quarter Kelly, regime multipliers 1.0/1.2/0.6/0.2)."""

    target_vol_annual: float = Field(
        0.40, gt=0.0, le=5.0, description="annualized volatility target per asset"
    )
    vol_lookback_bars: int = Field(100, ge=2, description="trailing bars for σ_bar")
    vol_min_bars: int = Field(20, ge=2, description="finite returns needed in the lookback, else no position")
    max_position: float = Field(
        1.0, gt=0.0, le=10.0, description="cap on |base| and |continuous target| per asset"
    )
    regime_multipliers: tuple[float, float, float, float] = (1.0, 1.2, 0.6, 0.2)
    regime_deadband: float = Field(
        0.10, ge=0.0, le=1.0, description="hysteresis of the applied regime multiplier"
    )
    kelly_fraction: float = Field(0.25, gt=0.0, le=1.0)
    kelly_prior_alpha: float = Field(1.0, gt=0.0)
    kelly_prior_beta: float = Field(1.0, gt=0.0)
    kelly_window_bars: int = Field(500, ge=10)
    kelly_min_outcomes: int = Field(50, ge=1)
    kelly_max_position: float = Field(2.0, gt=0.0, le=10.0)
    kelly_win_prob_quantile: float | None = Field(None, gt=0.0, lt=1.0, description="None: posterior mean")
    use_confidence: bool = False
    hold_keeps_position: bool = False
    scale_continuous_by_regime: bool = False
    delta_max: float = Field(0.30, gt=0.0, lt=1.0)
    delta_squash: Literal["tanh", "clip"] = "tanh"
    delta_mode: Literal["additive", "multiplicative"] = Field(
        "additive", description="additive matches the simulator's delta action (target = base + 0.30 tanh(x))"
    )

    @model_validator(mode="after")
    def _check(self) -> SizingConfig:
        m = self.regime_multipliers
        if any(v < 0 for v in m):
            raise ValueError("regime_multipliers must be >= 0")
        if m[3] > m[0]:
            raise ValueError("regime_multipliers: CRISIS must not exceed LOW_VOL")
        if self.vol_min_bars > self.vol_lookback_bars:
            raise ValueError("vol_min_bars must be <= vol_lookback_bars")
        return self


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
        self.regime = RegimeMultiplier(cfg.regime_multipliers, self.n_assets, cfg.regime_deadband)
        self.tracker = SignalOutcomeTracker(self.n_assets, cfg.kelly_window_bars)
        self._min_multiplier = float(min(cfg.regime_multipliers))

    def reset(self) -> None:
        self.regime.held[:] = np.nan
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
        posterior = np.asarray(ctx.regime_posterior, dtype=np.float64)
        if np.isfinite(posterior).all():
            mult = self.regime(posterior)
        else:  # invalid posterior: the risk layer flattens; size as the most cautious regime meanwhile
            mult = np.full(self.n_assets, self._min_multiplier)
        values = np.asarray(signal.values, dtype=np.float64)
        values = np.where(np.isfinite(values), values, 0.0)
        conf = np.ones(self.n_assets)
        if signal.kind == "discrete":
            direction = np.sign(values)
            if cfg.use_confidence and signal.probs is not None:
                probs = np.nan_to_num(np.asarray(signal.probs, dtype=np.float64), nan=0.0)
                p_long, p_short = probs[:, 1], probs[:, 2]
                conf = np.minimum(
                    np.maximum(np.where(direction > 0, p_long - p_short, p_short - p_long), 0.0), 1.0
                )
            proposal = direction * base * mult * conf
            if cfg.hold_keeps_position:
                proposal = np.where(direction == 0, np.asarray(ctx.position, dtype=np.float64), proposal)
        elif signal.kind == "continuous":
            target = np.minimum(np.maximum(values, -cfg.max_position), cfg.max_position)
            direction = np.sign(target)
            proposal = target * mult if cfg.scale_continuous_by_regime else target
        elif signal.kind == "delta":
            delta = bounded_delta(values, cfg.delta_max, cfg.delta_squash)
            direction = np.ones(self.n_assets) if signal.direction is None else np.sign(signal.direction)
            proposal = direction * apply_delta(base, delta, cfg.delta_mode) * mult
        else:
            raise ConfigError(
                f"policy signal: unknown kind {signal.kind!r} (expected discrete, continuous or delta)"
            )
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
            "regime": self.regime.state_dict(),
            "kelly": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["symbols"]) != self.symbols:
            raise ConfigError(
                f"sizer state is for symbols {state['symbols']}, this sizer has {list(self.symbols)}"
            )
        if state.get("config") is not None and SizingConfig.parse(state["config"]) != self.config:
            raise ConfigError("sizer state was saved with a different SizingConfig")
        self.regime.load_state_dict(state["regime"])
        self.tracker.load_state_dict(state["kelly"])
