"""``himari wfo`` and ``himari pipeline``: walk-forward evaluation and the one-command pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import click

from himari.agents.registry import WALK_FORWARD_KINDS
from himari.cli.run import QUICK_TITLE, tracking_options, tracking_overrides


def _read_json(path: str) -> dict:
    from himari.errors import ConfigError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read JSON config: {exc}") from None


def _read_wfo_config(path: str) -> dict:
    """WFOConfig fields from a JSON file of them (RUN/wfo_config.json), a walk-forward run's run.json, or an
    experiment file (its walk_forward section)."""
    from himari.errors import ConfigError

    if Path(path).suffix.lower() in (".yaml", ".yml", ".toml"):
        from himari.backtest.experiment import load_experiment

        return load_experiment(path).walk_forward.to_dict()
    payload = _read_json(path)
    if isinstance(payload, dict) and "command" in payload and isinstance(payload.get("config"), dict):
        if not isinstance(payload["config"].get("wfo"), dict):
            raise ConfigError(f"{path}: the run.json of a {payload['command']!r} run holds no walk-forward config")
        return payload["config"]["wfo"]
    return payload


def _risk(path: str) -> dict:
    from himari.risk.config import RiskConfig

    return RiskConfig.parse(_read_json(path)).to_dict()


def _load(data_specs: tuple[str, ...]) -> dict:
    from himari.data.loaders import load_bars

    bars = {}
    for spec in data_specs:
        b = load_bars(spec)
        bars[b.symbol] = b
    return bars


@click.command("wfo")
@click.option("--data", "data_specs", multiple=True, default=("BTCUSDT",), show_default=True, help="OHLCV file or bundled name (repeat for multi-asset).")
@click.option("--out", required=True, help="Run directory to write.")
@click.option("--policy", type=click.Choice(WALK_FORWARD_KINDS),
              default="mlp", show_default=True, help="PPO kinds train in the simulator; the others are offline/supervised.")
@click.option("--test-start", default="2023-01-01", show_default=True)
@click.option("--test-end", default="2025-01-01", show_default=True)
@click.option("--train-months", default=6, show_default=True)
@click.option("--validation-months", default=1, show_default=True)
@click.option("--test-months", default=1, show_default=True)
@click.option("--step-months", default=1, show_default=True)
@click.option("--max-windows", default=None, type=int)
@click.option("--seeds", default=2, show_default=True,
              help="Seeds trained per configuration and window, ensembled (not selected).")
@click.option("--configurations", "configurations_file", default=None,
              help="JSON object: configuration name -> overrides (the candidates compared per window; PBO and the "
                   "DSR count them).")
@click.option("--steps-first", default=120_000, show_default=True, help="PPO steps (offline kinds: samples) in the first window.")
@click.option("--steps", default=40_000, show_default=True, help="PPO fine-tuning steps (offline kinds: samples) in later windows.")
@click.option("--no-transfer", is_flag=True, help="Train every window from scratch.")
@click.option("--expanding", is_flag=True, help="Every window trains from --first-train-start (a growing training period).")
@click.option("--first-train-start", default=None, help="First training bar (default: test start - train - validation months).")
@click.option("--workers", default=1, show_default=True,
              help="Processes fitting a window's configurations in parallel (results equal the sequential ones).")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--config", "config_file", default=None,
              help="WFOConfig fields: RUN/wfo_config.json or RUN/run.json of an earlier run, or an experiment file's "
                   "walk_forward (options given on the command line override it).")
@click.option("--risk-config", default=None, help="RiskConfig JSON (e.g. from 'himari risk calibrate').")
@click.option("--ray-address", default=None, help="Ray cluster address for --backend ray (default: a local Ray instance).")
@click.option("--seed", default=0, show_default=True)
@click.option("--fresh", is_flag=True, help="Fit every window again: ignore the finished windows checkpointed in "
              "OUT/checkpoints (by default a rerun of the same walk-forward into OUT resumes from them).")
@tracking_options
def wfo_cmd(data_specs, out, policy, test_start, test_end, train_months, validation_months, test_months, step_months,
            max_windows, seeds, configurations_file, steps_first, steps, no_transfer, expanding, first_train_start,
            workers, backend, config_file, risk_config, ray_address, seed, fresh, tensorboard, mlflow_uri) -> None:
    """Walk-forward optimization: fit on train, select on validation, trade test; stitched out-of-sample report."""
    from himari.backtest.outputs import print_summary
    from himari.backtest.pipeline import run_wfo_to_dir
    from himari.backtest.wfo import WFOConfig
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    base = _read_wfo_config(config_file) if config_file else {}
    options = {"policy": policy, "test_start": test_start, "test_end": test_end, "train_months": train_months,
               "validation_months": validation_months, "test_months": test_months, "step_months": step_months,
               "max_windows": max_windows, "seeds": seeds, "steps_first_window": steps_first,
               "steps_per_window": steps, "transfer": not no_transfer, "seed": seed, "expanding_train": expanding,
               "first_train_start": first_train_start, "workers": workers}
    params = {"steps_first": "steps_first_window", "steps": "steps_per_window",
              "no_transfer": "transfer", "expanding": "expanding_train"}
    ctx = click.get_current_context()
    # A --config file is the base; only options given on the command line override it (not their defaults).
    explicit = {field: options[field] for name, field in
                [(n, params.get(n, n)) for n in ctx.params if n in params or n in options]
                if not base or ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    if configurations_file:
        explicit["configurations"] = _read_json(configurations_file)
    cfg = WFOConfig.parse(base, **explicit, **({"risk": _risk(risk_config)} if risk_config else {}),
                          tracking=tracking_overrides(tensorboard, mlflow_uri))
    bars = _load(data_specs)
    metrics = run_wfo_to_dir(cfg, bars, out, command="wfo", backend=backend, ray_address=ray_address, fresh=fresh)
    print_summary(metrics)
    click.echo(f"wrote {out}/metrics.json, {out}/report.html and the final model in {out}/bundle")


@click.command("pipeline")
@click.option("--preset", type=click.Choice(["quick", "full"]), default="quick", show_default=True)
@click.option("--data", "data_specs", multiple=True, default=None, help="OHLCV file(s) or bundled names (default: BTCUSDT; full adds ETH/SOL).")
@click.option("--out", default="runs/quick", show_default=True, help="Run directory to write.")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-windows", default=None, type=int, help="Limit the walk-forward windows (smoke runs).")
@click.option("--steps-scale", default=1.0, show_default=True, help="Scale the PPO step budgets (smoke runs: 0.05).")
@click.option("--risk-config", default=None, help="RiskConfig JSON (e.g. from 'himari risk calibrate').")
@click.option("--fresh", is_flag=True, help="Fit every window again: ignore the finished windows checkpointed in "
              "the run directory (by default the same command into the same --out resumes from them).")
@tracking_options
def pipeline_cmd(preset, data_specs, out, seed, max_windows, steps_scale, risk_config, fresh, tensorboard,
                 mlflow_uri) -> None:
    """The end-to-end job: features, regimes, PPO with sizing and risk, walk-forward out-of-sample report.

    An interrupted run resumes: the same command into the same --out loads the windows already finished."""
    from himari.backtest.full import run_full_pipeline, stage_configs, timing_table
    from himari.backtest.outputs import print_summary
    from himari.backtest.pipeline import PRESETS, run_wfo_to_dir
    from himari.backtest.wfo import WFOConfig
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    tracking = tracking_overrides(tensorboard, mlflow_uri)
    if preset == "quick":
        params = dict(PRESETS[preset])
        params["steps_first_window"] = max(1, int(params["steps_first_window"] * steps_scale))
        params["steps_per_window"] = max(1, int(params["steps_per_window"] * steps_scale))
        if risk_config:
            params["risk"] = _risk(risk_config)
        cfg = WFOConfig.parse(params, seed=seed, max_windows=max_windows, tracking=tracking)
        bars = _load(tuple(data_specs) if data_specs else ("BTCUSDT",))
        metrics = run_wfo_to_dir(cfg, bars, out, command=f"pipeline --preset {preset}",
                                 title=QUICK_TITLE, fresh=fresh)
    else:
        if risk_config:
            raise click.UsageError("--risk-config applies to --preset quick; the full preset's stages use their own")
        configs = {name: (cfg.replace(tracking=tracking) if tracking else cfg, assets) for name, (cfg, assets) in
                   stage_configs(PRESETS["full"], PRESETS["quick"], steps_scale, max_windows, seed).items()}
        metrics, timing = run_full_pipeline(
            configs, tuple(data_specs) if data_specs else ("BTCUSDT", "ETHUSDT", "SOLUSDT"), out, fresh=fresh)
        click.echo(timing_table(timing))
    print_summary(metrics)
    click.echo(f"wrote {out}/metrics.json, {out}/report.html and the final model in {out}/bundle")


@click.command("results")
@click.argument("run")
@click.option("--label", default="strategy", show_default=True, help="Name of the strategy row.")
@click.option("--update", "update_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="Replace the results block of this file (README.md) instead of printing it.")
@click.option("--stages", is_flag=True, help="RUN is a --preset full run: print its per-stage timing and results "
              "tables instead.")
def results_cmd(run, label, update_file, stages) -> None:
    """Print the README's results table of RUN (a run directory or its metrics.json), or write it into a file."""
    from himari.report.readme import load_metrics, load_trials, render_results, update_block

    if stages:
        from himari.backtest.full import _read_timing, stages_table, timing_table

        timing = _read_timing(Path(run)).get("full")
        if not timing:
            raise click.UsageError(f"{run}: not a --preset full run (no 'full' section in timing.json)")
        click.echo(timing_table(timing))
        click.echo("")
        click.echo(stages_table(run))
        return

    block = render_results(load_metrics(run), label, load_trials(run))
    if update_file is None:
        click.echo(block)
        return
    path = Path(update_file)
    path.write_text(update_block(path.read_text(encoding="utf-8"), block, str(path)), encoding="utf-8")
    click.echo(f"updated the results block of {path}")


