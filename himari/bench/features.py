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


def register_bench(group: click.Group) -> None:
    @group.command("features")
    @click.option("--bars", "n_bars", default=100_000, show_default=True)
    @click.option("--repeats", default=3, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def features_bench(n_bars: int, repeats: int, as_json: bool) -> None:
        """Throughput of the 44 features, the rolling-percentile normalizer and TacticalPipeline.transform."""
        from himari.utils.io import to_json
        from himari.utils.threads import configure_torch_threads

        configure_torch_threads()
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
