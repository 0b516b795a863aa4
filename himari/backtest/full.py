"""The ``full`` pipeline preset: the seeds' sequence, run honestly on 2 CPU cores.

Stages (each writes its own run directory under ``OUT/stages/``; the base PPO walk-forward is the headline in
``OUT``):

1. ``synthetic_pretraining`` — an MLP PPO policy trained on synthetic stress markets (``himari.data.synth``) seen
   through the first window's fitted tactical pipeline; whether it helps is measured on the first window's
   validation month (selected vs from-scratch candidates) and reported either way.
2. ``base_ppo`` — walk-forward MLP PPO over 48 monthly windows (2021-2024), initialised from the pre-trained weights
   when they helped on validation.
3. ``lstm_ppo`` — the same walk-forward with the LSTM policy.
4. ``multiasset_ppo`` — BTC/ETH/SOL jointly with the multi-asset policy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from himari.backtest.pipeline import run_wfo_to_dir
from himari.backtest.wfo import WFOConfig, fit_window
from himari.utils.io import atomic_write_json


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    stats = metrics.get("statistics", {})
    return {
        "total_return": metrics.get("total_return"),
        "sharpe": metrics.get("sharpe"),
        "max_drawdown": metrics.get("max_drawdown"),
        "dsr": stats.get("dsr"),
        "verdict": metrics.get("verdict"),
    }


def pretrain_synthetic(
    config: WFOConfig, bars: dict[str, Any], steps: int, out: Path
) -> tuple[Any, dict[str, Any]]:
    """Pre-train on a synthetic market and compare, on window 0's validation month, with training from scratch."""
    from himari.agents.ppo.config import PPOConfig
    from himari.agents.training import synthetic_market
    from himari.backtest.wfo import _history
    from himari.tactical.pipeline import TacticalConfig, TacticalPipeline
    from himari.training.ppo import fit_ppo

    started = time.perf_counter()
    w0 = config.windows()[0]
    symbol = next(iter(bars))
    fit_bars = _history(bars[symbol], w0.train.start, w0.validation.end, config.warmup_bars)
    tp = TacticalPipeline(TacticalConfig.parse(config.tactical)).fit(fit_bars, w0.train.start, w0.train.end)
    sim = config.sim_config()
    syn = synthetic_market([tp], 20_000, config.seed)
    policy, _ = fit_ppo(
        config.policy, syn, sim, PPOConfig.parse({"total_steps": steps, "n_steps": config.n_steps, **config.ppo}),
        train_range=(0, syn.num_bars), seed=config.seed, num_envs=config.num_envs,
        policy_config=config.policy_config, description="synthetic pre-training",
    )
    scratch = fit_window(config, w0, bars)
    pre = fit_window(config, w0, bars, pretrained=policy)
    v_scratch = scratch.results[scratch.selected].validation_sharpe
    v_pre = pre.results[pre.selected].validation_sharpe
    result = {
        "pretrain_steps": steps,
        "synthetic_bars": syn.num_bars,
        "validation_sharpe_scratch": v_scratch,
        "validation_sharpe_pretrained": v_pre,
        "helps": bool(v_pre > v_scratch),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    atomic_write_json(out / "stages" / "synthetic_pretraining.json", result)
    return policy, result


def run_full_pipeline(
    config: WFOConfig, data_specs: tuple[str, ...], out: str | Path, steps_scale: float = 1.0
) -> dict[str, Any]:
    from himari.data.loaders import load_bars

    root = Path(out)
    (root / "stages").mkdir(parents=True, exist_ok=True)
    all_bars = {b.symbol: b for b in (load_bars(s) for s in data_specs)}
    first = next(iter(all_bars))
    single = {first: all_bars[first]}
    stages: dict[str, dict[str, Any]] = {}
    timing: dict[str, float] = {}

    t = time.perf_counter()
    pretrained, pre = pretrain_synthetic(config, single, max(1, int(200_000 * steps_scale)), root)
    stages["synthetic_pretraining"] = {k: v for k, v in pre.items() if k != "wall_s"}
    timing["synthetic_pretraining"] = time.perf_counter() - t

    for name, policy, symbols in (("lstm_ppo", "lstm", single), ("multiasset_ppo", "multiasset", all_bars)):
        if policy == "multiasset" and len(symbols) < 2:
            continue
        t = time.perf_counter()
        cfg = config.replace(policy=policy, window=None)
        metrics = run_wfo_to_dir(
            cfg,
            symbols,
            root / "stages" / name,
            command=f"pipeline --preset full ({name})",
            title=f"Stage {name}",
        )
        stages[name] = _headline(metrics)
        timing[name] = time.perf_counter() - t

    t = time.perf_counter()
    metrics = run_wfo_to_dir(
        config,
        single,
        root,
        command="pipeline --preset full",
        title="HIMARI full pipeline: synthetic pre-training, walk-forward PPO (base), LSTM and multi-asset stages",
        pretrained=pretrained if pre["helps"] else None,
        stages={"base_ppo (headline)": {}, **stages},
    )
    timing["base_ppo"] = time.perf_counter() - t
    stages["base_ppo"] = _headline(metrics)
    atomic_write_json(root / "stages" / "summary.json", stages)
    atomic_write_json(root / "stages" / "timing.json", {k: round(v, 1) for k, v in timing.items()})
    return metrics
