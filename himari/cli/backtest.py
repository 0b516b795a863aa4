"""``himari backtest``: run a trained bundle over a date range with baselines, metrics and an HTML report."""

from __future__ import annotations

import click


@click.command("backtest")
@click.option("--run", "run_dir", required=True, help="Run directory holding a model bundle (RUN/bundle).")
@click.option("--data", "data_specs", multiple=True, help="OHLCV file or bundled name per symbol (default: the bundle's symbols, bundled).")
@click.option("--start", default=None, help="First traded bar (UTC date); earlier bars are warm-up only.")
@click.option("--end", default=None, help="End of the range (exclusive).")
@click.option("--out", required=True, help="Output directory (metrics.json, report.html, decisions.csv, fills.csv).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random baseline and the bootstrap.")
@click.option("--initial-equity", default=10_000.0, show_default=True)
@click.option("--risk-config", default=None, help="RiskConfig JSON overriding the bundle's risk settings.")
def backtest_cmd(run_dir: str, data_specs: tuple[str, ...], start: str | None, end: str | None, out: str, seed: int,
                 initial_equity: float, risk_config: str | None) -> None:
    """Backtest RUN's model on [START, END) through the same code as training and paper trading."""
    from himari.backtest.backtester import evaluate, run_backtest
    from himari.backtest.outputs import print_summary, write_outputs
    from himari.data.loaders import load_bars
    from himari.errors import DataError
    from himari.trading.bundle import load_bundle
    from himari.trading.session import SessionConfig
    from himari.utils.io import atomic_write_json
    from himari.utils.rundir import data_record, versions
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    bundle = load_bundle(run_dir)
    if risk_config:
        import json
        from pathlib import Path

        from himari.risk.config import RiskConfig

        bundle.risk_config = RiskConfig.parse(json.loads(Path(risk_config).read_text())).to_dict()
    specs = list(data_specs) or list(bundle.symbols)
    if len(specs) != len(bundle.symbols):
        raise DataError(f"the model trades {len(bundle.symbols)} symbol(s) ({', '.join(bundle.symbols)}); got {len(specs)} --data")
    bars = {}
    paths = {}
    for symbol, spec in zip(bundle.symbols, specs, strict=True):
        b = load_bars(spec, symbol=symbol)
        bars[symbol] = b
        paths[symbol] = b.source
    result = run_backtest(bundle, bars, start, end, seed=seed, session_config=SessionConfig(initial_equity=initial_equity))
    metrics = evaluate(result, seed=seed)
    notes = []
    from himari.trading.bundle import fit_periods

    periods = fit_periods(bundle.meta)
    if periods:
        import pandas as pd

        first, last = pd.Timestamp(int(result.timestamps_ns[0]), tz="UTC"), pd.Timestamp(int(result.timestamps_ns[-1]), tz="UTC")
        utc = [tuple(p.tz_localize("UTC") if p.tzinfo is None else p for p in period) for period in periods]
        fit_start, fit_end = min(s for s, _ in utc), max(e for _, e in utc)
        metrics["model_fit_period"] = {"start": fit_start.isoformat(), "end": fit_end.isoformat()}
        metrics["model_fit_periods"] = [{"start": s.isoformat(), "end": e.isoformat()} for s, e in utc]
        overlap = [(s, e) for s, e in utc if first < e and last >= s]
        metrics["in_sample"] = bool(overlap)
        if metrics["in_sample"]:
            s, e = overlap[0]
            text = (f"WARNING: this backtest overlaps data that reached the model's weights, normalizers or regime "
                    f"fit ({s:%Y-%m-%d} .. {e:%Y-%m-%d}); its results are in-sample, not evidence of an edge.")
            notes.append(text)
            click.echo(text, err=True)
    run_info = {"run": str(run_dir), "model_id": bundle.model_id, "seed": seed, "data": data_record(paths), "versions": versions(),
                "fit_windows": bundle.meta.get("fit_windows")}
    metrics["run_info"] = run_info
    write_outputs(out, result, metrics, f"Backtest of {bundle.model_id} on {', '.join(bundle.symbols)}", run_info,
                  notes=notes)
    atomic_write_json(f"{out}/run.json", {"command": "backtest", "run": str(run_dir), "start": start, "end": end, "seed": seed, **run_info})
    print_summary(metrics, f"backtest {metrics['period']['start'][:10]} -> {metrics['period']['end'][:10]} (after costs)")
    click.echo(f"wrote {out}/metrics.json and {out}/report.html")


def register(cli: click.Group) -> None:
    cli.add_command(backtest_cmd)
