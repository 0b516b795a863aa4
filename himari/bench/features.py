"""``himari bench features``: throughput of the 44 features, the normalizer, and the fitted pipeline transform."""

from __future__ import annotations

import time
from typing import Any

import click
import numpy as np


def _tiled_bars(n_bars: int) -> Any:
    """``n_bars`` hourly bars: the bundled BTCUSDT closes from 2019 on, repeated (price-continuous) as needed."""
    import pandas as pd

    from himari.data.bars import Bars
    from himari.data.loaders import load_bars

    src = load_bars("BTCUSDT").between("2022-01-01", None)
    o, h, lo, c, v = src.open, src.high, src.low, src.close, src.volume
    reps = int(np.ceil(n_bars / len(c)))
    scale = np.cumprod(np.concatenate([[1.0], np.full(reps - 1, c[-1] / c[0])]))
    tile = lambda a: np.concatenate([a * s for s in scale])[:n_bars]  # noqa: E731
    ts = pd.date_range("2010-01-01", periods=n_bars, freq="1h", tz="UTC")
    return Bars.from_arrays(ts, tile(o), tile(h), tile(lo), tile(c), np.tile(v, reps)[:n_bars], "BTCUSDT", "1h")


def run_features_bench(n_bars: int = 100_000, repeats: int = 3) -> dict[str, float]:
    """Best-of-``repeats`` seconds and bars/s for each stage."""
    from himari.features.normalize import rolling_percentile
    from himari.features.technical import compute_features
    from himari.tactical.pipeline import TacticalPipeline, clear_transform_cache

    bars = _tiled_bars(n_bars)

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    out: dict[str, float] = {"bars": float(n_bars)}
    t_feat = best(lambda: compute_features(bars))
    out["features44_s"] = t_feat
    out["features44_bars_per_s"] = n_bars / t_feat
    values = compute_features(bars).values
    t_pct = best(lambda: rolling_percentile(values, 500, 250))
    out["percentile500_s"] = t_pct
    first = str(bars.index[0])
    cut = str(bars.index[min(len(bars) - 1, n_bars // 2)])
    t0 = time.perf_counter()
    pipe = TacticalPipeline().fit(bars, first, cut)
    out["pipeline_fit_s"] = time.perf_counter() - t0
    def cold() -> None:
        clear_transform_cache()
        pipe.transform(bars)

    t_tr = best(cold)
    out["pipeline_transform_s"] = t_tr
    out["pipeline_transform_bars_per_s"] = n_bars / t_tr
    pipe.transform(bars)
    t_warm = best(lambda: pipe.transform(bars))
    out["pipeline_transform_cached_s"] = t_warm
    return out


def run_latency_bench(history_bars: int = 3000, new_bars: int = 500, recompute_bars: int = 20) -> dict[str, float]:
    """New-bar latency of the fitted pipeline on the bundled BTCUSDT hourly bars (fit on 2022, history from 2023):
    ``TacticalStream.update`` (features + validity + regime posterior for one new bar, ``history_bars`` already
    seen) against recomputing ``transform`` over the trailing ``history_bars`` + 1 bars (what paper trading and the
    API did per bar). Milliseconds per bar: p50 / p99 / max."""
    from himari.data.loaders import load_bars
    from himari.tactical.incremental import TacticalStream
    from himari.tactical.pipeline import TacticalPipeline, clear_transform_cache

    bars = load_bars("BTCUSDT").between("2022-01-01", None)
    pipe = TacticalPipeline().fit(bars, "2022-01-01", "2023-01-01")
    start = int(np.searchsorted(bars.timestamps_ns, bars.between("2023-01-01", None).timestamps_ns[0]))
    stop = min(len(bars), start + history_bars + new_bars)
    history = bars.with_frame(bars.frame.iloc[start : start + history_bars])
    fresh = bars.with_frame(bars.frame.iloc[start + history_bars : stop])
    t0 = time.perf_counter()
    stream = TacticalStream.from_history(pipe, history)
    init_s = time.perf_counter() - t0
    columns = zip(fresh.timestamps_ns.tolist(), fresh.open.tolist(), fresh.high.tolist(), fresh.low.tolist(),
                  fresh.close.tolist(), fresh.volume.tolist(), strict=True)
    times = []
    for bar in columns:
        t0 = time.perf_counter()
        stream.update(*bar)
        times.append(time.perf_counter() - t0)
    stream_ms = np.asarray(times) * 1e3
    recompute = []
    for k in range(min(recompute_bars, len(fresh))):
        window = bars.with_frame(bars.frame.iloc[start + k + 1 : start + history_bars + k + 1])
        clear_transform_cache()
        t0 = time.perf_counter()
        pipe.transform(window)
        recompute.append(time.perf_counter() - t0)
    recompute_ms = np.asarray(recompute) * 1e3
    return {
        "history_bars": float(history_bars), "new_bars": float(len(stream_ms)), "stream_init_s": init_s,
        "stream_p50_ms": float(np.percentile(stream_ms, 50)), "stream_p99_ms": float(np.percentile(stream_ms, 99)),
        "stream_max_ms": float(stream_ms.max()),
        "recompute_p50_ms": float(np.percentile(recompute_ms, 50)),
        "recompute_p99_ms": float(np.percentile(recompute_ms, 99)),
    }


def register_bench(group: click.Group) -> None:
    @group.command("features")
    @click.option("--bars", "n_bars", default=100_000, show_default=True)
    @click.option("--repeats", default=3, show_default=True)
    @click.option("--latency", is_flag=True,
                  help="Only the new-bar latency: TacticalStream.update vs recomputing the trailing history.")
    @click.option("--history", "history_bars", default=3000, show_default=True, help="--latency: bars already seen.")
    @click.option("--new-bars", default=500, show_default=True, help="--latency: bars pushed one at a time.")
    @click.option("--json", "as_json", is_flag=True)
    def features_bench(n_bars: int, repeats: int, latency: bool, history_bars: int, new_bars: int,
                       as_json: bool) -> None:
        """Throughput of the 44 features, the rolling-percentile normalizer and TacticalPipeline.transform; with
        --latency, the new-bar latency of the incremental pipeline (features + regime posterior)."""
        from himari.utils.io import to_json
        from himari.utils.threads import configure_torch_threads

        configure_torch_threads()
        if latency:
            lat = run_latency_bench(history_bars, new_bars)
            if as_json:
                click.echo(to_json(lat))
                return
            click.echo(f"new-bar latency, {history_bars} bars already seen, {int(lat['new_bars'])} new bars "
                       "(features + validity + regime posterior):")
            click.echo(f"  TacticalStream.update:   p50 {lat['stream_p50_ms']:.2f} ms  p99 {lat['stream_p99_ms']:.2f} ms"
                       f"  max {lat['stream_max_ms']:.2f} ms  (state built in {lat['stream_init_s']:.2f} s)")
            click.echo(f"  recompute transform:     p50 {lat['recompute_p50_ms']:.1f} ms  p99 "
                       f"{lat['recompute_p99_ms']:.1f} ms  (trailing {history_bars} bars, per bar)")
            return
        res = run_features_bench(n_bars, repeats)
        if as_json:
            click.echo(to_json(res))
            return
        click.echo(f"bars: {n_bars}")
        click.echo(f"44 features:             {res['features44_s']:.3f} s  ({res['features44_bars_per_s']:,.0f} bars/s)")
        click.echo(f"percentile(500) x44:     {res['percentile500_s']:.3f} s")
        click.echo(f"pipeline fit (half):     {res['pipeline_fit_s']:.3f} s")
        click.echo(f"pipeline transform:      {res['pipeline_transform_s']:.3f} s  ({res['pipeline_transform_bars_per_s']:,.0f} bars/s)")
        click.echo(f"  same bars again:       {res['pipeline_transform_cached_s']:.3f} s  (fit-independent inputs memoized)")
