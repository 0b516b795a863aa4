"""Per-decision cost of the sizing + risk stack on real bars (``himari risk bench``).

Runs the :class:`~himari.risk.manager.PositionManager` once per bar over bundled data with a seeded random discrete
policy, a simple equity loop (fill at t+1) and the default configs, and reports CPU microseconds per decision, with
and without the periodic EVT refits.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from himari.data.loaders import load_bars
from himari.risk.config import RiskConfig
from himari.risk.manager import PositionManager
from himari.sizing.context import DecisionContext, PolicySignal
from himari.sizing.sizer import SizingConfig
from himari.utils.seeding import make_rng

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def aligned_returns(symbols: tuple[str, ...], start: str, end: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """(T,) timestamps and (T, A) log returns on the union of timestamps (NaN where an asset has no bar)."""
    frames = [load_bars(s).between(start, end) for s in symbols]
    index = frames[0].frame.index
    for b in frames[1:]:
        index = index.union(b.frame.index)
    out = np.full((len(index), len(symbols)), np.nan)
    for a, b in enumerate(frames):
        pos = index.get_indexer(b.frame.index)
        out[pos, a] = b.log_returns()
    return index.asi8.astype(np.int64), out, frames[0].timeframe


def run_decisions(
    n_assets: int, bars: int, refit_every: int, seed: int = 0, history: int = 2000
) -> dict[str, float]:
    symbols = SYMBOLS[:n_assets]
    ts, returns, tf = aligned_returns(symbols, "2022-01-01", "2024-12-31")
    bars = min(bars, len(ts) - history - 1)
    rng = make_rng(seed)
    actions = rng.integers(-1, 2, (bars, n_assets)).astype(np.float64)
    posterior = np.tile(np.array([0.55, 0.25, 0.15, 0.05]), (n_assets, 1))
    manager = PositionManager(
        SizingConfig(), RiskConfig.parse(evt_refit_every_bars=refit_every), tuple(symbols)
    )
    equity, peak, position, strat = 1.0, 1.0, np.zeros(n_assets), np.full(bars, np.nan)
    elapsed = 0.0
    for i in range(bars):
        t = history + i
        ctx = DecisionContext(
            int(ts[t]),
            tf,
            returns[t - history + 1 : t + 1],
            posterior,
            equity,
            position,
            peak,
            strategy_returns=strat[max(0, i - 720) : i],
        )
        signal = PolicySignal("discrete", actions[i])
        start = time.process_time()
        decision = manager.decide(signal, ctx)
        elapsed += time.process_time() - start
        nxt = np.nan_to_num(np.expm1(returns[t + 1]))
        pnl = float(decision.target @ nxt)
        equity *= 1.0 + pnl
        strat[i] = np.log1p(pnl)
        peak = max(peak, equity)
        position = decision.target
    return {"decisions": float(bars), "us_per_decision": elapsed / bars * 1e6}


def bench(n_assets: int = 1, bars: int = 5000, seed: int = 0) -> dict[str, float]:
    run_decisions(n_assets, 20, 10**9, seed)  # warm-up: numba's first dispatch in the process is not a decision
    with_refit = run_decisions(n_assets, bars, RiskConfig().evt_refit_every_bars, seed)
    no_refit = run_decisions(n_assets, bars, 10**9, seed)
    return {
        "assets": float(n_assets),
        "decisions": with_refit["decisions"],
        "us_per_decision": with_refit["us_per_decision"],
        "us_per_decision_excluding_evt_refit": no_refit["us_per_decision"],
    }
