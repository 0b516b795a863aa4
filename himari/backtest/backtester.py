"""Backtests through the one code path, with baselines on the same data, costs and period.

``run_backtest(bundle, bars_by_symbol, start, end)`` builds market data from bars with timestamps < ``end`` (bars
before ``start`` are warm-up history only: features, normalizers and regimes stay as fitted in the bundle) and runs a
:class:`~himari.trading.session.TradingSession` bar by bar from ``start``: the decision at bar t is filled at bar
t+1 by the simulator's step kernel, with fees and slippage.

The baselines (buy-and-hold, volatility-targeted buy-and-hold, MA crossover, seeded random) are causal target
position series executed by the same step kernel over the same bars (:func:`simulate_targets`).

Per-bar arrays of a :class:`BacktestResult` cover the bars whose move a decision paid: bar t0+1 .. t1-1 for decisions
at t0 .. t1-2 (the last decision has no next bar to fill in the range).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from himari.data.bars import Bars, to_utc_timestamp
from himari.env.market import MarketData
from himari.env.rewards import initial_reward_state
from himari.env.sim import SimConfig, SimState, initial_stack_state, pre_fill_positions, step
from himari.errors import DataError
from himari.evaluation.baselines import baseline_positions
from himari.evaluation.metrics import compute_metrics
from himari.evaluation.statistics import strategy_statistics
from himari.evaluation.verdict import make_verdict
from himari.sizing.positioning import apply_rebalance_band
from himari.trading.bundle import Bundle
from himari.trading.session import SessionConfig, TradingSession
from himari.utils.progress import progress_bar
from himari.utils.seeding import make_rng


@dataclass
class PathResult:
    """Per-bar results of one position path (strategy or baseline) over the evaluated bars."""

    net_returns: np.ndarray  # (n,) simple returns per bar after costs
    positions: np.ndarray  # (n, A) at each bar's close
    turnover: np.ndarray  # (n,) traded notional / equity
    fees: np.ndarray  # (n,) fees + slippage as a fraction of equity

    def concat(self, other: PathResult) -> PathResult:
        return PathResult(
            np.concatenate([self.net_returns, other.net_returns]),
            np.concatenate([self.positions, other.positions]),
            np.concatenate([self.turnover, other.turnover]),
            np.concatenate([self.fees, other.fees]),
        )


@dataclass
class BacktestResult:
    symbols: tuple[str, ...]
    timeframe: str
    timestamps_ns: np.ndarray  # (n,) bars whose move is paid
    close: np.ndarray  # (n, A)
    strategy: PathResult
    actions: np.ndarray | None  # (n, A) HOLD/LONG/SHORT codes of the decision in force, discrete policies only
    regimes: np.ndarray  # (n,) regime code of the decision in force (argmax of the posterior, first asset)
    baselines: dict[str, PathResult]
    decisions: list[dict[str, Any]] = field(default_factory=list)  # compact decision log
    fills: list[dict[str, Any]] = field(default_factory=list)
    carry: dict[str, Any] | None = None  # session state at the end (for the next walk-forward period)

    def concat(self, other: BacktestResult) -> BacktestResult:
        """Stitch a later period (walk-forward test months) after this one."""
        return BacktestResult(
            symbols=self.symbols,
            timeframe=self.timeframe,
            timestamps_ns=np.concatenate([self.timestamps_ns, other.timestamps_ns]),
            close=np.concatenate([self.close, other.close]),
            strategy=self.strategy.concat(other.strategy),
            actions=None if self.actions is None or other.actions is None else np.concatenate([self.actions, other.actions]),
            regimes=np.concatenate([self.regimes, other.regimes]),
            baselines={k: v.concat(other.baselines[k]) for k, v in self.baselines.items() if k in other.baselines},
            decisions=self.decisions + other.decisions,
            fills=self.fills + other.fills,
            carry=other.carry,
        )


def simulate_targets(
    market: MarketData, targets: np.ndarray, t0: int, t1: int, config: SimConfig, rebalance_band: float = 0.0
) -> list[PathResult]:
    """Execute K target-position paths (K, T, A) decided at bars t0..t1-2 through the simulator's step kernel
    (with the same rebalance band as the strategy's session).

    Returns one :class:`PathResult` per path over bars t0+1..t1-1. Decisions only use ``targets[:, t]``.
    """
    k, _, a = targets.shape
    state = SimState(
        t=np.full(k, t0, dtype=np.int64),
        start=np.full(k, t0, dtype=np.int64),
        length=np.full(k, 1 << 40, dtype=np.int64),
        steps=np.zeros(k, dtype=np.int64),
        equity=np.ones(k),
        peak_equity=np.ones(k),
        position=np.zeros((k, a)),
        entry_price=np.zeros((k, a)),
        time_in_position=np.zeros((k, a), dtype=np.int64),
        stack=initial_stack_state(k, a, config),
        reward=initial_reward_state(k, config.reward),
    )
    n = t1 - 1 - t0
    rets = np.zeros((k, n))
    pos = np.zeros((k, n, a))
    turn = np.zeros((k, n))
    fees = np.zeros((k, n))
    for i, t in enumerate(range(t0, t1 - 1)):
        equity_before = state.equity
        order = apply_rebalance_band(targets[:, t, :], pre_fill_positions(state, market, config), rebalance_band)
        state, _, info = step(state, order, market, config)
        rets[:, i] = info["equity"] / equity_before - 1.0
        pos[:, i] = info["position"]
        turn[:, i] = info["turnover"]
        fees[:, i] = (info["fee"] + info["slippage"]) / equity_before
    return [PathResult(rets[j], pos[j], turn[j], fees[j]) for j in range(k)]


def baseline_targets(market: MarketData, seed: int, max_position: float = 1.0, target_vol_annual: float = 0.5) -> dict[str, np.ndarray]:
    """Causal baseline targets (T, A) per baseline: each asset gets 1/A of the single-asset baseline."""
    a = market.num_assets
    out: dict[str, list[np.ndarray]] = {}
    gap = np.zeros(market.num_bars, dtype=bool)
    gap[1:] = np.diff(market.timestamps_ns) != market.timeframe.nanoseconds
    for j in range(a):
        paths = baseline_positions(
            market.mark_close[:, j], market.timeframe, seed + j, max_position=max_position, gap_before=gap,
            target_vol_annual=target_vol_annual,
        )
        for name, p in paths.items():
            p = np.where(market.present[:, j], p, 0.0)
            out.setdefault(name, []).append(p / a)
    return {name: np.stack(cols, axis=1) for name, cols in out.items()}


def _index_range(market: MarketData, start: object, end: object) -> tuple[int, int]:
    t0 = market.index_of(start) if start is not None else 0
    t1 = market.index_of(end) if end is not None else market.num_bars
    if t1 - t0 < 3:
        raise DataError(f"backtest range [{start}, {end}) holds {max(0, t1 - t0)} bars; need at least 3")
    return t0, t1


def run_backtest(
    bundle: Bundle,
    bars_by_symbol: Mapping[str, Bars],
    start: object = None,
    end: object = None,
    seed: int = 0,
    session_config: SessionConfig | None = None,
    keep_log: bool = True,
    show_progress: bool = True,
    market: MarketData | None = None,
    carry: dict[str, Any] | None = None,
    with_baselines: bool = True,
) -> BacktestResult:
    """Run the bundle over [start, end) with warm-up history before ``start`` (see the module docstring).

    ``market``: MarketData already built by this bundle's tactical pipelines from the same bars (< end), to share
    one transform between several policies with the same pipelines (walk-forward candidates).
    ``carry``: :meth:`TradingSession.carry_state` of the session that traded the bars just before ``start`` (the
    previous walk-forward window): the account, its pending order and the risk state continue, so positions held
    across a model change are neither closed for free nor bought again. The result then also covers bar t0 (where
    that pending order fills). ``BacktestResult.carry`` holds the state at the end for the next period.
    """
    end_ts = to_utc_timestamp(end) if end is not None else None  # type: ignore[arg-type]
    session = TradingSession(bundle, session_config or SessionConfig())
    if market is None:
        trimmed = {s: (b.between(None, end_ts) if end_ts is not None else b) for s, b in bars_by_symbol.items()}
        market = session.engine.build_market(trimmed)
    elif end_ts is not None and market.num_bars and market.timestamps_ns[-1] >= end_ts.value:
        raise DataError("the market passed to run_backtest holds bars at or after the backtest end")
    t0, t1 = _index_range(market, start, end)
    t0 = max(t0, session.engine.policy_config.window - 1)
    prev_decision: Any = None
    if carry is not None:
        session.load_carry(carry)
    first = t0 if carry is not None else t0 + 1  # first bar whose move a decision pays
    a = market.num_assets
    n = t1 - first
    rets = np.zeros(n)
    pos = np.zeros((n, a))
    turn = np.zeros(n)
    fees = np.zeros(n)
    discrete = session.engine.policy.action_kind == "discrete"
    acts = np.zeros((n, a), dtype=np.int64) if discrete else None
    regimes = np.zeros(n, dtype=np.int64)
    decisions: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    prev_equity = session.equity
    last_action = None if carry is None else carry.get("last_action", np.zeros(a))
    prev_action = None if last_action is None or not discrete else np.asarray(last_action, dtype=np.int64)
    prev_regime = None if carry is None else int(carry.get("last_regime", -1))
    with progress_bar("backtest", total=t1 - t0, enabled=None if show_progress else False) as bar:
        for t in range(t0, t1):
            out = session.process(market, t)
            if t >= first:
                i = t - first
                base = prev_equity if prev_equity > 0 else math.nan  # ruined account: no return, not ZeroDivisionError
                rets[i] = out.equity / base - 1.0
                pos[i] = out.positions
                turn[i] = out.turnover
                fees[i] = (out.fee + out.slippage) / base
                if acts is not None and prev_action is not None:
                    acts[i] = prev_action
                regimes[i] = -1 if prev_regime is None else prev_regime
                if keep_log:
                    fills.extend(f.to_dict() for f in out.fills)
            prev_equity = out.equity
            prev_decision = out.decision
            prev_action = prev_decision.raw_action.astype(np.int64) if discrete else None
            prev_regime = int(prev_decision.regime_posterior[0].argmax())
            if keep_log:
                d = out.decision
                decisions.append(
                    {
                        "timestamp_ns": d.timestamp_ns,
                        "actions": "|".join(d.actions),
                        "target": "|".join(f"{v:.6f}" for v in d.target_position),
                        "proposal": "|".join(f"{v:.6f}" for v in d.proposal),
                        "regime": "|".join(d.regimes),
                        "binding_gate": "|".join(d.binding),
                        "reasons": "; ".join(d.reasons),
                        "equity": out.equity,
                    }
                )
            bar.advance(1)
    baselines: dict[str, PathResult] = {}
    if with_baselines:
        exec_cfg = session.engine.exec_config
        # The vol-targeted baseline aims at the same annualized volatility as the strategy's own sizing.
        target_vol = session.engine.manager.sizing_config.target_vol_annual
        base_t = baseline_targets(market, seed, target_vol_annual=target_vol)
        names = list(base_t)
        paths = simulate_targets(
            market, np.stack([base_t[k] for k in names]), first - 1, t1, exec_cfg, session.engine.sizing_config.rebalance_band
        )
        baselines = dict(zip(names, paths, strict=True))
    end_carry = session.carry_state()
    end_carry["last_action"] = None if prev_action is None else prev_action.tolist()
    end_carry["last_regime"] = prev_regime
    return BacktestResult(
        symbols=tuple(market.symbols),
        timeframe=str(market.timeframe),
        timestamps_ns=market.timestamps_ns[first:t1].copy(),
        close=market.mark_close[first:t1].copy(),
        strategy=PathResult(rets, pos, turn, fees),
        actions=acts,
        regimes=regimes,
        baselines=baselines,
        decisions=decisions,
        fills=fills,
        carry=end_carry,
    )


def baseline_results(
    bars_by_symbol: Mapping[str, Bars], start: object, end: object, sim_config: Mapping[str, Any] | SimConfig,
    seed: int = 0, target_vol_annual: float = 0.40, rebalance_band: float = 0.05, warmup_bars: int = 1000,
) -> tuple[np.ndarray, dict[str, PathResult]]:
    """The baselines alone over [start, end) (e.g. a stitched walk-forward span), through the same execution.

    Returns (timestamps of the paid bars, {name: PathResult}) covering bars t0+1 .. t1-1.
    """
    import pandas as pd

    cfg = (sim_config if isinstance(sim_config, SimConfig) else SimConfig.parse(dict(sim_config))).execution()
    bars_list = []
    for b in bars_by_symbol.values():
        lo = to_utc_timestamp(start) - pd.Timedelta(seconds=b.timeframe.seconds * warmup_bars)  # type: ignore[arg-type, operator]
        bars_list.append(b.between(lo, end))
    market = MarketData.from_frames(bars_list, None)
    # Baselines see prices only: every bar with a price is a valid decision bar for them.
    market = MarketData.from_arrays(
        market.timestamps_ns, market.open, market.high, market.low, market.close, valid=market.present,
        symbols=market.symbols, timeframe=market.timeframe, vol_window=market.vol_window,
    )
    t0, t1 = _index_range(market, start, end)
    base_t = baseline_targets(market, seed, target_vol_annual=target_vol_annual)
    names = list(base_t)
    paths = simulate_targets(market, np.stack([base_t[k] for k in names]), t0, t1, cfg, rebalance_band)
    return market.timestamps_ns[t0 + 1 : t1].copy(), dict(zip(names, paths, strict=True))


def evaluate(
    result: BacktestResult,
    seed: int = 0,
    n_trials: int = 1,
    trial_sharpes_annual: np.ndarray | None = None,
    returns_matrix: np.ndarray | None = None,
) -> dict[str, Any]:
    """``metrics.json`` content: strategy metrics, ``baselines``, ``statistics`` and a plain-language ``verdict``."""
    from himari.data.timeframe import Timeframe

    tf = Timeframe.parse(result.timeframe)
    s = result.strategy
    bench = result.baselines.get("buy_and_hold")
    metrics = compute_metrics(
        s.net_returns, s.positions, s.turnover, s.fees, tf, regimes=result.regimes, actions=result.actions,
        benchmark=None if bench is None else bench.net_returns,
    )
    baselines = {
        name: compute_metrics(p.net_returns, p.positions, p.turnover, p.fees, tf) for name, p in result.baselines.items()
    }
    stats = strategy_statistics(
        s.net_returns, tf.periods_per_year, make_rng(seed), n_trials=n_trials,
        trial_sharpes_annual=trial_sharpes_annual, returns_matrix=returns_matrix,
    )
    verdict = make_verdict(
        metrics, baselines, sharpe_ci=(stats["sharpe_ci_low"], stats["sharpe_ci_high"]),  # type: ignore[arg-type]
        dsr=stats["dsr"], n_trials=n_trials, pbo=stats.get("pbo"),  # type: ignore[arg-type]
    )
    import pandas as pd

    metrics["period"] = {
        "start": pd.Timestamp(int(result.timestamps_ns[0]), tz="UTC").isoformat(),
        "end": pd.Timestamp(int(result.timestamps_ns[-1]), tz="UTC").isoformat(),
        "n_bars": len(result.timestamps_ns),
        "symbols": list(result.symbols),
    }
    metrics["baselines"] = baselines
    metrics["statistics"] = stats
    metrics["verdict"] = verdict.text
    metrics["edge_claimed"] = bool(verdict.edge)
    metrics["best_baseline"] = verdict.best_baseline
    return metrics
