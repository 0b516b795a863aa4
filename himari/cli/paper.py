"""``himari paper``: paper trading on a replay or live (ccxt) feed, with an optional shadow model; ``paper compare``."""

from __future__ import annotations

import click

from himari.errors import ConfigError


@click.group("paper", invoke_without_command=True)
@click.option("--run", "run", default=None, help="Run directory (or bundle directory) of the champion model.")
@click.option("--feed", "feeds", multiple=True, help="replay:PATH (file or bundled name) or ccxt:EXCHANGE:SYMBOL; repeat per symbol.")
@click.option("--db", default=None, help="SQLite database (WAL) for orders, fills, equity and state; resumes if it exists.")
@click.option("--shadow", default=None, help="Run directory of a challenger model to run beside the champion.")
@click.option("--speed", default=0.0, show_default=True, type=float,
              help="Replay speed: N times real time (0 = as fast as possible).")
@click.option("--start", default=None, help="First bar to trade (UTC); earlier bars are warm-up history only.")
@click.option("--end", default=None, help="Stop before this bar (UTC, exclusive).")
@click.option("--initial-equity", default=10_000.0, show_default=True, type=float)
@click.option("--max-bars", default=None, type=int, help="Stop after trading this many bars.")
@click.option("--poll-interval", default=30.0, show_default=True, type=float, help="ccxt: longest wait between polls (s).")
@click.option("--metrics-port", default=None, type=int,
              help="Serve Prometheus metrics on 127.0.0.1:PORT while running.")
@click.pass_context
def paper_group(
    ctx: click.Context,
    run: str | None,
    feeds: tuple[str, ...],
    db: str | None,
    shadow: str | None,
    speed: float,
    start: str | None,
    end: str | None,
    initial_equity: float,
    max_bars: int | None,
    poll_interval: float,
    metrics_port: int | None,
) -> None:
    """Paper-trade a trained model: every closed bar is decided, filled at the next open with the backtester's
    costs, and committed to --db in one transaction (kill -9 safe: rerun the same command to resume).

    \b
    himari paper --run RUN --feed replay:BTCUSDT --db paper.sqlite --start 2024-06-01
    himari paper --run RUN --feed ccxt:binance:BTC/USDT --db live.sqlite --metrics-port 9108
    himari paper --run RUN --shadow RUN2 --feed replay:BTCUSDT --db ab.sqlite && himari paper compare --db ab.sqlite
    """
    if ctx.invoked_subcommand is not None:
        return
    if run is None or db is None or not feeds:
        raise click.UsageError("--run, --feed and --db are required (or use 'himari paper compare --db ...')")
    from himari.ops.metrics import Metrics
    from himari.paper.runner import run_paper_command
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    metrics = None
    if metrics_port is not None:
        from prometheus_client import start_http_server

        metrics = Metrics()
        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
    from himari.utils.progress import progress_bar

    with progress_bar("paper", total=max_bars) as bar:

        def on_commit(ts_ns: int, records: dict) -> None:
            import pandas as pd

            equity = ", ".join(f"{name} {rec.equity:,.0f}" for name, rec in records.items())
            bar.advance(1, info=f"{pd.Timestamp(ts_ns, tz='UTC'):%Y-%m-%d %H:%M} equity {equity}")

        summary = run_paper_command(
            run, feeds, db, shadow=shadow, speed=speed, start=start, end=end, initial_equity=initial_equity,
            max_bars=max_bars, poll_interval_s=poll_interval, metrics=metrics, on_commit=on_commit,
        )
    resumed = "" if summary.resumed_from_ns is None else " (resumed)"
    click.echo(f"paper: traded {summary.bars_traded} bars{resumed}, warm-up {summary.bars_warmup} bars -> {db}")
    for stream, equity in summary.final_equity.items():
        click.echo(f"  {stream}: equity {equity:,.2f}, fills this session {summary.fills[stream]}")


@paper_group.command("compare")
@click.option("--db", required=True, help="Database written by 'himari paper ... --shadow RUN2'.")
@click.option("--champion", default="champion", show_default=True)
@click.option("--challenger", default="shadow", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option("--n-boot", default=2000, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_cmd(db: str, champion: str, challenger: str, seed: int, n_boot: int, as_json: bool) -> None:
    """Compare the challenger with the champion: metrics and a paired block-bootstrap test of the return difference."""
    from himari.paper.shadow import compare_streams, format_comparison
    from himari.paper.store import PaperStore
    from himari.utils.io import to_json

    with PaperStore(db, readonly=True) as store:
        timeframe = store.meta().get("timeframe")
        if not timeframe:
            raise ConfigError(f"{db}: not a paper-trading database (no timeframe in meta)")
        result = compare_streams(store, timeframe, champion, challenger, seed=seed, n_boot=n_boot)
    click.echo(to_json(result.to_dict()) if as_json else format_comparison(result))


def register(cli: click.Group) -> None:
    cli.add_command(paper_group)
