"""``himari bench decide`` and ``himari bench backtest``: where a user waits on a trained model.

* ``decide``: new bar -> decision in process, as paper trading does it (:meth:`TradingSession.on_bar`: the tactical
  rows of the new bar, the market of the trailing ``history_bars``, the policy, sizing and every risk gate, and the
  fill of the previous order), with ``history_bars`` already seen; against re-transforming the trailing history per
  bar (``SessionConfig(incremental=False)``, the previous behaviour).
* ``backtest``: :func:`run_backtest` of the model over a span of the bundled data: market build (one transform),
  the bar loop, the baselines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np


def _bars_for(bundle: Any) -> dict[str, Any]:
    from himari.data.loaders import load_bars

    return {s: load_bars(s) for s in bundle.symbols}


def run_decide_bench(run: str | Path, history_bars: int = 3000, new_bars: int = 500, start: str = "2024-01-01",
                     batch_bars: int = 20) -> dict[str, float]:
    """Milliseconds per new bar of ``TradingSession.on_bar`` (p50 / p99 / max) after ``history_bars`` bars."""
    import pandas as pd

    from himari.trading.bundle import load_bundle
    from himari.trading.session import SessionConfig, TradingSession

    bundle = load_bundle(run)
    bars = _bars_for(bundle)
    first = bars[bundle.symbols[0]]
    i0 = int(first.index.searchsorted(pd.Timestamp(start, tz="UTC")))
    i0 = max(i0, history_bars)
    stop = min(len(first), i0 + new_bars)
    stamps = first.index[i0 - 1 : stop]

    def windows(k: int) -> dict[str, Any]:
        end = stamps[k]
        out = {}
        for s, b in bars.items():
            j = int(b.index.searchsorted(end, side="right"))
            out[s] = b.with_frame(b.frame.iloc[max(0, j - history_bars) : j])
        return out

    cpu: list[float] = []

    def timed(session: TradingSession, ks: range) -> np.ndarray:
        times = []
        for k in ks:
            w = windows(k)  # the bars a feed hands over; building them is not the decision
            c0, t0 = time.thread_time(), time.perf_counter()
            session.on_bar(w)
            times.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
        return np.asarray(times) * 1e3

    session = TradingSession(bundle, SessionConfig(history_bars=history_bars))
    cold = timed(session, range(0, 1))  # the first bar: anchored rebuild of the streams
    stream_ms = timed(session, range(1, len(stamps)))
    cpu_ms = np.asarray(cpu[1:]) * 1e3
    batch = TradingSession(bundle, SessionConfig(history_bars=history_bars, incremental=False))
    batch_ms = timed(batch, range(0, min(batch_bars, len(stamps))))
    return {
        "history_bars": float(history_bars),
        "new_bars": float(len(stream_ms)),
        "first_bar_ms": float(cold[0]),
        "p50_ms": float(np.percentile(stream_ms, 50)),
        "p99_ms": float(np.percentile(stream_ms, 99)),
        "max_ms": float(stream_ms.max()),
        "cpu_p50_ms": float(np.percentile(cpu_ms, 50)),  # this thread's CPU time: what a busy machine adds is waiting
        "cpu_p99_ms": float(np.percentile(cpu_ms, 99)),
        "batch_p50_ms": float(np.percentile(batch_ms, 50)) if batch_ms.size else float("nan"),
        "batch_p99_ms": float(np.percentile(batch_ms, 99)) if batch_ms.size else float("nan"),
    }


def run_backtest_bench(run: str | Path, start: str = "2023-01-01", end: str = "2025-01-01",
                       repeats: int = 1) -> dict[str, float]:
    """Seconds of :func:`run_backtest` over [start, end): market build, bar loop, baselines (best of repeats)."""
    from himari.backtest.backtester import run_backtest
    from himari.trading.bundle import load_bundle
    from himari.trading.engine import DecisionEngine

    bundle = load_bundle(run)
    bars = {s: b.between(None, end) for s, b in _bars_for(bundle).items()}
    best: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        market = DecisionEngine(bundle).build_market(bars)
        t1, c1 = time.perf_counter(), time.process_time()
        result = run_backtest(bundle, bars, start, end, show_progress=False, market=market, with_baselines=False)
        t2, c2 = time.perf_counter(), time.process_time()
        run_backtest(bundle, bars, start, end, show_progress=False, market=market, keep_log=False,
                     with_baselines=False)
        t3 = time.perf_counter()
        whole_start = time.perf_counter()
        run_backtest(bundle, bars, start, end, show_progress=False)
        whole = time.perf_counter() - whole_start
        figures = {"market_s": t1 - t0, "loop_s": t2 - t1, "loop_cpu_s": c2 - c1, "loop_no_log_s": t3 - t2,
                   "run_backtest_s": whole}
        for k, v in figures.items():
            best[k] = min(best.get(k, np.inf), v)
    n = float(len(result.timestamps_ns))
    return {"bars": n, **best, "bars_per_s": n / best["loop_s"]}


def register_bench(group: click.Group) -> None:
    @group.command("decide")
    @click.option("--run", required=True, help="Run directory holding a model bundle (RUN/bundle).")
    @click.option("--history", "history_bars", default=3000, show_default=True, help="Bars already seen.")
    @click.option("--new-bars", default=500, show_default=True, help="Bars pushed one at a time.")
    @click.option("--start", default="2024-01-01", show_default=True, help="First new bar (bundled data).")
    @click.option("--batch-bars", default=20, show_default=True, type=click.IntRange(min=1),
                  help="Bars timed with the trailing history re-transformed per bar (the previous behaviour).")
    @click.option("--json", "as_json", is_flag=True)
    def decide_bench(run: str, history_bars: int, new_bars: int, start: str, batch_bars: int, as_json: bool) -> None:
        """New bar -> decision in process (TradingSession.on_bar: features, regime, policy, sizing, risk, fill)."""
        from himari.utils.io import to_json
        from himari.utils.threads import configure_torch_threads

        configure_torch_threads()
        out = run_decide_bench(run, history_bars, new_bars, start, batch_bars)
        if as_json:
            click.echo(to_json(out))
            return
        click.echo(f"new bar -> decision, {history_bars} bars seen, {int(out['new_bars'])} new bars:")
        click.echo(f"  streamed:      p50 {out['p50_ms']:.2f} ms  p99 {out['p99_ms']:.2f} ms  max {out['max_ms']:.1f} ms"
                   f"  (first bar, streams built: {out['first_bar_ms']:.0f} ms)")
        click.echo(f"    CPU time:    p50 {out['cpu_p50_ms']:.2f} ms  p99 {out['cpu_p99_ms']:.2f} ms (wall minus waiting "
                   "for a core on a busy machine)")
        click.echo(f"  re-transform:  p50 {out['batch_p50_ms']:.1f} ms  p99 {out['batch_p99_ms']:.1f} ms")

    @group.command("backtest")
    @click.option("--run", required=True, help="Run directory holding a model bundle (RUN/bundle).")
    @click.option("--start", default="2023-01-01", show_default=True)
    @click.option("--end", default="2025-01-01", show_default=True)
    @click.option("--repeats", default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    def backtest_bench(run: str, start: str, end: str, repeats: int, as_json: bool) -> None:
        """Seconds of a backtest of RUN's model on bundled data: market build, bar loop, with baselines."""
        from himari.utils.io import to_json
        from himari.utils.threads import configure_torch_threads

        configure_torch_threads()
        out = run_backtest_bench(run, start, end, repeats)
        if as_json:
            click.echo(to_json(out))
            return
        click.echo(f"backtest {start} -> {end}, {int(out['bars'])} bars:")
        click.echo(f"  market build (transform)  {out['market_s']:.2f} s")
        click.echo(f"  bar loop                  {out['loop_s']:.2f} s  ({out['bars_per_s']:.0f} bars/s; CPU time "
                   f"{out['loop_cpu_s']:.2f} s, {out['loop_cpu_s'] / out['bars'] * 1e3:.2f} ms/bar; without the "
                   f"decision log {out['loop_no_log_s']:.2f} s)")
        click.echo(f"  run_backtest, baselines   {out['run_backtest_s']:.2f} s  (market + loop + baselines)")
