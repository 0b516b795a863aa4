"""Position sizing: Bayesian Kelly, regime multipliers, vol-targeted base position, bounded delta (L3 sizer)."""

from himari.sizing.context import (
    DecisionContext,
    PolicySignal,
    continuous_signal,
    delta_signal,
    direction_from_action,
    discrete_signal,
)
from himari.sizing.sizer import PositionSizer, SizingConfig, SizingResult

__all__ = [
    "DecisionContext",
    "PolicySignal",
    "PositionSizer",
    "SizingConfig",
    "SizingResult",
    "continuous_signal",
    "delta_signal",
    "direction_from_action",
    "discrete_signal",
]
