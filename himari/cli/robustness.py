"""``himari robustness``: decision flip rate and P&L of a trained policy under FGSM / PGD observation attacks."""

from __future__ import annotations

import click


@click.command("robustness")
@click.option("--run", "run_dir", required=True, help="Run directory holding a PPO model bundle (RUN/bundle).")
@click.option("--eps", "eps_text", default="0.01,0.05,0.1", show_default=True,
              help="Comma-separated attack radii (L-inf, normalized feature units); 0 (clean) is always added.")
@click.option("--steps", default=1, show_default=True, type=click.IntRange(1, 100),
              help="1: FGSM; more: PGD with that many steps.")
@click.option("--target", type=click.Choice(["features", "all"]), default="features", show_default=True,
              help="Attack the market features only, or the whole observation.")
@click.option("--data", "data_specs", multiple=True, help="OHLCV file or bundled name per symbol (default: bundled).")
@click.option("--start", default=None, help="Period start (default: the bundle's test period, else validation).")
@click.option("--end", default=None)
@click.option("--out", default=None, help="Write robustness.json and robustness.md here.")
def robustness_cmd(run_dir, eps_text, steps, target, data_specs, start, end, out) -> None:
    """Robustness report: one deterministic pass over the period per eps, decisions on attacked observations."""
    from pathlib import Path

    from himari.backtest.robustness import period_of, render_robustness, robustness_report
    from himari.data.loaders import load_bars
    from himari.errors import ConfigError, DataError
    from himari.trading.bundle import load_bundle
    from himari.utils.io import atomic_write_json, atomic_write_text
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    try:
        eps_values = [float(e) for e in eps_text.split(",") if e.strip()]
    except ValueError:
        raise ConfigError(f"--eps {eps_text!r}: expected comma-separated numbers") from None
    if any(e < 0 for e in eps_values):
        raise ConfigError(f"--eps {eps_text!r}: radii must be >= 0")
    bundle = load_bundle(run_dir)
    specs = list(data_specs) or list(bundle.symbols)
    if len(specs) != len(bundle.symbols):
        raise DataError(f"the model trades {len(bundle.symbols)} symbol(s); got {len(specs)} --data")
    bars = {symbol: load_bars(spec, symbol=symbol) for symbol, spec in zip(bundle.symbols, specs, strict=True)}
    p0, p1, what = period_of(bundle, start, end)
    rows = robustness_report(bundle, bars, p0, p1, eps_values, steps=steps, target=target)
    attack_name = "FGSM" if steps == 1 else f"PGD-{steps}"
    text = render_robustness(rows, f"robustness of {bundle.model_id}: {attack_name} on {target}, [{p0}, {p1}) ({what})")
    click.echo(text)
    if out:
        atomic_write_json(Path(out) / "robustness.json", {"run": str(run_dir), "start": p0, "end": p1, "period": what,
                                                          "attack": attack_name, "target": target, "rows": rows})
        atomic_write_text(Path(out) / "robustness.md", text)
        click.echo(f"wrote {out}/robustness.json and {out}/robustness.md")


def register(cli: click.Group) -> None:
    cli.add_command(robustness_cmd)
