"""The ``full`` pipeline preset: the seeds' sequence of stages, end to end in one process, resumable.

Stages, in this order (each writes a complete run directory; ``OUT/stages/<stage>/`` except the headline):

1. ``mlp_ppo`` — the seeds' base PPO: synthetic stress pre-training (the 500-scenario batch, compared with
   training from scratch on window 0's validation and kept only if better there), then walk-forward MLP PPO over
   48 monthly windows (2021-2024).
2. ``lstm_ppo`` — walk-forward LSTM PPO, 2023-2024.
3. ``multiasset_ppo`` — BTC/ETH/SOL traded jointly by the multi-asset policy, 2023-2024.
4. ``stack`` (headline, written to ``OUT`` itself) — the main job exactly (``PRESETS["quick"]``): L2 direction ->
   L3 sizer -> risk gates, 2023-2024, with its trials ledger.

Every stage trades through the positioning layer and the risk gates with costs on, monthly windows (6 months train,
1 validation, 1 test). ``OUT/timing.json`` is the per-stage timing table (also printed). Each walk-forward
checkpoints its finished windows (:mod:`himari.backtest.checkpoint`): after an interruption the same command resumes
every stage where it stopped, without fitting a finished window again (``fresh`` starts over).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from himari.backtest.wfo import WFOConfig
from himari.utils.io import atomic_write_json

HEADLINE = "stack"


def stage_configs(base: Mapping[str, Any], quick: Mapping[str, Any], steps_scale: float = 1.0,
                  max_windows: int | None = None, seed: int = 0) -> dict[str, tuple[WFOConfig, str]]:
    """Stage -> (its walk-forward config, "first" | "all" assets). ``base``: the full preset's shared settings
    (``PRESETS["full"]``); ``quick``: the main job's (the headline stage)."""
    def scaled(params: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(params)
        for key in ("steps_first_window", "steps_per_window"):
            out[key] = max(1, int(out[key] * steps_scale))
        if "pretrain" in out and out["pretrain"].get("steps"):
            out["pretrain"] = {**out["pretrain"], "steps": max(1, int(out["pretrain"]["steps"] * steps_scale))}
        return {**out, "seed": seed, "max_windows": max_windows}

    stages = base["stages"]
    shared = {k: v for k, v in base.items() if k != "stages"}
    out: dict[str, tuple[WFOConfig, str]] = {}
    for name, spec in stages.items():
        overrides = {k: v for k, v in spec.items() if k != "assets"}
        out[name] = (WFOConfig.parse(scaled({**shared, **overrides})), spec.get("assets", "first"))
    out[HEADLINE] = (WFOConfig.parse(scaled(quick)), "first")
    return out


def run_full_pipeline(
    configs: Mapping[str, tuple[WFOConfig, str]],
    data_specs: tuple[str, ...],
    out: str | Path,
    fresh: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every stage of ``configs`` (the headline last, into ``out``). Returns (headline metrics, timing)."""
    from himari.backtest.pipeline import run_wfo_to_dir
    from himari.data.loaders import load_bars

    root = Path(out)
    (root / "stages").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    t = time.perf_counter()
    all_bars = {b.symbol: b for b in (load_bars(s) for s in data_specs)}
    first = next(iter(all_bars))
    single = {first: all_bars[first]}
    timing: dict[str, Any] = {"data_s": round(time.perf_counter() - t, 1), "stages": []}
    stages: dict[str, dict[str, Any]] = {}
    order = [n for n in configs if n != HEADLINE] + [HEADLINE]
    for name in order:
        cfg, assets = configs[name]
        symbols = all_bars if assets == "all" else single
        if assets == "all" and len(symbols) < 2:
            continue
        headline = name == HEADLINE
        directory = root if headline else root / "stages" / name
        if progress:
            print(f"stage {name}: {cfg.policy}, {len(cfg.windows())} windows, {', '.join(symbols)}", flush=True)
        t = time.perf_counter()
        metrics = run_wfo_to_dir(
            cfg, symbols, directory, command=f"pipeline --preset full ({name})",
            title="HIMARI full pipeline: the main job (stack) with the MLP (pre-trained), LSTM and multi-asset stages"
            if headline else f"Stage {name}",
            stages={f"{name} (headline)": {}, **stages} if headline else None,
            progress=progress, fresh=fresh,
        )
        stage_timing = _read_timing(directory)
        timing["stages"].append({
            "stage": name, "policy": cfg.policy, "symbols": list(symbols), "windows": len(cfg.windows()),
            "seeds": cfg.seeds, "resumed_windows": stage_timing.get("resumed_windows", 0),
            "pretraining_s": stage_timing.get("pretraining_s"), "wall_s": round(time.perf_counter() - t, 1),
            "windows_s": round(sum(stage_timing.get("windows_s", [])), 1),
            "trade_s": round(sum(stage_timing.get("windows_trade_s", [])), 1),
        })
        stages[name] = _headline(metrics)
        if "pretraining" in metrics:
            stages[name]["pretraining"] = metrics["pretraining"]
    timing["total_s"] = round(time.perf_counter() - started, 1)
    atomic_write_json(root / "stages" / "summary.json", stages)
    atomic_write_json(root / "timing.json", {**_read_timing(root), "full": timing})
    return metrics, timing


def _read_timing(directory: Path) -> dict[str, Any]:
    from himari.utils.io import read_json

    path = directory / "timing.json"
    return read_json(path) if path.exists() else {}


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    stats = metrics.get("statistics", {})
    return {
        "total_return": metrics.get("total_return"),
        "sharpe": metrics.get("sharpe"),
        "max_drawdown": metrics.get("max_drawdown"),
        "dsr": stats.get("dsr"),
        "verdict": metrics.get("verdict"),
    }


def timing_table(timing: Mapping[str, Any]) -> str:
    """The per-stage timing table (Markdown) of ``timing.json``'s ``full`` section."""
    lines = ["| stage | policy | assets | windows | seeds | pre-training | windows (fit + trade) | of which trade "
             "(backtests) | stage wall | resumed windows |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in timing["stages"]:
        pre = f"{s['pretraining_s']:.0f} s" if s.get("pretraining_s") else ""
        trade = f"{s['trade_s']:.0f} s" if s.get("trade_s") else ""
        lines.append(f"| {s['stage']} | {s['policy']} | {'/'.join(s['symbols'])} | {s['windows']} | {s['seeds']} | "
                     f"{pre} | {s['windows_s']:.0f} s | {trade} | {s['wall_s']:.0f} s | {s['resumed_windows']} |")
    lines.append(f"| **total** (data loading {timing['data_s']:.0f} s) | | | | | | | | **{timing['total_s']:.0f} s "
                 f"({timing['total_s'] / 60:.1f} min)** | |")
    return "\n".join(lines)


def stages_table(run: str | Path) -> str:
    """The out-of-sample results of every stage of a full-preset run directory (Markdown), read from the stages'
    ``metrics.json``, with buy-and-hold and vol-targeted buy-and-hold over each stage's own span."""
    from himari.utils.io import read_json

    root = Path(run)
    timing = _read_timing(root).get("full")
    if not timing:
        raise FileNotFoundError(f"{root}: no full-preset timing.json (run himari pipeline --preset full)")
    lines = ["| stage | span | return | Sharpe | max drawdown | turnover/yr | fees | buy-and-hold return (Sharpe) | "
             "vol-targeted B&H Sharpe | DSR (trials) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in timing["stages"]:
        directory = root if s["stage"] == HEADLINE else root / "stages" / s["stage"]
        m = read_json(directory / "metrics.json")
        bh, vt = m["baselines"]["buy_and_hold"], m["baselines"]["vol_target_buy_and_hold"]
        span = f"{m['period']['start'][:7]} .. {m['period']['end'][:7]}"
        stats = m.get("statistics", {})
        name = f"{s['stage']} (headline: the main job)" if s["stage"] == HEADLINE else s["stage"]
        lines.append(
            f"| {name} | {span} | {m['total_return']:+.1%} | {m['sharpe']:.2f} | {m['max_drawdown']:.1%} | "
            f"{m['turnover']:.1f}× | {m['fees_paid']:.1%} | {bh['total_return']:+.0%} ({bh['sharpe']:.2f}) | "
            f"{vt['sharpe']:.2f} | {stats.get('dsr', float('nan')):.2f} ({stats.get('n_trials', 1)}) |")
    return "\n".join(lines)

