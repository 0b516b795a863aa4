"""Small stand-ins with the interface of ``himari.trading.engine.DecisionEngine`` / ``session.TradingSession``.

They let the serve and paper tests exercise auth, validation, storage, crash-resume and shadow comparison without a
trained bundle. They are honest miniatures, not constants: the engine reads the bars (momentum of the last closes),
raises ``DataError`` on non-positive/unsorted input, and the session fills the order decided at t-1 at bar t's open
with fees and slippage, marks to market at t's close, and round-trips its state through JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from himari.data.bars import Bars
from himari.errors import DataError

REGIMES = ("LOW_VOL", "TRENDING", "HIGH_VOL", "CRISIS")


@dataclass(frozen=True)
class FakeAccountSnapshot:
    equity: float
    peak_equity: float
    positions: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeDecision:
    timestamp: pd.Timestamp
    symbols: tuple[str, ...]
    actions: dict[str, str]
    target_position: dict[str, float]
    regime: dict[str, str]
    regime_posterior: dict[str, dict[str, float]]
    confidence: float
    gates: list[dict[str, Any]]
    model_id: str
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        # per-symbol fields as lists in symbol order, like himari.trading.engine.Decision.to_dict
        return {
            "timestamp": f"{self.timestamp:%Y-%m-%dT%H:%M:%SZ}",
            "symbols": list(self.symbols),
            "actions": [self.actions[s] for s in self.symbols],
            "proposal": [self.target_position[s] for s in self.symbols],
            "target_position": [self.target_position[s] for s in self.symbols],
            "regime": [self.regime[s] for s in self.symbols],
            "regime_posterior": [list(self.regime_posterior[s].values()) for s in self.symbols],
            "confidence": self.confidence,
            "gates": list(self.gates),
            "model_id": self.model_id,
            "model_version": self.model_version,
        }


class FakeEngine:
    """Momentum over ``lookback`` closes: LONG above the mean, SHORT below; drawdown gate from the account."""

    def __init__(self, symbols: tuple[str, ...] = ("BTCUSDT",), lookback: int = 12, sign: float = 1.0,
                 model_id: str = "fake-mlp") -> None:
        self.symbols = symbols
        self.lookback = lookback
        self.sign = sign
        self.model_id = model_id
        self.calls = 0

    def decide(self, bars_by_symbol: dict[str, Bars], account: FakeAccountSnapshot | None = None) -> FakeDecision:
        self.calls += 1
        actions, targets, regimes, posteriors = {}, {}, {}, {}
        ts = None
        for symbol in self.symbols:
            if symbol not in bars_by_symbol:
                raise DataError(f"no bars for {symbol}")
            bars = bars_by_symbol[symbol]
            close = bars.close
            if len(close) == 0 or not np.all(close > 0):
                raise DataError("non-positive close", symbol)
            if np.any(np.diff(bars.timestamps_ns) <= 0):
                raise DataError("unsorted bars", symbol)
            window = close[-self.lookback :]
            score = self.sign * (close[-1] / window.mean() - 1.0)
            target = float(np.clip(score * 20.0, -1.0, 1.0))
            if abs(target) < 0.05:
                target = 0.0
            actions[symbol] = "HOLD" if target == 0.0 else ("LONG" if target > 0 else "SHORT")
            vol = float(np.std(np.diff(np.log(window)))) if len(window) > 2 else 0.0
            k = min(3, int(vol * 200))
            regimes[symbol] = REGIMES[k]
            post = np.full(4, 0.1)
            post[k] = 0.7
            posteriors[symbol] = dict(zip(REGIMES, post.tolist(), strict=True))
            targets[symbol] = target
            ts = bars.index[-1]
        scale = 1.0
        gates = []
        if account is not None and account.peak_equity > 0:
            dd = 1.0 - account.equity / account.peak_equity
            scale = 0.4 if dd > 0.06 else 1.0
            gates.append({"name": "drawdown_brake", "scale": scale, "reason": f"drawdown {dd:.1%}"})
        targets = {s: t * scale for s, t in targets.items()}
        return FakeDecision(ts, self.symbols, actions, targets, regimes, posteriors, 0.7, gates, self.model_id, "0")


@dataclass
class FakeFill:
    order_id: str
    timestamp_ns: int
    symbol: str
    side: str
    quantity_change: float
    price: float
    fee: float
    slippage_cost: float


@dataclass
class FakeBarOutcome:
    timestamp_ns: int
    decision: FakeDecision
    fills: list[FakeFill]
    equity: float
    positions: np.ndarray  # (A,) in symbol order
    drawdown: float


class FakeSession:
    """Fill at t's open (fee 10 bps + slippage 5 bps of the traded notional), mark at t's close, decide for t+1."""

    fee_bps = 10.0
    slippage_bps = 5.0

    def __init__(self, engine: FakeEngine, initial_equity: float = 10_000.0) -> None:
        self.engine = engine
        self.equity = initial_equity
        self.peak = initial_equity
        self.positions = {s: 0.0 for s in engine.symbols}
        self.last_close = {s: 0.0 for s in engine.symbols}
        self.pending: dict[str, Any] | None = None
        self.last_ts_ns: int | None = None

    def on_bar(self, bars_by_symbol: dict[str, Bars]) -> FakeBarOutcome:
        ts = bars_by_symbol[self.engine.symbols[0]].index[-1]
        if self.last_ts_ns is not None and ts.value <= self.last_ts_ns:
            raise DataError(f"bar {ts} is not after the last processed bar")
        fills = []
        for s in self.engine.symbols:
            b = bars_by_symbol[s]
            o, c = float(b.open[-1]), float(b.close[-1])
            if self.last_close[s] > 0:  # mark the open position from the last close to this open
                self.equity *= 1.0 + self.positions[s] * (o / self.last_close[s] - 1.0)
            if self.pending is not None and s in self.pending["targets"]:
                change = self.pending["targets"][s] - self.positions[s]
                if abs(change) > 1e-12:
                    cost = abs(change) * self.equity * (self.fee_bps + self.slippage_bps) / 1e4
                    fills.append(FakeFill(f"{s}:{self.pending['ts']}", int(ts.value), s, "BUY" if change > 0 else "SELL", change, o,
                                          abs(change) * self.equity * self.fee_bps / 1e4,
                                          abs(change) * self.equity * self.slippage_bps / 1e4))
                    self.equity -= cost
                    self.positions[s] = self.pending["targets"][s]
            self.equity *= 1.0 + self.positions[s] * (c / o - 1.0)
            self.last_close[s] = c
        self.peak = max(self.peak, self.equity)
        account = FakeAccountSnapshot(self.equity, self.peak, dict(self.positions))
        decision = self.engine.decide(bars_by_symbol, account)
        self.pending = {"ts": int(ts.value), "targets": dict(decision.target_position)}
        self.last_ts_ns = int(ts.value)
        positions = np.array([self.positions[s] for s in self.engine.symbols])
        return FakeBarOutcome(int(ts.value), decision, fills, self.equity, positions, 1.0 - self.equity / self.peak)

    def state_dict(self) -> dict[str, Any]:
        return {"equity": self.equity, "peak": self.peak, "positions": self.positions, "last_close": self.last_close,
                "pending": self.pending, "last_ts_ns": self.last_ts_ns}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.equity = float(state["equity"])
        self.peak = float(state["peak"])
        self.positions = {k: float(v) for k, v in state["positions"].items()}
        self.last_close = {k: float(v) for k, v in state["last_close"].items()}
        self.pending = state["pending"]
        self.last_ts_ns = state["last_ts_ns"]
