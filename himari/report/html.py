"""The backtest / walk-forward report: one self-contained HTML page (inline CSS, charts as base64 PNG).

Nothing in the page loads from a URL, so it opens offline and can be mailed as one file. Charts are drawn with
matplotlib's object API on an Agg canvas (no pyplot global state, no display). Long series are bucketed to at most
``MAX_PLOT_POINTS`` points per chart so a multi-year hourly backtest stays a small page.

Fill :class:`ReportData` from a backtest or a walk-forward run and call :func:`render_report` (a string) or
:func:`write_report` (atomic file write).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from himari.data.timeframe import Timeframe
from himari.env.protocol import ACTION_NAMES, REGIME_NAMES
from himari.errors import DataError
from himari.evaluation.metrics import drawdown_curve, equity_curve, rolling_sharpe
from himari.evaluation.verdict import baseline_label, make_verdict
from himari.utils.io import atomic_write_text

MAX_PLOT_POINTS = 2000
REGIME_COLORS = {"LOW_VOL": "#cfe8cf", "TRENDING": "#cfdcf5", "HIGH_VOL": "#fbe3c4", "CRISIS": "#f6c6c6"}
STRATEGY_COLOR = "#111111"
BASELINE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")

SECTION_IDS: tuple[str, ...] = (
    "verdict", "summary", "equity", "drawdown", "price-regimes", "regime-actions", "rolling-sharpe",
    "walk-forward", "statistics", "run-info",
)


@dataclass
class ReportData:
    """Everything the report shows. Arrays are aligned per bar over the evaluation period (T bars).

    ``metrics`` and ``baseline_metrics`` are :func:`himari.evaluation.metrics.compute_metrics` dicts; ``statistics``
    is :func:`himari.evaluation.statistics.strategy_statistics`'s dict (any subset of its keys); ``windows`` are the
    walk-forward window rows (any keys, shown in order, e.g. ``window, train, validation, test, selected,
    test_sharpe, test_return``); ``stages`` maps a pipeline stage name to a dict of its headline results;
    ``run_info`` holds config hash, data sha256, seed, versions (flat or nested dicts). ``verdict`` is computed
    with :func:`himari.evaluation.verdict.make_verdict` when left ``None``.
    """

    title: str
    timeframe: str
    timestamps_ns: np.ndarray  # (T,) int64, bar open times (UTC ns)
    close: np.ndarray  # (T,) close of the traded asset (the first asset for a portfolio)
    strategy_returns: np.ndarray  # (T,) net simple returns per bar
    positions: np.ndarray  # (T,) or (T, A) positions held over each bar
    metrics: dict[str, Any]
    baseline_returns: dict[str, np.ndarray] = field(default_factory=dict)
    baseline_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    regimes: np.ndarray | None = None  # (T,) regime codes into REGIME_NAMES, negative = unknown
    statistics: dict[str, Any] = field(default_factory=dict)
    verdict: str | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    asset_names: tuple[str, ...] = ()
    rolling_window_bars: int | None = None  # default: 30 days of bars
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------------

_PCT_KEYS = {"total_return", "annual_return", "annual_volatility", "max_drawdown", "exposure", "win_rate",
             "share_of_bars", "fees_paid", "test_return", "return"}


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def fmt(value: Any, kind: str = "num") -> str:
    """Format a cell: ``pct`` -> ``12.3%``, ``num`` -> ``0.41``, ``int`` -> ``1,234``; None/NaN -> an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer) and kind != "pct":
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        x = float(value)
        if not math.isfinite(x):
            return "–"
        if kind == "pct":
            return f"{x * 100:.1f}%"
        if kind == "int":
            return f"{round(x):,}"
        return f"{x:.3g}" if abs(x) >= 1000 or (0 < abs(x) < 0.01) else f"{x:.2f}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "") -> str:
    """An HTML table; ``rows`` cells are already escaped/formatted strings."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    cls = f' class="{css_class}"' if css_class else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else str(key), value[key], out)
    else:
        out.append((prefix, fmt(value)))


# --------------------------------------------------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------------------------------------------------


def _figure(height: float, rows: int = 1, height_ratios: Sequence[float] | None = None) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, gridspec_kw={"height_ratios": height_ratios} if height_ratios else None)
    return fig, axes


def _png(fig: Any, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _bucket_edges(n: int) -> np.ndarray:
    """Start indices of at most MAX_PLOT_POINTS equal buckets of ``n`` bars (plus n)."""
    k = min(n, MAX_PLOT_POINTS)
    return np.unique(np.linspace(0, n, k + 1).round().astype(np.int64))


def _bucket_last(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return values[edges[1:] - 1]


def _bucket_mean(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    sums = np.add.reduceat(values, edges[:-1])
    return sums / np.diff(edges)


def _times(data: ReportData, edges: np.ndarray) -> np.ndarray:
    return _bucket_last(np.asarray(data.timestamps_ns, dtype=np.int64), edges).astype("datetime64[ns]")


def _style(ax: Any, ylabel: str) -> None:
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)


def _equity_chart(data: ReportData, edges: np.ndarray) -> str:
    fig, ax = _figure(4.2)
    x = _times(data, edges)
    for i, (name, returns) in enumerate(data.baseline_returns.items()):
        ax.plot(x, _bucket_last(equity_curve(returns), edges), color=BASELINE_COLORS[i % len(BASELINE_COLORS)],
                linewidth=1.0, label=baseline_label(name))
    ax.plot(x, _bucket_last(equity_curve(data.strategy_returns), edges), color=STRATEGY_COLOR, linewidth=1.6,
            label="strategy")
    curves = [equity_curve(data.strategy_returns), *(equity_curve(r) for r in data.baseline_returns.values())]
    low = min(float(c.min()) for c in curves)
    high = max(float(c.max()) for c in curves)
    if low > 0 and high / low > 8:  # log scale only when it spans enough to matter; plain tick labels either way
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        _style(ax, "equity (log scale, start = 1)")
    else:
        _style(ax, "equity (start = 1)")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _png(fig, "Equity curves of the strategy and baselines")


def _drawdown_chart(data: ReportData, edges: np.ndarray, best: str | None) -> str:
    fig, ax = _figure(2.8)
    x = _times(data, edges)
    # Worst drawdown within each bucket, so short deep drawdowns are not hidden by bucketing.
    dd = np.maximum.reduceat(drawdown_curve(data.strategy_returns), edges[:-1])
    ax.fill_between(x, -dd * 100, 0, color="#c0392b", alpha=0.45, linewidth=0, label="strategy")
    if best is not None and best in data.baseline_returns:
        bdd = np.maximum.reduceat(drawdown_curve(data.baseline_returns[best]), edges[:-1])
        ax.plot(x, -bdd * 100, color="#1f77b4", linewidth=0.9, label=baseline_label(best))
    _style(ax, "drawdown (%)")
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    return _png(fig, "Drawdown of the strategy")


def _price_chart(data: ReportData, edges: np.ndarray) -> str:
    fig, (ax, axp) = _figure(5.0, rows=2, height_ratios=(3, 1.2))
    x = _times(data, edges)
    ax.plot(x, _bucket_last(np.asarray(data.close, dtype=np.float64), edges), color="#222222", linewidth=0.9)
    if data.regimes is not None:
        regimes = np.asarray(data.regimes)
        # Regime of a bucket = the regime most bars in it had.
        counts = np.stack([np.add.reduceat((regimes == c).astype(np.float64), edges[:-1])
                           for c in range(len(REGIME_NAMES))], axis=1)
        dominant = np.where(counts.max(axis=1) > 0, counts.argmax(axis=1), -1)
        from matplotlib.dates import date2num
        from matplotlib.patches import Patch

        # Bucket i spans from its first bar's open to its last bar's close; runs of one regime become one span.
        ts = np.asarray(data.timestamps_ns, dtype=np.int64)
        bar_ns = Timeframe.parse(data.timeframe).nanoseconds
        left = date2num(ts[edges[:-1]].astype("datetime64[ns]"))
        right = date2num((ts[edges[1:] - 1] + bar_ns).astype("datetime64[ns]"))
        change = np.flatnonzero(np.diff(dominant)) + 1
        run_starts = np.concatenate([[0], change])
        run_ends = np.concatenate([change, [dominant.size]]) - 1
        handles = []
        for code, name in enumerate(REGIME_NAMES):
            runs = [(left[a], right[b] - left[a]) for a, b in zip(run_starts, run_ends, strict=True)
                    if dominant[a] == code]
            if runs:
                ax.broken_barh(runs, (0, 1), transform=ax.get_xaxis_transform(), facecolors=REGIME_COLORS[name],
                               linewidth=0, zorder=0)
                handles.append(Patch(color=REGIME_COLORS[name], label=name))
        ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, ncols=4)
    _style(ax, "close")
    pos = np.asarray(data.positions, dtype=np.float64)
    net = pos if pos.ndim == 1 else pos.sum(axis=1)
    mean_pos = _bucket_mean(net, edges)
    # Mean position per bucket; long and short parts drawn separately (no `where` masks: they drop single buckets).
    axp.fill_between(x, 0, np.maximum(mean_pos, 0), color="#27ae60", linewidth=0, step="mid", label="long")
    axp.fill_between(x, 0, np.minimum(mean_pos, 0), color="#c0392b", linewidth=0, step="mid", label="short")
    axp.axhline(0, color="#555555", linewidth=0.6)
    _style(axp, "net position")
    axp.legend(loc="upper left", fontsize=8, frameon=False, ncols=2)
    return _png(fig, "Price with regimes shaded and positions")


def _rolling_sharpe_chart(data: ReportData, edges: np.ndarray, window: int, ppy: float, best: str | None) -> str:
    fig, ax = _figure(2.8)
    x = _times(data, edges)
    rs = rolling_sharpe(data.strategy_returns, window, ppy)
    ax.plot(x, _bucket_last(rs, edges), color=STRATEGY_COLOR, linewidth=1.0, label="strategy")
    if best is not None and best in data.baseline_returns:
        rb = rolling_sharpe(data.baseline_returns[best], window, ppy)
        ax.plot(x, _bucket_last(rb, edges), color="#1f77b4", linewidth=0.8, alpha=0.8, label=baseline_label(best))
    ax.axhline(0, color="#555555", linewidth=0.6)
    _style(ax, f"Sharpe, trailing {window} bars")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _png(fig, "Rolling Sharpe ratio")


# --------------------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------------------

_SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "Total return", "pct"),
    ("annual_return", "CAGR", "pct"),
    ("annual_volatility", "Volatility", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("calmar", "Calmar", "num"),
    ("max_drawdown", "Max DD", "pct"),
    ("exposure", "Exposure", "pct"),
    ("turnover", "Turnover/yr", "num"),
    ("n_trades", "Trades", "int"),
    ("fees_paid", "Fees paid", "pct"),
)


def _summary_table(data: ReportData, best: str | None) -> str:
    header = ["", *[label for _, label, _ in _SUMMARY_COLUMNS]]
    rows = [["<b>strategy</b>", *[fmt(data.metrics.get(k), kind) for k, _, kind in _SUMMARY_COLUMNS]]]
    for name, metrics in data.baseline_metrics.items():
        label = html.escape(baseline_label(name)) + (" <span class=best>(best)</span>" if name == best else "")
        rows.append([label, *[fmt(metrics.get(k), kind) for k, _, kind in _SUMMARY_COLUMNS]])
    return _table(header, rows, "num")


def _regime_table(data: ReportData) -> str:
    per_regime = data.metrics.get("per_regime")
    if not per_regime:
        return "<p class=muted>No regime labels were given for this run.</p>"
    header = ["Regime", "Share of bars", "Return", "Sharpe", "Exposure", *[f"{a} %" for a in ACTION_NAMES]]
    rows = []
    for name in REGIME_NAMES:
        entry = per_regime.get(name, {})
        actions = entry.get("actions", {})
        rows.append([
            f'<span class=swatch style="background:{REGIME_COLORS[name]}"></span>{name}',
            fmt(entry.get("share_of_bars"), "pct"), fmt(entry.get("total_return"), "pct"),
            fmt(entry.get("sharpe")), fmt(entry.get("exposure"), "pct"),
            *[fmt(actions.get(a), "pct") for a in ACTION_NAMES],
        ])
    source = data.metrics.get("action_source")
    note = ""
    if source == "position_sign":
        note = "<p class=muted>Actions derived from the position sign (flat = HOLD).</p>"
    return _table(header, rows, "num") + note


def _windows_table(windows: list[dict[str, Any]]) -> str:
    if not windows:
        return "<p class=muted>Single backtest: no walk-forward windows.</p>"
    keys: list[str] = []
    for row in windows:
        keys.extend(k for k in row if k not in keys)
    rows = [[fmt(row.get(k), "pct" if k in _PCT_KEYS else "num") for k in keys] for row in windows]
    return _table([k.replace("_", " ") for k in keys], rows, "num")


def _statistics_table(stats: Mapping[str, Any]) -> str:
    if not stats:
        return "<p class=muted>No statistics were computed for this run.</p>"
    conf = _num(stats.get("sharpe_ci_confidence"))
    conf_text = f"{round(conf * 100)}%" if math.isfinite(conf) else "95%"
    rows: list[list[str]] = []
    if "sharpe_ci_low" in stats:
        rows.append([
            f"Sharpe, {conf_text} block-bootstrap CI",
            f"{fmt(stats.get('sharpe'))} [{fmt(stats.get('sharpe_ci_low'))}, {fmt(stats.get('sharpe_ci_high'))}]",
            f"{fmt(stats.get('bootstrap_method'))} bootstrap, mean block "
            f"{fmt(stats.get('bootstrap_block_length'))} bars, {fmt(stats.get('bootstrap_n'))} resamples",
        ])
    if "psr" in stats:
        rows.append(["Probabilistic Sharpe ratio P(SR > 0)", fmt(stats.get("psr")),
                     f"skewness {fmt(stats.get('skewness'))}, kurtosis {fmt(stats.get('kurtosis'))}"])
    if "dsr" in stats:
        rows.append([
            "Deflated Sharpe ratio", fmt(stats.get("dsr")),
            f"{fmt(stats.get('n_trials'))} trials, variance of trial Sharpes "
            f"{fmt(stats.get('trial_sharpe_variance_annual'))}, expected max Sharpe under no skill "
            f"{fmt(stats.get('expected_max_sharpe_annual'))}",
        ])
    if stats.get("pbo") is not None:
        rows.append([
            "Probability of backtest overfitting (CSCV)", fmt(stats.get("pbo")),
            f"{fmt(stats.get('pbo_n_configs'))} configurations, {fmt(stats.get('pbo_n_splits'))} blocks, "
            f"P(OOS loss) {fmt(stats.get('pbo_prob_oos_loss'))}",
        ])
    else:
        rows.append(["Probability of backtest overfitting (CSCV)", "–", "only one configuration compared"])
    return _table(["Statistic", "Value", "Details"], rows)


def _run_info_table(run_info: Mapping[str, Any]) -> str:
    if not run_info:
        return "<p class=muted>No run information.</p>"
    flat: list[tuple[str, str]] = []
    _flatten("", run_info, flat)
    return _table(["Key", "Value"], [[html.escape(k), f"<code>{v}</code>"] for k, v in flat], "kv")


def _stages_table(stages: Mapping[str, Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for values in stages.values():
        keys.extend(k for k in values if k not in keys)
    rows = [[html.escape(name), *[fmt(values.get(k), "pct" if k in _PCT_KEYS else "num") for k in keys]]
            for name, values in stages.items()]
    return _table(["Stage", *[k.replace("_", " ") for k in keys]], rows, "num")


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:18px;margin:30px 0 10px;border-bottom:1px solid #dde1e7;
padding-bottom:4px}.sub{color:#5b6472;font-size:13px}
.verdict{font-size:17px;padding:14px 18px;border-radius:8px;margin:16px 0;border-left:6px solid}
.verdict.no{background:#fdf0ef;border-color:#c0392b}.verdict.yes{background:#eef8f0;border-color:#27ae60}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0;box-shadow:0 1px 2px #0001}
th,td{padding:5px 10px;border-bottom:1px solid #eceff3;text-align:left;white-space:nowrap}
th{background:#eef1f5;font-weight:600}table.num td:not(:first-child){text-align:right;font-variant-numeric:
tabular-nums}img{max-width:100%;background:#fff;border-radius:6px;box-shadow:0 1px 2px #0001}
.muted{color:#6b7280;font-size:13px}.best{color:#1f77b4;font-size:11px}code{font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
nav a{margin-right:12px;font-size:13px;color:#2c5aa0;text-decoration:none}
"""


