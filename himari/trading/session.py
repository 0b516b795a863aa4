"""A trading session: the bar-by-bar loop shared by the backtester and paper trading.

For each newly closed bar t, :meth:`TradingSession.process` does, in order:

1. fill the target decided at bar t-1 at bar t's open (or close, per the cost config) with the simulator's own
   step kernel (:func:`himari.env.sim.step`: fees, slippage, no fill across gaps), and mark to market at t's close;
2. decide for bar t through :class:`~himari.trading.engine.DecisionEngine` (policy -> sizing -> risk); the target
   waits, pending, to be filled at bar t+1.

The backtester calls ``process(market, t)`` on one market built from the whole history; paper trading calls
:meth:`on_bar` with the bars received so far, which builds the market from a trailing history (tactical rows
updated bar by bar: :mod:`himari.trading.stream`) and calls the same
``process``. ``state_dict`` / ``load_state_dict`` make the session resumable (JSON only).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from himari.config import FrozenConfig
from himari.data.bars import Bars
from himari.env.market import MarketData
from himari.env.sim import pre_fill_positions, step
from himari.errors import DataError
from himari.risk.budget import STRATEGY_RETURN_MEMORY
from himari.sizing.positioning import apply_cost_controls
from himari.trading.bundle import Bundle
from himari.trading.engine import (
    AccountSnapshot,
    Decision,
    DecisionEngine,
    account_from_state,
)

STATE_FORMAT = 1


class SessionConfig(FrozenConfig):
    initial_equity: float = 10_000.0
    history_bars: int = 3000  # bars of history on_bar builds the market from (paper trading, serving)
    incremental: bool = True  # on_bar folds each new bar into tactical streams (False: re-transform the history)


@dataclass(frozen=True)
class Fill:
    order_id: str  # deterministic: "SYMBOL:<decision timestamp ns>"
    timestamp_ns: int  # bar at whose open (or close) the order filled
    symbol: str
    side: str  # BUY / SELL
    quantity_change: float  # change of position, fraction of pre-trade equity (signed)
    price: float  # effective fill price (slippage included)
    fee: float  # in account currency
    slippage_cost: float  # in account currency

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "timestamp_ns": self.timestamp_ns,
            "symbol": self.symbol,
            "side": self.side,
            "quantity_change": self.quantity_change,
            "price": self.price,
            "fee": self.fee,
            "slippage_cost": self.slippage_cost,
        }


@dataclass
class BarOutcome:
    timestamp_ns: int
    decision: Decision
    fills: list[Fill] = field(default_factory=list)
    equity: float = 0.0  # at bar t's close, account currency
    positions: np.ndarray | None = None  # (A,) fractions of equity at t's close
    drawdown: float = 0.0
    log_return: float = 0.0  # equity log return over bar t (costs included)
    fee: float = 0.0
    slippage: float = 0.0
    turnover: float = 0.0  # sum |position change| filled at this bar, fraction of equity


def _to_jsonable(value: Any) -> Any:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return {"__tensor__": value.detach().cpu().numpy().tolist(), "dtype": str(value.dtype).replace("torch.", "")}
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, tuple | list):
        return {"__seq__": [_to_jsonable(v) for v in value], "tuple": isinstance(value, tuple)}
    if isinstance(value, dict):
        return {"__dict__": {k: _to_jsonable(v) for k, v in value.items()}}
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            import torch

            return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        if "__seq__" in value:
            items = [_from_jsonable(v) for v in value["__seq__"]]
            return tuple(items) if value.get("tuple") else items
        if "__dict__" in value:
            return {k: _from_jsonable(v) for k, v in value["__dict__"].items()}
    return value


class TradingSession:
    """Bar-by-bar trading with one bundle (see the module docstring)."""

    def __init__(self, bundle: Bundle, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        self.engine = DecisionEngine(bundle, history_bars=self.config.history_bars,
                                     incremental=self.config.incremental, cold_start="anchored")
        self.symbols = self.engine.symbols
        n = len(self.symbols)
        self.account = AccountSnapshot.flat(n, equity=1.0)  # equity tracked as a multiple of the initial equity
        self.policy_state: Any = self.engine.policy.initial_state(1)
        self.pending_target: np.ndarray | None = None
        self.pending_timestamp_ns: int | None = None
        self.last_timestamp_ns: int | None = None
        self.strategy_returns: deque[float] = deque(maxlen=STRATEGY_RETURN_MEMORY)

    @property
    def equity(self) -> float:
        return self.account.equity * self.config.initial_equity

    # -- the loop body -------------------------------------------------------------------------------------------
    def process(self, market: MarketData, t: int, data_age_bars: float = 0.0) -> BarOutcome:
        """Fill the pending order at bar ``t`` and decide for bar ``t`` (rows of ``market`` after t are unused)."""
        ts = int(market.timestamps_ns[t])
        if self.last_timestamp_ns is not None and ts <= self.last_timestamp_ns:
            raise DataError(f"bar {ts} is not after the last processed bar {self.last_timestamp_ns} (duplicate or unsorted feed)")
        fills: list[Fill] = []
        fee = slip = turnover = log_ret = 0.0
        if self.pending_target is not None and self.pending_timestamp_ns is not None:
            p = int(np.searchsorted(market.timestamps_ns, self.pending_timestamp_ns))
            if p >= market.num_bars or int(market.timestamps_ns[p]) != self.pending_timestamp_ns or p != t - 1:
                raise DataError(
                    "the bar after the last decision is missing from the feed (expected the bar following "
                    f"{self.pending_timestamp_ns}); bars must arrive in order without skipping"
                )
            state = self.engine.account_state(self.account, p, self.engine.exec_config)
            pre = pre_fill_positions(state, market, self.engine.exec_config)
            order = apply_cost_controls(
                self.pending_target[None, :], pre, self.account.time_in_position[None, :],
                np.array([self.pending_timestamp_ns]), market.timeframe.nanoseconds, self.engine.sizing_config,
            )
            new_state, _, info = step(state, order, market, self.engine.exec_config)
            scale = self.config.initial_equity  # info's money amounts are in units of the initial equity
            traded = info["traded"][0]
            fee = float(info["fee"][0]) * scale
            slip = float(info["slippage"][0]) * scale
            turnover = float(info["turnover"][0])
            total_traded = float(traded.sum())
            for a, symbol in enumerate(self.symbols):
                if traded[a] <= 0:
                    continue
                share = traded[a] / total_traded if total_traded > 0 else 0.0
                direction = np.sign(order[0, a] - pre[0, a])
                fills.append(
                    Fill(
                        order_id=f"{symbol}:{self.pending_timestamp_ns}",
                        timestamp_ns=ts,
                        symbol=symbol,
                        side="BUY" if direction > 0 else "SELL",
                        quantity_change=float(direction * traded[a]),
                        price=float(info["fill_price"][0, a]),
                        fee=fee * share,
                        slippage_cost=slip * share,
                    )
                )
            log_ret = float(info["log_return"][0])
            self.account = account_from_state(new_state)
            self.strategy_returns.append(log_ret)
        self.pending_target = None
        returns = np.asarray(self.strategy_returns, dtype=np.float64) if self.strategy_returns else None
        decision, self.policy_state = self.engine.decide_at(
            market, t, self.account, self.policy_state, returns, data_age_bars=data_age_bars
        )
        self.pending_target = decision.target_position.copy()
        self.pending_timestamp_ns = ts
        self.last_timestamp_ns = ts
        acct = self.account
        return BarOutcome(
            timestamp_ns=ts,
            decision=decision,
            fills=fills,
            equity=acct.equity * self.config.initial_equity,
            positions=acct.position.copy(),
            drawdown=1.0 - acct.equity / acct.peak_equity,
            log_return=log_ret,
            fee=fee,
            slippage=slip,
            turnover=turnover,
        )

    def on_bar(self, bars_by_symbol: Mapping[str, Bars] | Bars, data_age_bars: float = 0.0) -> BarOutcome:
        """Paper trading / live: ``bars_by_symbol`` holds history up to the newly closed bar (the last row)."""
        if isinstance(bars_by_symbol, Bars):
            bars_by_symbol = {self.symbols[0]: bars_by_symbol}
        market = self.engine.build_market(bars_by_symbol, self.config.history_bars)
        return self.process(market, market.num_bars - 1, data_age_bars=data_age_bars)

    # -- persistence ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        acct = self.account
        return {
            "format": STATE_FORMAT,
            "symbols": list(self.symbols),
            "model_id": self.engine.model_id,
            "account": {
                "equity": acct.equity,
                "peak_equity": acct.peak_equity,
                "position": acct.position.tolist(),
                "entry_price": acct.entry_price.tolist(),
                "time_in_position": [int(v) for v in acct.time_in_position],
            },
            "pending_target": None if self.pending_target is None else self.pending_target.tolist(),
            "pending_timestamp_ns": self.pending_timestamp_ns,
            "last_timestamp_ns": self.last_timestamp_ns,
            "strategy_returns": list(self.strategy_returns),
            "policy_state": _to_jsonable(self.policy_state),
            "manager": self.engine.manager.state_dict(),
        }

    def carry_state(self) -> dict[str, Any]:
        """The state a session of *another* model continues from (walk-forward model change): account, pending
        order, strategy returns and the sizing/risk state; not the policy's own recurrent state."""
        state = self.state_dict()
        state.pop("policy_state")
        return state

    def load_carry(self, state: dict[str, Any]) -> None:
        self.load_state_dict({**state, "policy_state": _to_jsonable(self.engine.policy.initial_state(1))})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise DataError(f"session state format {state.get('format')!r} is not supported")
        if tuple(state["symbols"]) != self.symbols:
            raise DataError(f"session state is for {state['symbols']}, this model trades {list(self.symbols)}")
        a = state["account"]
        self.account = AccountSnapshot(
            equity=float(a["equity"]),
            peak_equity=float(a["peak_equity"]),
            position=np.asarray(a["position"], dtype=np.float64),
            entry_price=np.asarray(a["entry_price"], dtype=np.float64),
            time_in_position=np.asarray(a["time_in_position"], dtype=np.int64),
        )
        pt = state["pending_target"]
        self.pending_target = None if pt is None else np.asarray(pt, dtype=np.float64)
        self.pending_timestamp_ns = state["pending_timestamp_ns"]
        self.last_timestamp_ns = state["last_timestamp_ns"]
        self.strategy_returns = deque(state["strategy_returns"], maxlen=STRATEGY_RETURN_MEMORY)
        self.policy_state = _from_jsonable(state["policy_state"])
        self.engine.manager.load_state_dict(state["manager"])
