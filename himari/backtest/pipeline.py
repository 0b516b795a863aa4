"""The one-command pipeline and the walk-forward run that writes a complete run directory.

``run_wfo_to_dir`` runs a walk-forward optimization and writes, in ``out``:
``run.json`` (config, seed, data sha256, versions), ``windows.json``, ``metrics.json`` (stitched out-of-sample
strategy, baselines, statistics, verdict), ``report.html``, ``equity.csv``, ``decisions.csv``, ``fills.csv`` and
``bundle/`` (the last window's model: what ``himari backtest --run`` and ``himari serve --run`` load).

Presets (``himari pipeline --preset``):

- ``quick`` — the README's main job: bundled BTC, the stack (L2 MLP PPO direction -> L3 bounded-delta sizer around
  the vol-targeted base with regime multipliers -> risk gates), trained and traded through the positioning layer and
  risk gates, positions changed once a day, monthly walk-forward over 2023-2024 (6 months train, 1 validation,
  1 test), each layer an ensemble of two seeds, the DSR counting the trials ledger ``ledgers/quick.json``.
- ``full`` — the seeds' pipeline in one process (:mod:`himari.backtest.full`): MLP PPO after synthetic stress
  pre-training (48 monthly windows over 2021-2024), LSTM PPO and multi-asset (BTC/ETH/SOL) stages over 2023-2024,
  and the main job as the headline; per-stage timing in ``timing.json``; resumable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from himari.backtest.backtester import evaluate
from himari.backtest.experiment import write_run_experiment
from himari.backtest.outputs import write_outputs
from himari.backtest.wfo import WFOConfig, WFOResult, run_wfo, write_final_bundle
from himari.data.bars import Bars
from himari.evaluation.trials import load_ledger, trial_from_metrics, write_ledger
from himari.utils.io import atomic_write_json
from himari.utils.rundir import create_run_dir
from himari.utils.tracking import activate, open_tracker

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        # the stack: L2 direction (MLP PPO) -> L3 bounded-delta sizer around the vol-targeted base -> risk gates;
        # chosen on the 2022 walk-forward (trials ledger "quick"): positions change once a day, the
        # long-short configuration, each layer an ensemble of 2 seeds
        "policy": "stack",
        "test_start": "2023-01-01",
        "test_end": "2025-01-01",
        "train_months": 6,
        "validation_months": 1,
        "test_months": 1,
        "step_months": 1,
        "seeds": 2,
        "configurations": {"long-short": {}},
        "steps_first_window": 120_000,
        "steps_per_window": 40_000,
        "sizing": {"decision_every_bars": 24},
        "workers": 2,
        "trials_ledger": "quick",
    },
    "full": {
        # the settings every stage shares (himari.backtest.full); the headline stage is the main job ("quick")
        "test_start": "2023-01-01",
        "test_end": "2025-01-01",
        "train_months": 6,
        "validation_months": 1,
        "test_months": 1,
        "step_months": 1,
        "seeds": 2,
        "steps_first_window": 120_000,
        "steps_per_window": 40_000,
        "sizing": {"decision_every_bars": 24},
        "workers": 2,
        "stages": {
            # the seeds' base PPO: stress-batch pre-training, then 48 monthly windows over 2021-2024
            "mlp_ppo": {"policy": "mlp", "test_start": "2021-01-01", "pretrain": {"steps": 200_000}},
            "lstm_ppo": {"policy": "lstm"},
            "multiasset_ppo": {"policy": "multiasset", "assets": "all"},
        },
    },
}


LEDGERS = Path(__file__).parent / "ledgers"


def preset_config(preset: str) -> dict[str, Any]:
    """One walk-forward config of a preset: the main job for ``quick``; for ``full``, its distinctive stage (MLP
    PPO after stress pre-training, 2021-2024; :mod:`himari.backtest.full` runs the others)."""
    params = dict(PRESETS[preset])
    stages = params.pop("stages", None)
    if stages:
        params.update({k: v for k, v in stages["mlp_ppo"].items() if k != "assets"})
    return params


def ledger_path(name: str) -> Path:
    """A ledger path, or the name of a ledger shipped with the package (``quick`` -> ``ledgers/quick.json``)."""
    p = Path(name)
    if p.suffix == ".json" or p.exists():
        return p
    return LEDGERS / f"{name}.json"


ABLATION_KEYS = ("total_return", "sharpe", "max_drawdown", "turnover", "fees_paid", "exposure")


def ablation_rows(paths: dict[str, Any], metrics: dict[str, Any], timeframe: str, seed: int,
                  policy: str) -> list[dict[str, Any]]:
    """``metrics.json`` → ``ablation``: one row per layer (stitched test periods) and the full strategy last, each
    with the Sharpe ratio's bootstrap 95% CI."""
    from himari.data.timeframe import Timeframe
    from himari.evaluation.metrics import compute_metrics
    from himari.evaluation.statistics import strategy_statistics
    from himari.utils.seeding import make_rng

    ppy = Timeframe.parse(timeframe).periods_per_year
    rows = []
    for name, p in paths.items():
        m = compute_metrics(p.net_returns, p.positions, p.turnover, p.fees, timeframe)
        s = strategy_statistics(p.net_returns, ppy, make_rng(seed))
        rows.append({"layer": name, **{k: m.get(k) for k in ABLATION_KEYS},
                     "sharpe_ci_low": s["sharpe_ci_low"], "sharpe_ci_high": s["sharpe_ci_high"]})
    s = metrics.get("statistics", {})
    full = "+ L2 direction (full stack)" if policy == "stack" else f"+ L2 direction ({policy}, the strategy)"
    rows.append({"layer": full, **{k: metrics.get(k) for k in ABLATION_KEYS},
                 "sharpe_ci_low": s.get("sharpe_ci_low"), "sharpe_ci_high": s.get("sharpe_ci_high")})
    return rows


