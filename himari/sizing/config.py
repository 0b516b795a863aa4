"""``SizingConfig``: settings of the positioning layer (L3), shared by the simulator and the deployed sizer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from himari.config import FrozenConfig


class SizingConfig(FrozenConfig):
    """Position sizing parameters (defaults: 40%/yr vol target, quarter Kelly, regime multipliers 1.0/1.2/0.6/0.2)."""

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
        "additive", description="additive: target = base + delta_max tanh(x); multiplicative: base (1 + delta)"
    )
    decision_every_bars: int = Field(
        1, ge=1, description="positions change only on decision bars, every k-th bar of the timeframe counted from the "
        "Unix epoch (e.g. 4 on 1h bars: every 4 h); in between the position is kept unless the target is flat",
    )
    min_hold_bars: int = Field(
        0, ge=0, description="a position is not flipped to the other side before it was held this many bars "
        "(closing it is always allowed)",
    )
    rebalance_band: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="orders that change a position by less than this fraction of equity, without opening, closing "
        "or flipping it, are skipped (the position drifts with the price): no fees every bar for tiny resizes",
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