def render_report(data: ReportData) -> str:
    """The report as one self-contained HTML document (UTF-8 string)."""
    returns = np.asarray(data.strategy_returns, dtype=np.float64)
    n = returns.size
    if n == 0:
        raise DataError("report: the strategy has no bars to report")
    for name, series in (("timestamps_ns", data.timestamps_ns), ("close", data.close),
                         ("positions", data.positions), *data.baseline_returns.items()):
        if np.asarray(series).shape[0] != n:
            raise DataError(f"report: field {name!r} has {np.asarray(series).shape[0]} bars, strategy has {n}")
    if data.regimes is not None and np.asarray(data.regimes).shape[0] != n:
        raise DataError(f"report: field 'regimes' has {np.asarray(data.regimes).shape[0]} bars, strategy has {n}")
    tf = Timeframe.parse(data.timeframe)
    ppy = tf.periods_per_year
    window = data.rolling_window_bars or max(2, round(30 * 86400 / tf.seconds))
    stats = data.statistics
    ci = (stats.get("sharpe_ci_low"), stats.get("sharpe_ci_high")) if "sharpe_ci_low" in stats else None
    verdict = make_verdict(data.metrics, data.baseline_metrics, ci, stats.get("dsr"), stats.get("n_trials"),
                           stats.get("pbo"), _num(stats.get("sharpe_ci_confidence", 0.95)))
    verdict_text = data.verdict or verdict.text
    best = verdict.best_baseline
    edges = _bucket_edges(n)

    ts = np.asarray(data.timestamps_ns, dtype=np.int64)
    start, end = (str(np.datetime64(int(v), "ns").astype("datetime64[m]")).replace("T", " ") for v in (ts[0], ts[-1]))
    assets = ", ".join(data.asset_names) if data.asset_names else ""
    subtitle = f"{assets + ' · ' if assets else ''}{tf} bars · {start} → {end} UTC · {n:,} bars"

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(data.title)}</h1><div class=sub>{html.escape(subtitle)}</div>",
        "<nav>" + "".join(f'<a href="#{s}">{s.replace("-", " ")}</a>' for s in SECTION_IDS) + "</nav>",
        f'<section id="verdict"><div class="verdict {"yes" if verdict.edge else "no"}">'
        f"{html.escape(verdict_text)}</div>",
        *[f"<p class=muted>{html.escape(note)}</p>" for note in data.notes],
        "</section>",
        '<section id="summary"><h2>Strategy vs baselines (after costs)</h2>', _summary_table(data, best),
        "<p class=muted>Baselines trade the same data, period and costs. Ratios annualized from the bar timeframe "
        f"({ppy:g} bars per year); – marks an undefined value.</p></section>",
        '<section id="equity"><h2>Equity</h2>', _equity_chart(data, edges), "</section>",
        '<section id="drawdown"><h2>Drawdown</h2>', _drawdown_chart(data, edges, best), "</section>",
        '<section id="price-regimes"><h2>Price, regimes and positions</h2>', _price_chart(data, edges),
        "</section>",
        '<section id="regime-actions"><h2>Per-regime results and actions</h2>', _regime_table(data), "</section>",
        '<section id="rolling-sharpe"><h2>Rolling Sharpe</h2>',
        _rolling_sharpe_chart(data, edges, window, ppy, best), "</section>",
        '<section id="walk-forward"><h2>Walk-forward windows</h2>', _windows_table(data.windows), "</section>",
        '<section id="statistics"><h2>Statistics</h2>', _statistics_table(stats), "</section>",
    ]
    if data.stages:
        parts += ['<section id="stages"><h2>Pipeline stages</h2>', _stages_table(data.stages), "</section>"]
    parts += ['<section id="run-info"><h2>Run information</h2>', _run_info_table(data.run_info), "</section>",
              "</main></body></html>"]
    return "\n".join(parts)


def write_report(path: str, data: ReportData) -> str:
    """Render and write the report atomically; returns the path."""
    atomic_write_text(path, render_report(data))
    return path