@click.command("ablate")
@click.option("--preset", type=click.Choice(["quick", "full"]), default="quick", show_default=True,
              help="Base configuration: a pipeline preset (the main job's system by default).")
@click.option("--config", "config_file", default=None, help="Base WFOConfig JSON instead of the preset.")
@click.option("--variant", "variant_specs", multiple=True, required=True,
              help="NAME=JSON (inline object or a .json file) of WFOConfig overrides; repeat. The first is the "
                   "reference, e.g. --variant 'without={}'.")
@click.option("--data", "data_specs", multiple=True, default=("BTCUSDT",), show_default=True)
@click.option("--test-start", default=None, help="Override the base's test start (choose settings on pre-2023 data).")
@click.option("--test-end", default=None)
@click.option("--max-windows", default=None, type=int)
@click.option("--steps-scale", default=1.0, show_default=True, help="Scale the PPO step budgets of every variant.")
@click.option("--out", required=True, help="Directory: one run directory per variant, variants.json, variants.md.")
@click.option("--seed", default=0, show_default=True)
def ablate_cmd(preset, config_file, variant_specs, data_specs, test_start, test_end, max_windows, steps_scale, out,
               seed) -> None:
    """Method ablation: walk forward the base system once per variant (same windows, costs, seeds) and compare."""
    from himari.backtest.pipeline import preset_config
    from himari.backtest.variants import render_variants, run_variants
    from himari.errors import ConfigError
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    base = _read_wfo_config(config_file) if config_file else preset_config(preset)
    for key, value in (("test_start", test_start), ("test_end", test_end), ("max_windows", max_windows)):
        if value is not None:
            base[key] = value
    base["seed"] = seed
    for key in ("steps_first_window", "steps_per_window"):
        if key in base:
            base[key] = max(1, int(base[key] * steps_scale))
    variants: dict[str, dict] = {}
    for spec in variant_specs:
        name, sep, text = spec.partition("=")
        if not sep or not name:
            raise ConfigError(f"--variant {spec!r}: expected NAME=JSON")
        if name in variants:
            raise ConfigError(f"--variant {name!r} given twice")
        try:
            value = _read_json(text) if text.strip().endswith(".json") else json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--variant {name}: not a JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"--variant {name}: expected a JSON object of WFOConfig overrides")
        variants[name] = value
    rows = run_variants(base, variants, _load(data_specs), out, command="ablate")
    click.echo(render_variants(rows, next(iter(variants)), "method ablation"))
    click.echo(f"wrote {out}/variants.json, {out}/variants.md and one run directory per variant")


def register(cli: click.Group) -> None:
    cli.add_command(ablate_cmd)
    cli.add_command(wfo_cmd)
    cli.add_command(pipeline_cmd)
    cli.add_command(results_cmd)
