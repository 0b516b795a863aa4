"""``PositionManager``: sizing + risk as one component, the single code path for backtests, paper trading and serving.

    manager = PositionManager(SizingConfig(), RiskConfig(), symbols=("BTCUSDT",))
    decision = manager.decide(signal, ctx)        # RiskDecision: target (A,), reasons, per-gate scales
    state = manager.state_dict()                  # JSON-able; manager.load_state_dict(state) resumes exactly

Call ``decide`` once per bar, in time order, with the context of bar t; fill ``decision.target`` at bar t+1.
"""

from __future__ import annotations

from typing import Any

from himari.errors import ConfigError
from himari.risk.config import RiskConfig
from himari.risk.engine import RiskDecision, RiskEngine
from himari.sizing.context import DecisionContext, PolicySignal
from himari.sizing.sizer import PositionSizer, SizingConfig

STATE_FORMAT = 1


class PositionManager:
    def __init__(
        self,
        sizing: SizingConfig | None = None,
        risk: RiskConfig | None = None,
        symbols: tuple[str, ...] = ("asset",),
    ) -> None:
        self.symbols = tuple(symbols)
        self.sizer = PositionSizer(sizing or SizingConfig(), self.symbols)
        self.engine = RiskEngine(risk or RiskConfig(), self.symbols)

    @classmethod
    def from_dicts(
        cls, sizing: dict[str, Any] | None, risk: dict[str, Any] | None, symbols: tuple[str, ...]
    ) -> PositionManager:
        """Build from the JSON dicts stored in a bundle (``bundle.sizing_config``, ``bundle.risk_config``)."""
        return cls(SizingConfig.parse(sizing or {}), RiskConfig.parse(risk or {}), symbols)

    @property
    def sizing_config(self) -> SizingConfig:
        return self.sizer.config

    @property
    def risk_config(self) -> RiskConfig:
        return self.engine.config

    def reset(self) -> None:
        self.sizer.reset()
        self.engine.reset()

    def decide(self, signal: PolicySignal, ctx: DecisionContext) -> RiskDecision:
        return self.engine.decide(self.sizer.propose(signal, ctx), ctx)

    def state_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "sizer": self.sizer.state_dict(), "risk": self.engine.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ConfigError(f"position manager state format {state.get('format')!r} is not supported")
        self.sizer.load_state_dict(state["sizer"])
        self.engine.load_state_dict(state["risk"])
