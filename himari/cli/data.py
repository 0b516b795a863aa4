"""``himari data ...``: validate, info, repair (and, from the data modules, fetch, synth, resample, store)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from himari.errors import DataError


def resolve_data_path(spec: str) -> Path:
    """A bundled dataset name or a path -> the file path (imported on use: keeps `himari --help` fast)."""
    from himari.data.bundled import resolve_data_path as resolve

    return resolve(spec)


@click.group("data")
def data_group() -> None:
    """Load, check, describe and generate OHLCV data."""


@data_group.command("validate")
@click.argument("paths", nargs=-1, required=True)
@click.option("--timeframe", default=None, help="Expected bar timeframe (e.g. 1h); inferred when omitted.")
@click.option("--max-rows", default=10, show_default=True, help="Rows listed per problem kind.")
@click.option("--quiet", is_flag=True, help="Only the status line per file.")
@click.option("--max-bar-move", default=None, type=float,
              help="Largest plausible one-bar price ratio (close to close, high to low) [default: 10].")
@click.option("--min-price", default=None, type=float, help="Smallest plausible price [default: 1e-8].")
@click.option("--max-price", default=None, type=float, help="Largest plausible price [default: 1e9].")
def validate_cmd(paths: tuple[str, ...], timeframe: str | None, max_rows: int, quiet: bool,
                 max_bar_move: float | None, min_price: float | None, max_price: float | None) -> None:
    """Check OHLCV files; list every problem with file and row. Exit 0 when usable (gaps are reported, not fatal)."""
    from himari.data.loaders import validate_file
    from himari.data.validate import PlausibilityConfig

    bounds = {"max_bar_move": max_bar_move, "min_price": min_price, "max_price": max_price}
    plausibility = PlausibilityConfig.parse({k: v for k, v in bounds.items() if v is not None})
    failed = 0
    for spec in paths:
        path = resolve_data_path(spec)
        report, _ = validate_file(path, timeframe, plausibility=plausibility)
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
    import numpy as np

    from himari.data.loaders import load_bars, validate_file
    from himari.utils.io import sha256_file

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
    from himari.data.loaders import Repair, validate_file

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


@data_group.command("synth")
@click.option("--scenarios", default=500, show_default=True, help="Number of scenarios.")
@click.option("--bars", "n_bars", default=2000, show_default=True, help="Bars per scenario.")
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed -> byte-identical output).")
@click.option("--out", required=True, help="Output directory (scenarios.parquet + synth.json).")
@click.option("--calibrate-from", "calibrate_from", default=None,
              help="Fit GARCH(1,1) + jump parameters on this data (file or bundled name, e.g. BTCUSDT).")
@click.option("--calibrate-start", default=None, help="Only use bars from this date for calibration (UTC).")
@click.option("--calibrate-end", default=None, help="Only use bars before this date for calibration (UTC).")
@click.option("--mix", default=None,
              help="Family weights, e.g. 'mixed=0.4,crash=0.2,bear=0.2,vol_cluster=0.1,bull=0.1,flash_crash=0'.")
@click.option("--config", "config_path", default=None, help="JSON file with SynthConfig fields.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table.")
@click.option("--method", type=click.Choice(["mjd", "timegan", "tabddpm"]), default="mjd", show_default=True,
              help="mjd: jump-diffusion + GARCH + regime chain (the scenario families); timegan / tabddpm: learned "
                   "generators fitted on --calibrate-from (saved to OUT/generator).")
@click.option("--size", type=click.Choice(["tiny", "small", "medium", "large"]), default="small", show_default=True,
              help="timegan / tabddpm: network size and training budget (tiny: smoke tests only).")
@click.option("--generator", "generator_dir", default=None,
              help="timegan / tabddpm: sample from this saved generator (OUT/generator of an earlier run) instead "
                   "of fitting one.")
@click.option("--crisis-boost", default=1.0, show_default=True, type=click.FloatRange(min=0.01, max=100),
              help="tabddpm: multiply the entries into the CRISIS regime (enrich tail states).")
def synth_cmd(
    scenarios: int, n_bars: int, seed: int, out: str, calibrate_from: str | None, calibrate_start: str | None,
    calibrate_end: str | None, mix: str | None, config_path: str | None, as_json: bool, method: str, size: str,
    generator_dir: str | None, crisis_boost: float,
) -> None:
    """Generate synthetic markets: stress scenarios (jump-diffusion + GARCH + regime chain) or bars from a learned
    generator (TimeGAN, Tab-DDPM), and print their summary."""
    from himari.data.synth import SynthConfig, format_summary, generate_batch, save_batch, stress_summary
    from himari.errors import ConfigError
    from himari.utils.io import read_json, to_json
    from himari.utils.progress import progress_bar

    if method != "mjd":
        _synth_learned(method, scenarios, n_bars, seed, out, calibrate_from, calibrate_start, calibrate_end, size,
                       generator_dir, crisis_boost, as_json)
        return
    if generator_dir:
        raise ConfigError("--generator needs --method timegan or tabddpm")

    base = read_json(config_path) if config_path else {}
    overrides: dict[str, object] = {"n_scenarios": scenarios, "n_bars": n_bars}
    if mix:
        weights: dict[str, float] = {}
        for part in mix.split(","):
            name, sep, value = part.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"--mix: cannot read {part!r}; expected family=weight") from None
            if not sep:
                raise ConfigError(f"--mix: cannot read {part!r}; expected family=weight")
        overrides["mix"] = weights
    config = SynthConfig.parse(base, **overrides)
    with progress_bar("synth", total=3) as bar:
        if calibrate_from:
            from himari.data.calibrate import calibrate_from_bars
            from himari.data.loaders import load_bars

            real = load_bars(resolve_data_path(calibrate_from))
            if calibrate_start or calibrate_end:
                real = real.between(calibrate_start, calibrate_end)
            calibration = calibrate_from_bars(real)
            config = calibration.apply(config)
            g, j = calibration.garch, calibration.jumps
            click.echo(
                f"calibrated on {real.describe_range()}: GARCH alpha {g.alpha:.3f} beta {g.beta:.3f} "
                f"annual vol {g.annual_vol * 100:.0f}%; jumps {j.intensity_per_year:.0f}/year, mean {j.mean * 100:.2f}%, "
                f"sd {j.std * 100:.2f}%; drift {calibration.drift_annual * 100:.0f}%/year (reported, not applied)",
                err=True,
            )
        bar.advance(1, info="generating")
        batch = generate_batch(config, seed)
        bar.advance(1, info="writing")
        summary = stress_summary(batch)
        files = save_batch(batch, out, summary)
        bar.advance(1)
    if as_json:
        click.echo(to_json(summary))
    else:
        click.echo(f"{batch.n_scenarios} scenarios x {batch.n_bars} bars ({config.timeframe}), seed {seed}")
        click.echo(format_summary(summary))
    click.echo(f"wrote {', '.join(files)}", err=True)


def _synth_learned(method: str, scenarios: int, n_bars: int, seed: int, out: str, fit_data: str | None,
                   fit_start: str | None, fit_end: str | None, size: str, generator_dir: str | None,
                   crisis_boost: float, as_json: bool) -> None:
    """``data synth --method timegan|tabddpm``: fit (or load) the generator, write ``scenarios.parquet`` +
    ``synth.json`` (+ ``generator/``)."""
    from himari.errors import ConfigError
    from himari.training.synthetic import fit_generator, generate_bars, load_generator, save_generator
    from himari.utils.io import to_json
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    if generator_dir:
        gen = load_generator(generator_dir)
        if gen.method != method:
            raise ConfigError(f"--generator {generator_dir} holds a {gen.method} generator, not {method}")
    else:
        if not fit_data:
            raise ConfigError(f"--method {method} learns from real bars: give --calibrate-from DATA "
                              "(e.g. BTCUSDT) and optionally --calibrate-start/--calibrate-end")
        from himari.data.loaders import load_bars

        real = load_bars(resolve_data_path(fit_data))
        if fit_start or fit_end:
            real = real.between(fit_start, fit_end)
        click.echo(f"fitting {method} ({size}) on {real.describe_range()}", err=True)
        gen = fit_generator(method, real, seed=seed, size=size)
        save_generator(gen, Path(out) / "generator")
    bars = [generate_bars(gen, n_bars, seed + i, symbol=f"SYN-{method.upper()}-{i:05d}", crisis_boost=crisis_boost)
            for i in range(scenarios)]
    files = _write_generated(bars, method, seed, gen.describe(), out)
    summary = _generated_summary(bars)
    if as_json:
        click.echo(to_json(summary))
    else:
        click.echo(f"{scenarios} scenarios x {n_bars} bars ({gen.timeframe}) from {method}, seed {seed}")
        for row in summary[:20]:
            click.echo(f"  {row['symbol']}: return {row['total_return']:+.1%}, max DD {row['max_drawdown']:.1%}, "
                       f"vol {row['annual_vol']:.0%}, excess kurtosis {row['excess_kurtosis']:.1f}")
    click.echo(f"wrote {', '.join(files)}", err=True)


def _generated_summary(bars: list) -> list[dict[str, object]]:
    import numpy as np

    rows = []
    for b in bars:
        r = b.log_returns()
        r = r[np.isfinite(r)]
        z = (r - r.mean()) / r.std() if r.std() > 0 else r * 0
        c = b.close
        rows.append({"symbol": b.symbol, "total_return": float(c[-1] / b.open[0] - 1),
                     "max_drawdown": float(np.max(1 - c / np.maximum.accumulate(c))),
                     "annual_vol": float(r.std() * np.sqrt(b.timeframe.periods_per_year)),
                     "excess_kurtosis": float(np.mean(z ** 4) - 3)})
    return rows


def _write_generated(bars: list, method: str, seed: int, generator: dict, out: str) -> list[str]:
    """``OUT/scenarios.parquet`` (scenario, timestamp, OHLCV) and ``OUT/synth.json``, atomically."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from himari.utils.io import atomic_write_bytes, atomic_write_json

    table = pa.table({
        "scenario": pa.array(np.repeat(np.arange(len(bars), dtype=np.int32), [len(b) for b in bars])),
        "timestamp": pa.array(np.concatenate([b.timestamps_ns for b in bars]).astype("datetime64[ns]"),
                              type=pa.timestamp("ns", tz="UTC")),
        **{col: pa.array(np.concatenate([getattr(b, col) for b in bars]))
           for col in ("open", "high", "low", "close", "volume")},
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    root = Path(out)
    p1 = atomic_write_bytes(root / "scenarios.parquet", buffer.getvalue())
    p2 = atomic_write_json(root / "synth.json", {"format": "himari.synth-learned/1", "method": method, "seed": seed,
                                                 "generator": generator, "n_scenarios": len(bars),
                                                 "n_bars": len(bars[0]), "summary": _generated_summary(bars)})
    return [str(p1), str(p2)]


@data_group.command("synth-report")
@click.option("--data", "data_path", default="BTCUSDT", show_default=True, help="Real bars (file or bundled name).")
@click.option("--fit-start", default="2021-01-01", show_default=True, help="Generators learn from [fit-start, fit-end).")
@click.option("--fit-end", default="2022-01-01", show_default=True)
@click.option("--holdout-end", default="2023-01-01", show_default=True,
              help="Real held-out bars: [fit-end, holdout-end) (keep it before 2023: settings are chosen there).")
@click.option("--methods", default="mjd,timegan,tabddpm", show_default=True, help="Comma-separated generators.")
@click.option("--bars", "n_bars", default=None, type=click.IntRange(min=1000),
              help="Bars generated per method [default: as many as held out].")
@click.option("--size", type=click.Choice(["tiny", "small", "medium", "large"]), default="small", show_default=True,
              help="timegan / tabddpm: network size and training budget (tiny: smoke tests only).")
@click.option("--score-iters", default=400, show_default=True, type=click.IntRange(min=1),
              help="Training steps of the post-hoc classifier and predictor.")
@click.option("--crisis-boost", default=1.0, show_default=True, type=click.FloatRange(min=0.01, max=100))
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default=None, help="Directory for report.json and report.md.")
def synth_report_cmd(data_path: str, fit_start: str, fit_end: str, holdout_end: str, methods: str,
                     n_bars: int | None, size: str, score_iters: int, crisis_boost: float, seed: int,
                     out: str | None) -> None:
    """Quality of synthetic bars (MJD/GARCH, TimeGAN, Tab-DDPM) against real held-out bars: TimeGAN's
    discriminative and predictive scores and stylized facts (kurtosis, |r| autocorrelation, leverage, drawdowns,
    tail quantiles, regime durations)."""
    from himari.data.generators import METHODS
    from himari.data.loaders import load_bars
    from himari.errors import ConfigError
    from himari.training.synthetic import quality_report, render_quality_report
    from himari.utils.io import atomic_write_json, atomic_write_text
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise ConfigError(f"--methods: unknown {unknown or methods!r}; known: {', '.join(METHODS)}")
    bars = load_bars(resolve_data_path(data_path))
    report = quality_report(bars, fit_start, fit_end, holdout_end, chosen, n_bars, seed, size, crisis_boost,
                            score_iters=score_iters)
    text = render_quality_report(report)
    click.echo(text)
    if out:
        atomic_write_json(Path(out) / "report.json", report)
        atomic_write_text(Path(out) / "report.md", text)
        click.echo(f"wrote {Path(out) / 'report.json'}, {Path(out) / 'report.md'}", err=True)


@data_group.command("fetch")
@click.option("--exchange", "exchange_id", default="binance", show_default=True, help="ccxt exchange id.")
@click.option("--symbol", required=True, help="Market symbol, e.g. BTC/USDT.")
@click.option("--timeframe", default="1h", show_default=True)
@click.option("--since", required=True, help="First bar to fetch (UTC date/time), e.g. 2017-08-17.")
@click.option("--until", default=None, help="Stop before this time (UTC); default: the last closed bar.")
@click.option("--out", default=None, help="Output file (.parquet/.csv/.csv.gz); resumed if it exists. "
              "Default: the store file for exchange/symbol/timeframe.")
@click.option("--data-dir", default=None, help="Store directory when --out is omitted (default $HIMARI_DATA_DIR "
              "or ./himari_store).")
@click.option("--limit", default=1000, show_default=True, help="Candles per request.")
@click.option("--max-retries", default=6, show_default=True, help="Retries on network/rate-limit errors.")
def fetch_cmd(
    exchange_id: str, symbol: str, timeframe: str, since: str, until: str | None, out: str | None,
    data_dir: str | None, limit: int, max_retries: int,
) -> None:
    """Download OHLCV candles through ccxt: paginated, rate-limited, retried, resumable, validated."""
    from himari.data import fetch as fetch_module
    from himari.data.store import DataStore
    from himari.utils.progress import progress_bar

    target = out or str(DataStore(data_dir).path_for(exchange_id, symbol, timeframe))
    config = fetch_module.FetchConfig(limit=limit, max_retries=max_retries)
    with progress_bar(f"fetch {symbol}", total=None) as bar:
        result = fetch_module.fetch_to_file(
            exchange_id, symbol, timeframe, since, target, until=until, config=config,
            factory=fetch_module.ccxt_exchange, clock=fetch_module.SystemClock(),
            on_page=lambda n, last: bar.advance(n, info=f"{last:%Y-%m-%d %H:%M}"),
        )
    click.echo(result.summary())
    if result.report is not None and result.report.gaps:
        click.echo("\n".join(result.report.format(show_gaps=20).splitlines()[1:]))


@data_group.command("resample")
@click.argument("path")
@click.option("--to", "target", required=True, help="Target timeframe, e.g. 4h or 1d (a multiple of the source).")
@click.option("--out", required=True, help="Output file (.parquet/.csv/.csv.gz).")
@click.option("--incomplete", type=click.Choice(["drop", "keep"]), default="drop", show_default=True,
              help="Buckets missing source bars (gaps, partial first/last bucket): drop them or keep them.")
@click.option("--timeframe", default=None, help="Source timeframe; inferred when omitted.")
def resample_cmd(path: str, target: str, out: str, incomplete: str, timeframe: str | None) -> None:
    """Aggregate OHLCV bars to a coarser timeframe on UTC bucket boundaries; incomplete buckets are reported."""
    from himari.data.loaders import load_bars
    from himari.data.resample import resample_bars
    from himari.data.store import write_frame

    bars = load_bars(resolve_data_path(path), timeframe=timeframe)
    result = resample_bars(bars, target, incomplete)  # type: ignore[arg-type]
    if len(result.bars) == 0:
        raise DataError(f"no complete {target} bucket in the data; nothing written (use --incomplete keep)", path)
    write_frame(result.bars.frame, out)
    click.echo(result.report())
    click.echo(f"wrote {out} ({len(result.bars)} bars)")


@data_group.group("store")
@click.option("--data-dir", default=None, help="Store directory (default $HIMARI_DATA_DIR or ./himari_store).")
@click.pass_context
def store_group(ctx: click.Context, data_dir: str | None) -> None:
    """The local store: Parquet files per exchange/symbol/timeframe, queried with DuckDB."""
    from himari.data.store import DataStore

    ctx.obj = DataStore(data_dir)


@store_group.command("add")
@click.argument("path")
@click.option("--exchange", required=True, help="Exchange name to file it under, e.g. binance.")
@click.option("--symbol", default=None, help="Symbol (default: inferred from the file name).")
@click.option("--timeframe", default=None, help="Timeframe (default: inferred).")
@click.option("--replace", is_flag=True, help="Replace the stored series instead of merging.")
@click.pass_obj
def store_add_cmd(store: object, path: str, exchange: str, symbol: str | None, timeframe: str | None,
                  replace: bool) -> None:
    """Validate a file and add (merge) it into the store."""
    from himari.data.loaders import load_bars
    from himari.data.store import DataStore

    assert isinstance(store, DataStore)
    bars = load_bars(resolve_data_path(path), symbol=symbol, timeframe=timeframe)
    before = {e.path: e.rows for e in store.entries()}
    entry = store.add(bars, exchange, symbol, replace=replace)
    added = entry.rows - before.get(entry.path, 0)
    click.echo(f"stored {entry.exchange} {entry.symbol} {entry.timeframe}: {entry.rows} bars "
               f"({added:+d}) in {entry.path}")


@store_group.command("list")
@click.pass_obj
def store_list_cmd(store: object) -> None:
    """List stored series."""
    from himari.data.store import DataStore

    assert isinstance(store, DataStore)
    entries = store.entries()
    if not entries:
        click.echo(f"store {store.root} is empty")
        return
    click.echo(f"{'exchange':<12}{'symbol':<14}{'tf':<5}{'rows':>9}  range")
    for e in entries:
        span = f"{e.first:%Y-%m-%dT%H:%MZ} -> {e.last:%Y-%m-%dT%H:%MZ}" if e.first is not None else "empty"
        click.echo(f"{e.exchange:<12}{e.symbol:<14}{e.timeframe:<5}{e.rows:>9}  {span}")


@store_group.command("query")
@click.argument("sql")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@click.option("--max-rows", default=50, show_default=True)
@click.pass_obj
def store_query_cmd(store: object, sql: str, as_csv: bool, max_rows: int) -> None:
    """Run DuckDB SQL over the view 'bars' (exchange, symbol, timeframe, timestamp, open, high, low, close, volume)."""
    from himari.data.store import DataStore

    assert isinstance(store, DataStore)
    frame = store.query(sql)
    if as_csv:
        click.echo(frame.to_csv(index=False), nl=False)
    else:
        import pandas as pd

        with pd.option_context("display.width", 160, "display.max_columns", 20):
            click.echo(frame.to_string(index=False, max_rows=max_rows))


def register(cli: click.Group) -> None:
    cli.add_command(data_group)
