"""``himari risk ...``: calibrate the risk layer on a training window and report on validation."""

from __future__ import annotations

import click


@click.group("risk")
def risk_group() -> None:
    """Position sizing and risk gates: calibration and inspection."""


@risk_group.command("calibrate")
@click.option(
    "--data", "data_path", default="BTCUSDT", show_default=True, help="OHLCV file or bundled dataset name."
)
@click.option(
    "--train-start", default=None, help="First training bar (UTC date); default: start of the data."
)
@click.option("--train-end", required=True, help="End of the training window (exclusive, UTC date).")
@click.option(
    "--validation-end",
    default=None,
    help="End of the validation window (exclusive); default train end + 182 days.",
)
@click.option(
    "--base-config",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="RiskConfig JSON to start from.",
)
@click.option(
    "--vol-quantile",
    default=0.75,
    show_default=True,
    type=click.FloatRange(0.0, 1.0),
    help="Quantile of trailing realized vol used as the vol cap.",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the fitted RiskConfig JSON."
)
@click.option(
    "--report",
    "report_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write the full report as JSON.",
)
def calibrate_cmd(
    data_path: str,
    train_start: str | None,
    train_end: str,
    validation_end: str | None,
    base_config: str | None,
    vol_quantile: float,
    out: str,
    report_path: str | None,
) -> None:
    """Fit EVT threshold/shape and the vol cap on the training window; report VaR backtests on validation only.

    The output file is a RiskConfig JSON that other commands accept (e.g. as a bundle's risk config).
    """
    from himari.data.loaders import load_bars
    from himari.risk.calibrate import calibrate, format_report
    from himari.risk.config import RiskConfig
    from himari.utils.io import atomic_write_json, read_json

    bars = load_bars(data_path)
    base = RiskConfig.parse(read_json(base_config)) if base_config else RiskConfig()
    config, report = calibrate(
        bars, train_end, validation_end, base, train_start=train_start, vol_quantile=vol_quantile
    )
    atomic_write_json(out, config.to_dict())
    if report_path:
        atomic_write_json(report_path, report)
    click.echo(format_report(report))
    click.echo(f"wrote {out}")


@risk_group.command("bench")
@click.option(
    "--assets", default=1, show_default=True, type=click.IntRange(1, 3), help="BTC, ETH, SOL (in that order)."
)
@click.option("--bars", default=5000, show_default=True, type=click.IntRange(10), help="Decisions to time.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_cmd(assets: int, bars: int, seed: int, as_json: bool) -> None:
    """CPU time per sizing + risk decision on bundled bars (with and without the periodic EVT refit)."""
    from himari.risk.bench import bench
    from himari.utils.io import to_json

    result = bench(assets, bars, seed)
    if as_json:
        click.echo(to_json(result, indent=None))
        return
    click.echo(f"assets {assets}, {int(result['decisions'])} decisions")
    click.echo(f"  {result['us_per_decision']:.1f} us/decision (with the default EVT refit schedule)")
    click.echo(f"  {result['us_per_decision_excluding_evt_refit']:.1f} us/decision excluding EVT refits")


def register(cli: click.Group) -> None:
    cli.add_command(risk_group)
