"""``himari data ...``: validate, info, repair (and, from the data modules, fetch, synth, resample, store)."""

from __future__ import annotations

import sys

import click
import numpy as np

from himari.data.bundled import resolve_data_path
from himari.data.loaders import Repair, validate_file
from himari.errors import DataError
from himari.utils.io import sha256_file


@click.group("data")
def data_group() -> None:
    """Load, check, describe and generate OHLCV data."""


@data_group.command("validate")
@click.argument("paths", nargs=-1, required=True)
@click.option("--timeframe", default=None, help="Expected bar timeframe (e.g. 1h); inferred when omitted.")
@click.option("--max-rows", default=10, show_default=True, help="Rows listed per problem kind.")
@click.option("--quiet", is_flag=True, help="Only the status line per file.")
def validate_cmd(paths: tuple[str, ...], timeframe: str | None, max_rows: int, quiet: bool) -> None:
    """Check OHLCV files; list every problem with file and row. Exit 0 when usable (gaps are reported, not fatal)."""
    failed = 0
    for spec in paths:
        path = resolve_data_path(spec)
        report, _ = validate_file(path, timeframe)
        text = report.format(max_per_kind=max_rows)
        click.echo(text.splitlines()[0] if quiet else text)
        failed += 0 if report.ok else 1
    if failed:
        click.echo(f"error: {failed} of {len(paths)} file(s) are not usable", err=True)
        sys.exit(2)


@data_group.command("info")
@click.argument("path", default="BTCUSDT")
@click.option("--timeframe", default=None, help="Expected bar timeframe; inferred when omitted.")
def info_cmd(path: str, timeframe: str | None) -> None:
    """Range, rows, gaps and basic statistics of an OHLCV file (default: the bundled BTCUSDT)."""
    from himari.data.loaders import load_bars

    resolved = resolve_data_path(path)
    report, _ = validate_file(resolved, timeframe)
    if not report.ok:
        raise DataError(report.first_error_line().split(": ", 1)[1], str(resolved))
    bars = load_bars(resolved, timeframe=timeframe)
    tf = bars.timeframe
    r = bars.log_returns()
    r = r[np.isfinite(r)]
    ann = np.sqrt(tf.periods_per_year)
    years = (bars.end - bars.start).total_seconds() / (365 * 86400)
    total = bars.close[-1] / bars.close[0] - 1.0
    click.echo(f"file:            {resolved}")
    click.echo(f"sha256:          {sha256_file(resolved)}")
    click.echo(f"symbol:          {bars.symbol}")
    click.echo(f"timeframe:       {tf} ({tf.periods_per_year:.0f} bars/year)")
    click.echo(f"range:           {bars.start:%Y-%m-%dT%H:%MZ} -> {bars.end:%Y-%m-%dT%H:%MZ} ({years:.2f} years)")
    click.echo(f"rows:            {len(bars)}")
    click.echo(f"gaps:            {len(report.gaps)} events, {report.missing_bars} missing bars (left unfilled)")
    click.echo(f"zero-volume:     {report.zero_volume_rows} bars")
    click.echo(f"close:           first {bars.close[0]:.6g}, last {bars.close[-1]:.6g}, min {bars.close.min():.6g}, max {bars.close.max():.6g}")
    click.echo(f"buy-and-hold:    {total * 100:.1f}% total")
    click.echo(f"log return/bar:  mean {r.mean():.3e}, std {r.std(ddof=1):.3e}, annualized vol {r.std(ddof=1) * ann * 100:.1f}%")
    from scipy import stats

    click.echo(f"tails:           skew {stats.skew(r):.2f}, excess kurtosis {stats.kurtosis(r):.1f}, min {r.min() * 100:.2f}%, max {r.max() * 100:.2f}%")
    click.echo(f"volume/bar:      median {np.median(bars.volume):.6g}")


@data_group.command("repair")
@click.argument("path")
@click.option("--out", required=True, help="Where to write the repaired file (.parquet or .csv/.csv.gz).")
@click.option("--drop-duplicates", is_flag=True, help="Drop rows whose timestamp repeats an earlier row (keep the first).")
@click.option("--sort", "sort_rows", is_flag=True, help="Sort rows by timestamp.")
@click.option("--timeframe", default=None)
def repair_cmd(path: str, out: str, drop_duplicates: bool, sort_rows: bool, timeframe: str | None) -> None:
    """Apply explicit repairs (each one reported) and write a clean file. Gaps are never filled."""
    if not (drop_duplicates or sort_rows):
        raise click.UsageError("name at least one repair: --drop-duplicates and/or --sort")
    resolved = resolve_data_path(path)
    report, frame = validate_file(resolved, timeframe, Repair(drop_duplicates=drop_duplicates, sort=sort_rows))
    click.echo(report.format())
    if frame is None:
        raise DataError("still not usable after the requested repairs", str(resolved))
    from himari.data.store import write_frame

    write_frame(frame, out)
    click.echo(f"wrote {out} ({len(frame)} rows); repairs: {'; '.join(report.repairs) or 'none needed'}")


def register(cli: click.Group) -> None:
    cli.add_command(data_group)
