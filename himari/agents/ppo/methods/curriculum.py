"""K1: three-stage curriculum over episode difficulty (easy -> medium -> hard).

Every valid episode start ``s`` of the training range gets a difficulty score, the mean over the episode's bars
``[s, s + L)`` of a per-bar measure (assets averaged): the trailing per-bar volatility (``MarketData.volatility``,
causal) or the regime posterior mass of HIGH_VOL + CRISIS. Starts are ranked by score; stage ``k`` draws episode
starts uniformly from the easiest ``stage_quantiles[k]`` of them. The stage is a pure function of the update index
(:func:`stage_at`), so a run resumed mid-curriculum continues the same schedule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from himari.agents.ppo.methods.base import TrainingMethod
from himari.agents.ppo.methods.config import CurriculumConfig
from himari.env.market import MarketData
from himari.env.sim import SimVecEnv, reset, start_range

HIGH_STRESS_REGIMES = (2, 3)  # HIGH_VOL, CRISIS in himari.env.protocol.REGIME_NAMES


class PooledSimVecEnv(SimVecEnv):
    """A training :class:`SimVecEnv` whose fresh episodes start at indices drawn uniformly (from its seeded ``rng``)
    from ``start_pool`` instead of the whole range; ``start_pool=None`` behaves exactly like :class:`SimVecEnv`."""

    start_pool: np.ndarray | None = None

    def set_pool(self, pool: np.ndarray | None) -> None:
        self.start_pool = None if pool is None else np.asarray(pool, dtype=np.int64)

    def _fresh(self, rows: np.ndarray | None = None) -> Any:
        if self.start_pool is None or self._starts is not None:
            return super()._fresh(rows)
        n = self.num_envs if rows is None else int(rows.size)
        starts = self.start_pool[self.rng.integers(0, self.start_pool.size, size=n)]
        return reset(self.market, self.config, n, self.rng, self.start_index, self.end_index, starts=starts)


def difficulty_scores(market: MarketData, measure: str, starts: np.ndarray, length: int) -> np.ndarray:
    """Mean per-bar difficulty over ``[s, s + length)`` for every start ``s`` (float64, same order as ``starts``)."""
    if measure == "volatility":
        per_bar = np.nan_to_num(market.volatility, nan=0.0).mean(axis=1)
    elif measure == "regime":
        per_bar = market.regime_posterior[:, :, list(HIGH_STRESS_REGIMES)].sum(axis=2).mean(axis=1).astype(np.float64)
    else:  # pragma: no cover - the config restricts it
        raise AssertionError(measure)
    csum = np.concatenate([[0.0], np.cumsum(per_bar)])
    return (csum[starts + length] - csum[starts]) / length


def stage_pools(market: MarketData, env: SimVecEnv, config: CurriculumConfig) -> list[np.ndarray]:
    """The start pools of the three stages (sorted indices; each contains the previous one)."""
    lo, hi = start_range(market, env.config, env.start_index, env.end_index, env.config.episode_length)
    starts = np.arange(lo, hi, dtype=np.int64)
    scores = difficulty_scores(market, config.measure, starts, env.config.episode_length)
    order = starts[np.argsort(scores, kind="stable")]
    return [np.sort(order[: max(1, round(q * order.size))]) for q in config.stage_quantiles]


def stage_at(update: int, num_updates: int, fractions: tuple[float, ...]) -> int:
    """Stage of update ``update`` (0-based) of ``num_updates``: stage k covers updates in
    ``[round(num_updates · F_{k-1}), round(num_updates · F_k))`` with F the cumulative ``fractions``."""
    edges = np.rint(np.cumsum(fractions) * num_updates)
    for k, edge in enumerate(edges):
        if update < edge:
            return k
    return len(fractions) - 1


class Curriculum(TrainingMethod):
    """Sets the pool of the training env at the start of every update (see the module docstring)."""

    name = "curriculum"

    def __init__(self, env: PooledSimVecEnv, config: CurriculumConfig) -> None:
        self.env = env
        self.config = config
        self.pools = stage_pools(env.market, env, config)
        self.stage = -1

    def start_update(self, trainer: Any, update: int) -> None:
        stage = stage_at(update, trainer.num_updates, self.config.stage_fractions)
        if stage != self.stage:
            self.stage = stage
            self.env.set_pool(self.pools[stage])

    def metrics(self) -> dict[str, float]:
        return {"curriculum_stage": float(self.stage)}
