"""The one decision path: features -> regime -> policy -> sizing -> risk, for backtests, paper trading and the API.

:class:`DecisionEngine` wraps a loaded :class:`~himari.trading.bundle.Bundle`. Given market data built from bars up to and
including the decision bar t (``build_market``), ``decide_at(market, t, account, policy_state)`` returns the
:class:`Decision` for bar t — the target position to fill at bar t+1 — and the new policy state. It never looks at
any row after t: the observation comes from :func:`himari.env.sim.observe` (bars t-W+1..t), the risk context from
trailing returns ending at t.

The backtester, the paper-trading loop and the API server all call this class (through
:class:`himari.trading.session.TradingSession` or :meth:`DecisionEngine.decide`), so what was evaluated is what runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from himari import __version__
from himari.data.bars import Bars
from himari.env.market import MarketData
from himari.env.protocol import ACTION_NAMES, REGIME_NAMES, Observation
from himari.env.rewards import initial_reward_state
from himari.env.sim import SimConfig, SimState, initial_stack_state, observe
from himari.errors import DataError
from himari.risk.config import RiskConfig
from himari.risk.manager import PositionManager
from himari.sizing.context import DecisionContext, PolicySignal, continuous_signal, delta_signal
from himari.sizing.positioning import discrete_directions
from himari.sizing.sizer import SizingConfig
from himari.trading.bundle import Bundle
from himari.trading.stream import ColdStart, MarketStream

# Trailing bars of returns handed to sizing/risk (EVT refits use up to 2000 bars).
RISK_LOOKBACK_BARS = 2000
# Bars a recurrent/context policy is run over before a stateless API decision (builds its hidden state).
RECURRENT_WARMUP_BARS = 128


@dataclass(frozen=True)
class AccountSnapshot:
    """Account state at a decision (positions as fractions of equity)."""

    equity: float
    peak_equity: float
    position: np.ndarray  # (A,)
    entry_price: np.ndarray  # (A,)
    time_in_position: np.ndarray  # (A,) bars

    @classmethod
    def flat(cls, n_assets: int, equity: float = 1.0) -> AccountSnapshot:
        return cls(equity, equity, np.zeros(n_assets), np.zeros(n_assets), np.zeros(n_assets, dtype=np.int64))


@dataclass
class Decision:
    """A decision for bar ``timestamp`` (its open time; the bar has closed). The target is filled at the next bar."""

    timestamp_ns: int
    symbols: tuple[str, ...]
    actions: tuple[str, ...]  # per asset: HOLD / LONG / SHORT (discrete) or TARGET / DELTA
    raw_action: np.ndarray  # (A,) the policy's action
    action_probs: np.ndarray | None  # (A, 3) for discrete policies
    proposal: np.ndarray  # (A,) sizing proposal
    target_position: np.ndarray  # (A,) after risk gates (fraction of equity)
    regime_posterior: np.ndarray  # (A, 4)
    gates: list[dict[str, Any]]
    binding: tuple[str, ...]
    reasons: list[str]
    model_id: str
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def regimes(self) -> tuple[str, ...]:
        return tuple(REGIME_NAMES[int(i)] for i in self.regime_posterior.argmax(axis=1))

    @property
    def confidence(self) -> tuple[float, ...]:
        """Probability of the chosen discrete action (policy's own), else the regime posterior's max."""
        if self.action_probs is not None:
            idx = np.clip(self.raw_action.astype(int), 0, 2)
            return tuple(float(self.action_probs[a, idx[a]]) for a in range(len(idx)))
        return tuple(float(v) for v in self.regime_posterior.max(axis=1))

    def to_dict(self) -> dict[str, Any]:
        import pandas as pd

        return {
            "timestamp": pd.Timestamp(self.timestamp_ns, tz="UTC").isoformat().replace("+00:00", "Z"),
            "symbols": list(self.symbols),
            "actions": list(self.actions),
            "action_probs": None if self.action_probs is None else self.action_probs.round(6).tolist(),
            "proposal": [float(v) if np.isfinite(v) else None for v in self.proposal],
            "target_position": [float(v) for v in self.target_position],
            "regime": list(self.regimes),
            "regime_posterior": self.regime_posterior.round(6).tolist(),
            "confidence": list(self.confidence),
            "gates": self.gates,
            "binding_gate": list(self.binding),
            "reasons": self.reasons,
            "model_id": self.model_id,
            "model_version": __version__,
            "latency_ms": round(self.latency_ms, 3),
        }


def sim_state_from_account(
    account: AccountSnapshot, t: int, config: SimConfig | None = None, template: SimState | None = None
) -> SimState:
    """A one-episode :class:`SimState` at decision bar ``t`` holding ``account``.

    ``template``: a state this function returned before for the same config; its fresh stack and reward state
    (never written in place by ``observe`` or ``step``) are shared instead of allocated again (one per bar in a
    backtest)."""
    a = len(account.position)
    if template is not None:
        return template._replace(
            t=np.array([t], dtype=np.int64),
            equity=np.array([account.equity], dtype=np.float64),
            peak_equity=np.array([account.peak_equity], dtype=np.float64),
            position=np.asarray(account.position, dtype=np.float64).reshape(1, a),
            entry_price=np.asarray(account.entry_price, dtype=np.float64).reshape(1, a),
            time_in_position=np.asarray(account.time_in_position, dtype=np.int64).reshape(1, a),
        )
    return SimState(
        t=np.array([t], dtype=np.int64),
        start=np.array([t], dtype=np.int64),
        length=np.array([1 << 40], dtype=np.int64),
        steps=np.zeros(1, dtype=np.int64),
        equity=np.array([account.equity], dtype=np.float64),
        peak_equity=np.array([account.peak_equity], dtype=np.float64),
        position=np.asarray(account.position, dtype=np.float64).reshape(1, a),
        entry_price=np.asarray(account.entry_price, dtype=np.float64).reshape(1, a),
        time_in_position=np.asarray(account.time_in_position, dtype=np.int64).reshape(1, a),
        stack=initial_stack_state(1, a, (config or SimConfig())),
        reward=initial_reward_state(1, (config or SimConfig()).reward),
    )


def account_from_state(state: SimState) -> AccountSnapshot:
    return AccountSnapshot(
        equity=float(state.equity[0]),
        peak_equity=float(state.peak_equity[0]),
        position=state.position[0].copy(),
        entry_price=state.entry_price[0].copy(),
        time_in_position=state.time_in_position[0].copy(),
    )


class DecisionEngine:
    """Decides for one bar from a bundle: the shared core of backtest, paper trading and serving."""

    def __init__(self, bundle: Bundle, history_bars: int = 3000, incremental: bool = True,
                 cold_start: ColdStart = "batch") -> None:
        self.bundle = bundle
        self.symbols = tuple(bundle.symbols)
        self.policy = bundle.policy
        self.policy_config = SimConfig.parse(bundle.sim_config)
        # Execution of approved targets: the same simulator step, fed continuous targets (risk already capped them).
        self.exec_config = self.policy_config.execution()
        # The positioning layer and risk gates the policy was trained with (SimConfig.sizing / .risk) are the ones
        # that trade it; bundles of policies trained without them carry their own sizing/risk configs.
        sizing = self.policy_config.sizing or SizingConfig.parse(bundle.sizing_config or {})
        risk = self.policy_config.risk or RiskConfig.parse(bundle.risk_config or {})
        self.manager = PositionManager(sizing, risk, self.symbols)
        # trailing bars handed to sizing/risk: every window they read, and the EVT window before its scheduled fit
        self.risk_lookback_bars = max(
            RISK_LOOKBACK_BARS, risk.evt_window_bars + risk.evt_refit_every_bars, risk.cov_window_bars,
            risk.portfolio_var_window_bars, sizing.vol_lookback_bars,
        )
        self.history_bars = int(history_bars)
        self.model_id = bundle.model_id
        # trailing-history markets (paper trading, the API) fold each new bar into per-symbol tactical streams
        # instead of re-transforming the history (himari.trading.stream); ``cold_start`` says what a history that
        # does not continue the kept one gets: an anchored rebuild (sessions) or a batch transform (the API)
        self.incremental = bool(incremental)
        self.cold_start: ColdStart = cold_start
        self._streams: dict[int, MarketStream] = {}
        self._state_templates: dict[int, SimState] = {}
        # bars a streamed market holds: every trailing window a decision and its fill read (risk returns, σ, the
        # observation, volatility), plus the first row whose return is undefined
        self.market_bars = self.risk_lookback_bars + max(self.policy_config.window, sizing.vol_lookback_bars,
                                                         MarketData.vol_window) + 2

    @property
    def sizing_config(self) -> SizingConfig:
        return self.manager.sizing_config

    def reset_streams(self) -> None:
        """Forget the tactical streams (after a self-check on synthetic bars, before serving real ones)."""
        self._streams.clear()

    def account_state(self, account: AccountSnapshot, t: int, config: SimConfig) -> SimState:
        """:func:`sim_state_from_account` with this engine's cached fresh stack/reward state for ``config`` (the
        policy's or the execution config)."""
        template = self._state_templates.get(id(config))
        state = sim_state_from_account(account, t, config, template)
        if template is None:
            self._state_templates[id(config)] = state
        return state

    # -- market data ------------------------------------------------------------------------------------------
    def build_market(self, bars_by_symbol: Mapping[str, Bars], history_bars: int | None = None,
                     eval_start: object = None) -> MarketData:
        """Transform bars (through each symbol's fitted tactical pipeline) into MarketData.

        ``history_bars`` keeps only the trailing bars (paper trading / serving); None keeps everything (backtests).
        With trailing bars (and ``incremental``), the tactical rows come from :class:`MarketStream` (one new bar:
        one stream update) rather than from a transform of the whole trailing history.
        ``eval_start``: the first bar whose decisions are claimed out of sample; a tactical pipeline fitted on data
        after it raises :class:`~himari.errors.LeakageError` (walk-forward test periods pass it always).
        """
        missing = [s for s in self.symbols if s not in bars_by_symbol]
        if missing:
            raise DataError(f"no bars for {', '.join(missing)} (the model trades {', '.join(self.symbols)})")
        bars_list = []
        frames = []
        for symbol in self.symbols:
            bars = bars_by_symbol[symbol]
            if history_bars is not None and len(bars) > history_bars:
                bars = bars.with_frame(bars.frame.iloc[-history_bars:])
            if len(bars) < self.policy_config.window + 1:
                raise DataError(
                    f"{symbol}: {len(bars)} bars given; at least {self.policy_config.window + 1} are needed "
                    f"(warm-up of features needs more: send >= {self.history_bars})"
                )
            bars_list.append(bars)
        if history_bars is not None and eval_start is None and self.incremental:
            stream = self._streams.get(int(history_bars))
            if stream is None:
                stream = self._streams.setdefault(
                    int(history_bars), MarketStream(self.bundle.tactical, self.symbols, int(history_bars))
                )
            market = stream.market(dict(zip(self.symbols, bars_list, strict=True)), self.cold_start,
                                   market_bars=self.market_bars)
            if market is not None:
                return market
        for symbol, bars in zip(self.symbols, bars_list, strict=True):
            frames.append(self.bundle.tactical[symbol].transform(bars, eval_start=eval_start))
        return MarketData.from_frames(bars_list, frames, join="union")

    # -- one decision -----------------------------------------------------------------------------------------
    def _signal(self, action: np.ndarray, probs: np.ndarray | None, position: np.ndarray,
                direction_action: np.ndarray | None = None) -> PolicySignal:
        kind = self.policy.action_kind
        if direction_action is not None:  # a stacked policy: the L2 codes give the delta's base direction
            cfg = self.policy_config
            direction = discrete_directions(direction_action, position, cfg.hold_mode, cfg.allow_short)
            return delta_signal(np.asarray(action, dtype=np.float64), direction)
        if kind == "discrete":
            cfg = self.policy_config
            direction = discrete_directions(np.asarray(action), position, cfg.hold_mode, cfg.allow_short)
            return PolicySignal("discrete", direction, None if probs is None else np.asarray(probs, float))
        if kind == "continuous":
            return continuous_signal(np.asarray(action, dtype=np.float64))
        return delta_signal(np.asarray(action, dtype=np.float64))

    def context(self, market: MarketData, t: int, account: AccountSnapshot, strategy_returns: np.ndarray | None,
                data_age_bars: float = 0.0, is_stale: bool = False) -> DecisionContext:
        lo = max(0, t - self.risk_lookback_bars + 1)
        returns = market.risk_returns[lo : t + 1]
        stamps = market.timestamps_ns[lo : t + 1]
        return DecisionContext(
            timestamp_ns=int(market.timestamps_ns[t]),
            timeframe=market.timeframe,
            returns=returns,
            regime_posterior=market.regime_posterior[t].astype(np.float64),
            equity=account.equity,
            position=np.asarray(account.position, dtype=np.float64),
            peak_equity=account.peak_equity,
            data_age_bars=data_age_bars,
            is_stale=is_stale,
            strategy_returns=strategy_returns,
            returns_timestamps_ns=stamps,
        )

    def observation(self, market: MarketData, t: int, account: AccountSnapshot) -> Observation:
        if t < self.policy_config.window - 1:
            raise DataError(f"decision bar {t} has fewer than window={self.policy_config.window} bars of history")
        return observe(self.account_state(account, t, self.policy_config), market, self.policy_config)

    def decide_at(
        self,
        market: MarketData,
        t: int,
        account: AccountSnapshot,
        policy_state: Any,
        strategy_returns: np.ndarray | None = None,
        data_age_bars: float = 0.0,
        is_stale: bool = False,
    ) -> tuple[Decision, Any]:
        """The decision for bar ``t`` of ``market`` (rows after t are never read)."""
        started = time.perf_counter()
        obs = self.observation(market, t, account)
        out, policy_state = self.policy.act(obs, policy_state, deterministic=True)
        action = np.asarray(out.action)[0]
        probs = None if out.action_probs is None or self.policy.action_kind != "discrete" else np.asarray(out.action_probs)[0]
        direction_action = getattr(out, "direction_action", None)
        signal = self._signal(action, probs, np.asarray(account.position),
                              None if direction_action is None else np.asarray(direction_action)[0])
        ctx = self.context(market, t, account, strategy_returns, data_age_bars, is_stale)
        rd = self.manager.decide(signal, ctx)
        target = np.asarray(rd.target, dtype=np.float64).copy()
        reasons = rd.reasons()
        # Per asset: where the features are not valid (warm-up, a gap inside the window, not listed yet) the
        # position follows the simulator's invalid_policy (flat by default), exactly as in training and execution.
        invalid = ~np.asarray(market.valid[t], dtype=bool)
        if invalid.any():
            keep = self.policy_config.invalid_policy == "keep"
            target[invalid] = np.asarray(account.position, dtype=np.float64)[invalid] if keep else 0.0
            names_invalid = ", ".join(s for s, bad in zip(self.symbols, invalid, strict=True) if bad)
            reasons.append(f"features invalid for {names_invalid} (warm-up or gap in the window): "
                           f"{'position kept' if keep else 'flat'}")
        if self.policy.action_kind == "discrete":
            names = tuple(ACTION_NAMES[int(a)] for a in action)
        else:
            names = tuple("TARGET" if self.policy.action_kind == "continuous" else "DELTA" for _ in action)
        decision = Decision(
            timestamp_ns=int(market.timestamps_ns[t]),
            symbols=self.symbols,
            actions=names,
            raw_action=np.asarray(action),
            action_probs=probs,
            proposal=np.asarray(rd.proposal, dtype=np.float64),
            target_position=target,
            regime_posterior=market.regime_posterior[t].astype(np.float64),
            gates=[g.to_dict() for g in rd.gates],
            binding=tuple(rd.binding),
            reasons=reasons,
            model_id=self.model_id,
            latency_ms=(time.perf_counter() - started) * 1e3,
        )
        return decision, policy_state

    def decide(self, bars_by_symbol: Mapping[str, Bars] | Bars, account: AccountSnapshot | None = None) -> Decision:
        """Stateless convenience for the API: decide for the last bar of the given history.

        The sizing/risk state (hysteresis, drawdown brake, budget) is this engine's own and advances with each call.
        Recurrent and context policies (LSTM, transformer, DT) are warmed up by running them over the preceding
        ``RECURRENT_WARMUP_BARS`` bars (policy only, same account) before deciding for the last bar.
        """
        started = time.perf_counter()
        if isinstance(bars_by_symbol, Bars):
            bars_by_symbol = {self.symbols[0]: bars_by_symbol}
        market = self.build_market(bars_by_symbol, self.history_bars)
        acct = account or AccountSnapshot.flat(len(self.symbols))
        t = market.num_bars - 1
        state = self.policy.initial_state(1)
        if state is not None:
            for w in range(max(self.policy_config.window - 1, t - RECURRENT_WARMUP_BARS), t):
                _, state = self.policy.act(self.observation(market, w, acct), state, deterministic=True)
        decision, _ = self.decide_at(market, t, acct, state)
        decision.latency_ms = (time.perf_counter() - started) * 1e3
        return decision
