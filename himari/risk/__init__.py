"""The risk layer: eight gates (EVT, Kelly cap, vol target, drawdown, portfolio VaR, safe margin, leverage, budget)
plus input checks, composed by :class:`RiskEngine`; :class:`PositionManager` = sizing + risk in one component."""

from himari.risk.batched import BatchedRisk, batched_risk
from himari.risk.config import RiskConfig
from himari.risk.engine import RiskDecision, RiskEngine
from himari.risk.gate import GateResult
from himari.risk.manager import PositionManager

__all__ = [
    "BatchedRisk",
    "GateResult",
    "PositionManager",
    "RiskConfig",
    "RiskDecision",
    "RiskEngine",
    "batched_risk",
]
