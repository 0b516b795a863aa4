"""Deterministic evaluation of a decision function over a whole index range (validation scoring).

The range of decision bars is split into ``num_envs`` contiguous chunks (:meth:`SimVecEnv.for_evaluation`), each run
as one episode in parallel; every bar move in [start_index, end_index) is paid exactly once. Each chunk starts flat
with equity 1, so the stitched log return is the sum of the chunks' (one chunk = one continuous account).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from himari.env.market import MarketData
from himari.env.protocol import Observation
from himari.env.sim import SimConfig, SimVecEnv

# act(observation, episode_start) -> action (N, A); episode_start (N,) bool is True on each chunk's first decision
# (reset recurrent state there).
ActFn = Callable[[Observation, np.ndarray], np.ndarray]


class EvaluationResult(NamedTuple):
    bars: np.ndarray  # (S,) int64 bar index whose move each step paid (in time order)
    log_return: np.ndarray  # (S,) net log return of the account per step
    reward: np.ndarray  # (S,) configured reward per step
    position: np.ndarray  # (S, A) position after each step
    fee: np.ndarray  # (S,) fees paid (fraction of the chunk's equity units)
    turnover: np.ndarray  # (S,) sum |position change|
    terminated: bool  # some chunk hit the ruin threshold (its later bars are not traded)

    @property
    def total_log_return(self) -> float:
        return float(self.log_return.sum())


def evaluate(
    act: ActFn, market: MarketData, config: SimConfig, start_index: int, end_index: int, num_envs: int = 1
) -> EvaluationResult:
    """Run ``act`` over [start_index, end_index) deterministically and return per-bar results in time order."""
    env = SimVecEnv.for_evaluation(market, config, start_index, end_index, num_envs)
    obs = env.reset()
    lengths = env.state.length.copy()
    starts = env.state.start.copy()
    max_len = int(lengths.max())
    n, a = env.num_envs, env.num_assets
    bars = np.zeros((max_len, n), np.int64)
    logr = np.zeros((max_len, n))
    rew = np.zeros((max_len, n))
    pos = np.zeros((max_len, n, a))
    fee = np.zeros((max_len, n))
    turn = np.zeros((max_len, n))
    alive = np.ones(n, dtype=bool)  # chunk still running (not ruined, not past its length)
    episode_start = np.ones(n, dtype=bool)
    ruined = False
    for k in range(max_len):
        res = env.step(act(obs, episode_start))
        episode_start = np.zeros(n, dtype=bool)
        info = res.info
        keep = alive.copy()
        bars[k] = starts + k + 1
        logr[k] = np.where(keep, info["log_return"], 0.0)
        rew[k] = np.where(keep, res.reward, 0.0)
        pos[k] = np.where(keep[:, None], info["position"], 0.0)
        fee[k] = np.where(keep, info["fee"], 0.0)
        turn[k] = np.where(keep, info["turnover"], 0.0)
        ruined |= bool((res.terminated & keep).any())
        alive &= ~(res.terminated | res.truncated)
        obs = res.obs
    # per chunk, its own steps 0..length-1 (after a ruin the bars stay in the table with zero return and position)
    mask = np.arange(max_len)[None, :] < lengths[:, None]  # (N, S)
    bars_nk = bars.T[mask]
    order = np.argsort(bars_nk, kind="stable")

    def take(x: np.ndarray) -> np.ndarray:
        return np.swapaxes(x, 0, 1)[mask][order]

    return EvaluationResult(bars_nk[order], take(logr), take(rew), take(pos), take(fee), take(turn), ruined)
