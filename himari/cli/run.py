"""``himari run EXPERIMENT``: one experiment file (YAML or TOML) drives data -> features -> regime -> train ->
walk-forward -> backtest (see :mod:`himari.backtest.experiment`)."""

from __future__ import annotations

from pathlib import Path

import click

from himari.agents.registry import WALK_FORWARD_KINDS

QUICK_TITLE = "HIMARI quick pipeline: walk-forward stack (L2 direction, L3 sizer, risk gates)"  # the main job's report title


def tracking_options(func):  # type: ignore[no-untyped-def]
    """``--tensorboard`` and ``--mlflow [URI]`` (shared by run, wfo and pipeline)."""
    func = click.option("--mlflow", "mlflow_uri", default=None, is_flag=False, flag_value="mlruns",
                        metavar="[STORE]",
                        help="Track in MLflow: a local store directory (default ./mlruns, no server) or a "
                             "tracking URI.")(func)
    return click.option("--tensorboard", is_flag=True,
                        help="TensorBoard: per-window training curves and figures in RUN/tensorboard.")(func)


def tracking_overrides(tensorboard: bool, mlflow_uri: str | None) -> dict:
    out: dict = {}
    if tensorboard:
        out["tensorboard"] = True
    if mlflow_uri:
        out.update(mlflow=True, mlflow_tracking_uri=mlflow_uri)
    return out


@click.command("run")
@click.argument("experiment", required=False, type=click.Path(dir_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run directory to write (a new one).")
@click.option("--print-defaults", is_flag=True,
              help="Print the fully commented experiment file (every key with its default) and exit.")
@click.option("--preset", type=click.Choice(["default", "quick"]), default="default", show_default=True,
              help="With --print-defaults: WFOConfig's defaults, or the main job (himari pipeline --preset quick).")
@click.option("--policy", type=click.Choice(WALK_FORWARD_KINDS), default=None,
              help="With --print-defaults: the policy kind whose sections are listed.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run in --out: windows it finished are loaded, not fitted again.")
@tracking_options
def run_cmd(experiment: str | None, out: str | None, print_defaults: bool, preset: str, policy: str | None,
            resume: bool, tensorboard: bool, mlflow_uri: str | None) -> None:
    """Run the experiment file EXPERIMENT (.yaml, .yml, .toml, or a run directory's run.json / experiment.yaml).

    \b
    himari run --print-defaults --preset quick > experiment.yaml
    himari run experiment.yaml --out runs/exp
    himari run runs/exp/experiment.yaml --out runs/exp-again    # the same run, the same metrics.json
    himari run experiment.yaml --out runs/exp --resume          # after an interruption
    """
    if print_defaults:
        from himari.backtest.experiment import template
        from himari.backtest.pipeline import PRESETS

        base = dict(PRESETS["quick"]) if preset == "quick" else {}
        if policy is not None:
            base["policy"] = policy
        quick = preset == "quick"
        note = "walk_forward: the main job of the README (himari pipeline --preset quick)" if quick else ""
        title = QUICK_TITLE if quick else None
        click.echo(template(base, description=note, title=title), nl=False)
        return
    if experiment is None:
        raise click.UsageError("give an EXPERIMENT file (or --print-defaults)")
    if out is None:
        raise click.UsageError("give --out: the run directory to write")
    from himari.backtest.experiment import load_experiment
    from himari.backtest.outputs import print_summary
    from himari.backtest.pipeline import run_wfo_to_dir
    from himari.data.loaders import load_bars
    from himari.errors import RunDirError
    from himari.utils.threads import configure_torch_threads

    exp = load_experiment(experiment)
    overrides = tracking_overrides(tensorboard, mlflow_uri)
    if overrides:
        exp = exp.replace(tracking={**exp.tracking.to_dict(), **overrides})
    if (Path(out) / "run.json").exists() and not resume:
        raise RunDirError(f"{out}: already holds a run; choose a new --out (or --resume an interrupted one)")
    configure_torch_threads()
    bars = {}
    for spec in exp.data:
        b = load_bars(spec)
        bars[b.symbol] = b
    metrics = run_wfo_to_dir(exp.wfo_config(), bars, out, command=f"run {experiment}", backend=exp.backend,
                             title=exp.title, ray_address=exp.ray_address)
    print_summary(metrics)
    click.echo(f"wrote {out}/metrics.json, {out}/report.html, {out}/experiment.yaml and the final model in "
               f"{out}/bundle")


def register(cli: click.Group) -> None:
    cli.add_command(run_cmd)
