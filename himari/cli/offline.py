"""``himari offline ...``: commands of the offline-model family beyond ``himari train`` (ensembles)."""

from __future__ import annotations

import click


@click.group("offline")
def offline_group() -> None:
    """Offline RL and sequence models: ensembles of trained runs."""


@offline_group.command("ensemble")
@click.option("--member", "members", multiple=True, required=True, type=click.Path(file_okay=False, exists=True),
              help="Run directory of a trained offline model (repeat); all trained on the same data and windows.")
@click.option("--weights", default="fit", show_default=True,
              type=click.Choice(["fit", "production", "low-latency"]),
              help="'fit': maximum-likelihood weights on the validation labels; or a preset of the seeds "
                   "(production: flag-trader .50, cgdt .35, cql .15; low-latency: cql .60, mlp-classifier .40).")
@click.option("--mode", default="average", show_default=True, type=click.Choice(["average", "vote"]))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--seed", default=0, show_default=True, type=int)
def ensemble_cmd(members: tuple[str, ...], weights: str, mode: str, out: str, seed: int) -> None:
    """Combine trained runs into an ensemble run (RUN/bundle usable by backtest, serve and paper)."""
    from himari.training.offline import train_ensemble
    from himari.utils.io import read_json

    run = train_ensemble(list(members), out, weights=weights, mode=mode, seed=seed)
    metrics = read_json(run / "metrics.json")
    shares = ", ".join(f"{k} {v:.2f}" for k, v in metrics["weights"].items())
    val = metrics["classification"]["validation"]
    click.echo(f"ensemble ({mode}) weights: {shares}")
    click.echo(f"validation log-loss {val['model']['log_loss']:.4f} (majority baseline "
               f"{val['majority_baseline']['log_loss']:.4f}), balanced accuracy "
               f"{val['model']['balanced_accuracy']:.3f}")
    click.echo(f"bundle: {run / 'bundle'}")


def register(cli: click.Group) -> None:
    cli.add_command(offline_group)
