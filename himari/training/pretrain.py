"""Synthetic pre-training on the seeds' stress batch, before the first real walk-forward window.

The batch is :func:`himari.data.synth.generate_batch` with the seeds' family mix (40% mixed, 20% crash, 20% bear,
10% vol-cluster, 10% bull) and 500 scenarios by default. The scenarios are shuffled (seeded) and **chained end to
end** into one price series per asset: scenario k+1 is rescaled to open where scenario k closed, so the series is
continuous and every feature stays causal; a scenario boundary looks like a regime switch. The series is seen through
the first window's *fitted* tactical pipeline (normalizers and regime model fitted on real training bars only), so
features and regimes mean what they mean on real data, and the policy is trained on it with the same simulator,
costs, positioning and risk as on real data.

Whether it helps is measured, not assumed: walk-forward trains window 0 both from the pre-trained weights and from
scratch (same seeds) and keeps the one with the better validation Sharpe, recording both
(:func:`himari.backtest.wfo.fit_window`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from himari.config import FrozenConfig
from himari.data.bars import Bars
from himari.env.market import MarketData
from himari.errors import ConfigError
from himari.tactical.pipeline import TacticalPipeline


def _seeds_mix() -> dict[str, float]:
    return {"mixed": 0.4, "crash": 0.2, "bear": 0.2, "vol_cluster": 0.1, "bull": 0.1}


class PretrainConfig(FrozenConfig):
    """Synthetic stress-batch pre-training (off unless ``steps`` > 0)."""

    steps: int = Field(0, ge=0, description="PPO steps on the stress batch before the first window (0: off; the "
                       "seeds used 500k); a stack trains each layer this long")
    n_scenarios: int = Field(500, ge=1, le=100_000, description="scenarios in the batch (the seeds: 500)")
    bars_per_scenario: int = Field(500, ge=50, le=100_000)
    mix: dict[str, float] = Field(default_factory=_seeds_mix, description="scenario family weights")
    compare_scratch: bool = Field(True, description="train window 0 from scratch too; keep the better on validation")


def stress_series(config: PretrainConfig, seed: int, n_assets: int = 1) -> list[Bars]:
    """One chained price series per asset from a stress batch of ``config.n_scenarios`` scenarios per asset."""
    from himari.data.synth import SynthConfig, generate_batch
    from himari.utils.seeding import make_rng

    total = config.n_scenarios * n_assets
    try:
        synth = SynthConfig(n_scenarios=total, n_bars=config.bars_per_scenario, mix=config.mix)
    except ConfigError as exc:
        raise ConfigError(f"pretrain: {exc}") from None
    batch = generate_batch(synth, seed=seed)
    order = make_rng(seed).permutation(total)  # families are generated in blocks: interleave them
    step_ns = int(np.diff(batch.timestamps_ns[:2])[0]) if batch.n_bars > 1 else 3_600_000_000_000
    out = []
    for a in range(n_assets):
        idx = order[a * config.n_scenarios:(a + 1) * config.n_scenarios]
        first_open = batch.open[idx, 0]
        last_close = batch.close[idx, -1]
        # scenario k is rescaled by the chain's close before it over the scenario's own opening price
        scale = np.concatenate([[1.0], np.cumprod(last_close[:-1] / first_open[1:])]) if len(idx) > 1 else np.ones(1)
        s = scale[:, None]
        n = len(idx) * batch.n_bars
        ts = int(batch.timestamps_ns[0]) + step_ns * np.arange(n, dtype=np.int64)
        out.append(Bars.from_arrays(
            ts.astype("datetime64[ns]"), (batch.open[idx] * s).ravel(), (batch.high[idx] * s).ravel(),
            (batch.low[idx] * s).ravel(), (batch.close[idx] * s).ravel(), batch.volume[idx].ravel(),
            symbol=f"STRESS-{a}", timeframe=synth.tf, source=f"synthetic:stress-batch:seed={seed}:asset={a}",
        ))
    return out


def stress_market(pipelines: Sequence[TacticalPipeline], config: PretrainConfig, seed: int) -> MarketData:
    """The stress batch seen through already-fitted tactical pipelines (one per asset)."""
    series = stress_series(config, seed, len(pipelines))
    frames = [p.transform(b) for p, b in zip(pipelines, series, strict=True)]
    return MarketData.from_frames(series, frames)  # type: ignore[arg-type]


def pretrain_policy(kind: str, market: MarketData, sim: Any, ppo: Any, *, seed: int, num_envs: int,
                    policy_config: dict[str, Any] | None = None, progress: bool | None = None) -> Any:
    """A policy of ``kind`` (a PPO kind or the stack) trained on the whole synthetic ``market``."""
    from himari.training.ppo import fit_ppo, fit_stack

    if kind == "stack":
        policy, _ = fit_stack(market, sim, ppo, train_range=(0, market.num_bars), seed=seed, num_envs=num_envs,
                              policy_config=policy_config, progress=progress, description="stress pre-training")
        return policy
    policy, _ = fit_ppo(kind, market, sim, ppo, train_range=(0, market.num_bars), seed=seed, num_envs=num_envs,
                        policy_config=policy_config, progress=progress, description="stress pre-training")
    return policy
