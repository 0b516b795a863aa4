"""Fixtures for report tests: a small real-data backtest of the baselines, with simple close-to-close accounting."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.bars import Bars
from himari.evaluation.baselines import baseline_positions, ma_crossover
from himari.evaluation.metrics import compute_metrics
from himari.evaluation.statistics import strategy_statistics
from himari.report.html import ReportData
from himari.utils.seeding import make_rng

FEE = 0.001  # 10 bps per unit of turnover


def simulate(close: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decision at t, held over bar t+1: ``r_{t+1} = p_t (c_{t+1}/c_t - 1) - fee |p_t - p_{t-1}|``.

    Returns (net_returns, held_positions, turnover, fees), each (T,), with bar 0 flat.
    """
    held = np.concatenate([[0.0], target[:-1]])
    bar_return = np.concatenate([[0.0], close[1:] / close[:-1] - 1.0])
    turnover = np.abs(np.diff(np.concatenate([[0.0], held])))
    fees = FEE * turnover
    return held * bar_return - fees, held, turnover, fees


@pytest.fixture(scope="session")
def report_data(btc_bars: Bars) -> ReportData:
    bars = btc_bars.between("2023-01-01", "2023-05-01")
    close = bars.close
    regimes = np.digitize(
        np.abs(np.log(close / np.concatenate([[close[0]] * 24, close[:-24]]))), [0.01, 0.02, 0.04]
    )
    targets = baseline_positions(close, "1h", seed=7, gap_before=bars.gap_before)
    baseline_returns, baseline_metrics = {}, {}
    for name, target in targets.items():
        r, pos, turn, fee = simulate(close, target)
        baseline_returns[name] = r
        baseline_metrics[name] = compute_metrics(r, pos, turn, fee, "1h")
    strategy_target = ma_crossover(close, 12, 48, allow_short=True)
    r, pos, turn, fee = simulate(close, strategy_target)
    metrics = compute_metrics(r, pos, turn, fee, "1h", regimes=regimes, benchmark=baseline_returns["buy_and_hold"])
    trials = np.array([metrics["sharpe"], 0.3, -0.5, 1.1])
    stats = strategy_statistics(r, 8760.0, make_rng(0), n_trials=4, trial_sharpes_annual=trials, n_boot=300,
                                returns_matrix=np.column_stack([r, *baseline_returns.values()]), pbo_splits=8)
    return ReportData(
        title="HIMARI backtest — BTCUSDT (test)",
        timeframe="1h",
        timestamps_ns=bars.timestamps_ns,
        close=close,
        strategy_returns=r,
        positions=pos,
        metrics=metrics,
        baseline_returns=baseline_returns,
        baseline_metrics=baseline_metrics,
        regimes=regimes,
        statistics=stats,
        windows=[{"window": i, "test": f"2023-0{i + 1}", "selected": "ma_12_48", "test_sharpe": 0.1 * i,
                  "test_return": 0.01 * i} for i in range(4)],
        stages={"base_ppo": {"validation_sharpe": 0.4, "steps": 20000}},
        run_info={"config_hash": "abc123", "seed": 7, "data": {"BTCUSDT": {"sha256": "f" * 64}},
                  "versions": {"himari": "0.1.0"}},
        asset_names=("BTCUSDT",),
    )