def wfo_summary(result: WFOResult, periods_per_year: float) -> tuple[np.ndarray, np.ndarray]:
    """Configuration return matrix (T, C) and each configuration's annualized Sharpe over the stitched test
    periods."""
    matrix = result.configuration_matrix()
    std = matrix.std(axis=0, ddof=1)
    sharpes = np.where(std > 0, matrix.mean(axis=0) / np.where(std > 0, std, 1.0) * np.sqrt(periods_per_year), 0.0)
    return matrix, sharpes


def run_wfo_to_dir(
    config: WFOConfig,
    bars_by_symbol: Mapping[str, Bars],
    out: str | Path,
    command: str,
    backend: Literal["local", "ray"] = "local",
    title: str | None = None,
    pretrained: Any = None,
    stages: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
    ray_address: str | None = None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Run walk-forward and write the run directory (see the module docstring). Returns metrics.json's content.

    Every finished window is checkpointed in ``RUN/checkpoints`` (:mod:`himari.backtest.checkpoint`); running the
    same walk-forward (config, data, starting weights) into the same directory again loads the finished windows
    instead of fitting them again, so an interrupted run resumes where it stopped. ``fresh`` deletes the
    checkpoints first."""
    import shutil

    from himari.data.timeframe import Timeframe

    root = Path(out)
    started = time.perf_counter()
    if fresh:
        shutil.rmtree(root / "checkpoints", ignore_errors=True)
    create_run_dir(
        root, command, {"wfo": config.to_dict(), "backend": backend}, config.seed,
        {s: b.source for s, b in bars_by_symbol.items() if b.source}, extra=extra_meta,
    )
    atomic_write_json(root / "wfo_config.json", config.to_dict())  # himari wfo --config RUN/wfo_config.json reruns it
    if pretrained is None:  # himari run RUN/experiment.yaml repeats it (a pre-trained start is not in the file)
        write_run_experiment(root, config, bars_by_symbol, backend, title)
    tracker = open_tracker(config.tracking, root, f"{command}: {root.name}", config.to_dict())
    window_rows: list[dict[str, Any]] = []

    def on_window(r: Any) -> None:
        window_rows.append(r.row())
        atomic_write_json(root / "windows.json", window_rows)
        if tracker is not None:
            tracker.log_window(window_rows[-1].get("window", len(window_rows) - 1), window_rows[-1])

    with activate(tracker):
        result = run_wfo(config, bars_by_symbol, backend=backend, pretrained=pretrained, progress=progress,
                         on_window=on_window, ray_address=ray_address, checkpoint_dir=root / "checkpoints")
    window_rows = result.window_rows()
    atomic_write_json(root / "windows.json", window_rows)
    stitched = result.stitched
    ppy = Timeframe.parse(stitched.timeframe).periods_per_year
    matrix, sharpes = wfo_summary(result, ppy)
    prior = load_ledger(ledger_path(config.trials_ledger)) if config.trials_ledger else []
    names = config.configuration_names
    # the DSR deflates for everything compared on these data: the ledger's trials and this run's configurations
    # (seeds are ensembled, not compared)
    n_trials = len(prior) + len(names)
    # the variance of the trials' Sharpe ratios: this run's configurations and every ledger trial with a result
    recorded = [float(t.result["sharpe"]) for t in prior
                if isinstance(t.result.get("sharpe"), int | float) and np.isfinite(t.result["sharpe"])]
    trial_sharpes = np.array([*recorded, *(float(v) for v in sharpes)])
    metrics = evaluate(
        stitched, seed=config.seed, n_trials=n_trials,
        trial_sharpes_annual=trial_sharpes if len(trial_sharpes) > 1 else None,
        returns_matrix=matrix if len(names) > 1 else None,
    )
    paths = result.ablation_paths()
    if paths:
        metrics["ablation"] = ablation_rows(paths, metrics, stitched.timeframe, config.seed, config.policy)
    span = f"{', '.join(stitched.symbols)} {config.test_start} .. {config.test_end}"
    selected = [w.selected for w in result.windows]
    cpaths = result.configuration_paths()
    this_run = [
        trial_from_metrics(
            f"{command} [{name}]" if config.configurations else command,
            f"configuration {name!r} of this run (traded the test month in {selected.count(name)} of "
            f"{len(selected)} windows)" if config.configurations else "this run's configuration",
            span, {"wfo": config.for_configuration(name).to_dict()},
            _path_metrics(cpaths[name], stitched.timeframe) if config.configurations else metrics,
            command, kept=True)
        for i, name in enumerate(names)
    ]
    write_ledger(root / "trials.json", [*prior, *this_run])
    metrics["trials"] = {"prior": len(prior), "configurations": list(names), "seeds_per_configuration": config.seeds,
                         "n_trials": n_trials, "ledger": config.trials_ledger}
    pretraining = {n: c.train_summary["pretraining"] for n, c in result.windows[0].configurations.items()
                   if "pretraining" in c.train_summary}
    if pretraining:  # the stress-batch pre-training against training from scratch, on window 0's validation month
        metrics["pretraining"] = {"config": config.pretrain, "window": 0, "configurations": pretraining}
    wall = time.perf_counter() - started
    metrics["walk_forward"] = {
        "n_windows": len(result.windows),
        "train_months": config.train_months,
        "validation_months": config.validation_months,
        "test_months": config.test_months,
        "step_months": config.step_months,
        "configurations": list(names),
        "seeds_per_configuration": config.seeds,
        "selection": "per window, the configuration (a seed ensemble) with the highest validation Sharpe through "
                     "the full stack (sizing, risk, costs)",
        "configuration_test_sharpes": {n: float(v) for n, v in zip(names, sharpes, strict=True)},
        "windows": window_rows,
    }
    # windows_s: each window's own fit-and-trade time (a resumed window keeps the time it took when it ran)
    # windows_trade_s: of each window's time, its test-period backtests (strategy, configurations, ablation rows)
    atomic_write_json(root / "timing.json", {"wall_s": round(wall, 1), "windows_s": [round(w.wall_s, 1) for w in result.windows],
                                             "windows_trade_s": [round(w.trade_s, 1) for w in result.windows],
                                             "resumed_windows": result.resumed,
                                             "pretraining_s": None if result.pretrain_s is None else round(result.pretrain_s, 1)})
    write_final_bundle(result, root)
    notes = [
        "All numbers are out-of-sample: each test month was traded by a model fitted on the preceding training "
        "months and selected on the following validation month; no test bar was used for fitting or selection.",
        "Costs are on: taker fee, spread/slippage (fixed plus volatility-scaled); fills at the next bar's open.",
        f"{len(names)} configuration(s) per window were compared on validation, each an ensemble of {config.seeds} "
        f"seed(s); {len(prior)} earlier configuration(s) are in the trials ledger (RUN/trials.json); the DSR "
        f"deflates for {n_trials} trials.",
    ]
    write_outputs(
        root, stitched, metrics, title or f"Walk-forward {config.policy} on {', '.join(stitched.symbols)}",
        run_info={"command": command, "config_hash": _hash(config), "seed": config.seed,
                  "data": {s: b.source for s, b in bars_by_symbol.items()}},
        windows=window_rows, stages=stages, notes=notes,
    )
    if tracker is not None:
        tracker.finish(metrics, [root / n for n in ("metrics.json", "report.html", "experiment.yaml", "windows.json")])
    return metrics


def _path_metrics(path: Any, timeframe: str) -> dict[str, Any]:
    """Metrics of one configuration's stitched test path (for its trials-ledger entry)."""
    from himari.evaluation.metrics import compute_metrics

    return compute_metrics(path.net_returns, path.positions, path.turnover, path.fees, timeframe)


def _hash(config: WFOConfig) -> str:
    from himari.config import config_hash

    return config_hash(config)
