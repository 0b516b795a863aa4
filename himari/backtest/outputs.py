"""Writing a backtest or walk-forward evaluation: metrics.json, report.html, decisions.csv, fills.csv, equity.csv."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from himari.backtest.backtester import BacktestResult
from himari.report.html import ReportData, render_report
from himari.utils.io import atomic_write_json, atomic_write_text


def report_data(
    result: BacktestResult,
    metrics: dict[str, Any],
    title: str,
    run_info: dict[str, Any] | None = None,
    windows: list[dict[str, Any]] | None = None,
    stages: dict[str, dict[str, Any]] | None = None,
    notes: list[str] | None = None,
) -> ReportData:
    return ReportData(
        title=title,
        timeframe=result.timeframe,
        timestamps_ns=result.timestamps_ns,
        close=result.close[:, 0],
        strategy_returns=result.strategy.net_returns,
        positions=result.strategy.positions if result.strategy.positions.shape[1] > 1 else result.strategy.positions[:, 0],
        metrics=metrics,
        baseline_returns={k: v.net_returns for k, v in result.baselines.items()},
        baseline_metrics=metrics.get("baselines", {}),
        regimes=result.regimes,
        statistics=metrics.get("statistics", {}),
        verdict=metrics.get("verdict"),
        windows=windows or [],
        stages=stages or {},
        run_info=run_info or {},
        asset_names=result.symbols,
        notes=notes or [],
    )


def complete_run_info(root: Path, run_info: dict[str, Any] | None) -> dict[str, Any]:
    """The report's run information, made as complete as ``run.json``'s and consistent with it.

    When ``root/run.json`` was written for the same command (``create_run_dir``), its ``config_hash``, ``seed``,
    ``data`` (paths with sha256) and ``versions`` are used, so the report and run.json name the run identically.
    Otherwise missing ``versions`` are filled in and bare data paths get their sha256.
    """
    from himari.utils.io import read_json
    from himari.utils.rundir import data_record, versions

    info = dict(run_info or {})
    run_json = root / "run.json"
    meta: dict[str, Any] = {}
    if run_json.exists() and info.get("command") is not None:
        try:
            loaded = read_json(run_json)
        except (OSError, ValueError):
            loaded = {}
        if isinstance(loaded, dict) and loaded.get("command") == info.get("command"):
            meta = loaded
    for key in ("config_hash", "seed", "data", "versions"):
        if key in meta:
            info[key] = meta[key]
    data = info.get("data")
    if isinstance(data, dict) and any(isinstance(v, str | Path) for v in data.values()):
        paths = {k: v for k, v in data.items() if isinstance(v, str | Path) and v and Path(v).is_file()}
        info["data"] = {**data, **data_record(paths)}
    info.setdefault("versions", versions())
    return info


def _csv(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def write_outputs(
    out: str | Path,
    result: BacktestResult,
    metrics: dict[str, Any],
    title: str,
    run_info: dict[str, Any] | None = None,
    windows: list[dict[str, Any]] | None = None,
    stages: dict[str, dict[str, Any]] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write DIR/metrics.json, DIR/report.html, DIR/equity.csv, DIR/decisions.csv and DIR/fills.csv atomically."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    ts = pd.to_datetime(result.timestamps_ns, utc=True)
    equity = pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "strategy": np.cumprod(1 + result.strategy.net_returns)})
    for name, path in result.baselines.items():
        equity[name] = np.cumprod(1 + path.net_returns)
    for a, sym in enumerate(result.symbols):
        equity[f"position_{sym}"] = result.strategy.positions[:, a]
    atomic_write_text(root / "equity.csv", _csv(equity))
    if result.decisions:
        dec = pd.DataFrame(result.decisions)
        dec.insert(0, "timestamp", pd.to_datetime(dec.pop("timestamp_ns"), utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        atomic_write_text(root / "decisions.csv", _csv(dec))
    fills = pd.DataFrame(result.fills, columns=["order_id", "timestamp_ns", "symbol", "side", "quantity_change", "price", "fee", "slippage_cost"])
    if len(fills):
        fills.insert(0, "timestamp", pd.to_datetime(fills.pop("timestamp_ns"), utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    atomic_write_text(root / "fills.csv", _csv(fills))
    atomic_write_json(root / "metrics.json", metrics)
    run_info = complete_run_info(root, run_info)
    html = render_report(report_data(result, metrics, title, run_info, windows, stages, notes))
    atomic_write_text(root / "report.html", html)
    return root


def summary_table(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [("strategy", metrics)]
    rows.extend((name, m) for name, m in metrics.get("baselines", {}).items())
    return rows


def print_summary(metrics: dict[str, Any], title: str = "out-of-sample results (after costs)") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, pad_edge=False)
    for col in ("", "return", "CAGR", "vol", "Sharpe", "Sortino", "maxDD", "expo", "trades", "fees"):
        table.add_column(col, justify="right" if col else "left", no_wrap=True)
    short = {"buy_and_hold": "buy & hold", "vol_target_buy_and_hold": "vol-tgt B&H", "ma_crossover": "MA 50/200",
             "random": "random"}

    def pct(v: Any) -> str:
        return "-" if v is None or not np.isfinite(v) else f"{v * 100:.1f}%"

    def num(v: Any) -> str:
        return "-" if v is None or not np.isfinite(v) else f"{v:.2f}"

    for name, m in summary_table(metrics):
        table.add_row(
            short.get(name, name), pct(m.get("total_return")), pct(m.get("annual_return")), pct(m.get("annual_volatility")),
            num(m.get("sharpe")), num(m.get("sortino")), pct(m.get("max_drawdown")), pct(m.get("exposure")),
            str(m.get("n_trades", "-")), pct(m.get("fees_paid")),
        )
    console = Console(width=max(100, Console().width))
    console.print(table)
    stats = metrics.get("statistics", {})
    if stats:
        console.print(
            f"Sharpe 95% CI [{num(stats.get('sharpe_ci_low'))}, {num(stats.get('sharpe_ci_high'))}], "
            f"PSR {num(stats.get('psr'))}, DSR {num(stats.get('dsr'))} ({stats.get('n_trials')} trials)"
            + (f", PBO {num(stats.get('pbo'))}" if stats.get("pbo") is not None else "")
        )
    console.print(f"[bold]Verdict:[/bold] {metrics.get('verdict', '')}")
    ablation = metrics.get("ablation")
    if ablation:
        layers = Table(title="what each layer adds (same windows, costs and account chain)", pad_edge=False)
        for col in ("layer", "return", "Sharpe", "95% CI", "maxDD", "turnover/yr", "fees", "expo"):
            layers.add_column(col, justify="left" if col == "layer" else "right", no_wrap=True)
        for row in ablation:
            layers.add_row(row["layer"], pct(row.get("total_return")), num(row.get("sharpe")),
                           f"[{num(row.get('sharpe_ci_low'))}, {num(row.get('sharpe_ci_high'))}]",
                           pct(row.get("max_drawdown")), num(row.get("turnover")), pct(row.get("fees_paid")),
                           pct(row.get("exposure")))
        console.print(layers)
