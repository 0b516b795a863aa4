"""The backtest / walk-forward report: one self-contained, interactive HTML page.

Charts are plotly figures (zoom, pan, hover, range buttons) drawn by plotly.js, which is inlined in the page once;
nothing loads from a URL, so the file opens offline and can be mailed as one file. Series up to
``MAX_PLOT_POINTS`` bars are plotted bar by bar; longer ones are bucketed (last value for equity, worst value for
drawdown, mean for positions, the most frequent regime) so a multi-year hourly backtest stays a reasonable page.
Besides the charts: the summary against baselines, the monthly returns table, the round-trip trade list, per-regime
results, walk-forward windows, statistics and the run information (versions, data sha256, config hash).

Fill :class:`ReportData` from a backtest or a walk-forward run and call :func:`render_report` (a string) or
:func:`write_report` (atomic file write).
"""

from __future__ import annotations

import functools
import html
import json
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
from himari.regime.palette import REGIME_COLOUR_BY_NAME, UNKNOWN_REGIME_COLOUR
from himari.report.tables import monthly_returns, trade_list
from himari.utils.io import atomic_write_text

MAX_PLOT_POINTS = 20_000  # two years of hourly bars at full resolution
MAX_TRADE_ROWS = 2_000  # the trade list shows the most recent trades beyond this
MIN_ROLLING_WINDOW = 5  # bars; shorter backtests get no rolling-Sharpe chart, with a note saying why
REGIME_COLORS = REGIME_COLOUR_BY_NAME  # the palette of `himari regime label` plots (himari.regime.palette)
STRATEGY_COLOR = "#111111"
BASELINE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")

SECTION_IDS: tuple[str, ...] = (
    "verdict", "summary", "equity", "price-regimes", "rolling-sharpe", "monthly-returns", "trades",
    "regime-actions", "walk-forward", "statistics", "run-info",
)
CHART_IDS: tuple[str, ...] = ("chart-equity", "chart-price-regimes", "chart-rolling-sharpe")


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


def is_pct_key(key: str) -> bool:
    """Columns shown in %: the known fractions and any ``*_return`` (e.g. walk-forward ``buy_and_hold_return``)."""
    return key in _PCT_KEYS or key.endswith("_return")


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
# Charts (plotly figure dicts; the page's script draws them with the inlined plotly.js)
# --------------------------------------------------------------------------------------------------------------------

# Trace arrays equal to this string are replaced by the page's shared time axis (sent once, not once per trace).
TIME_AXIS = "@t"
_LINE_FONT = {"family": "-apple-system,Segoe UI,Helvetica,Arial,sans-serif", "size": 12, "color": "#1d2330"}
_RANGE_BUTTONS = [
    {"count": 7, "label": "1w", "step": "day", "stepmode": "backward"},
    {"count": 1, "label": "1m", "step": "month", "stepmode": "backward"},
    {"count": 6, "label": "6m", "step": "month", "stepmode": "backward"},
    {"count": 1, "label": "1y", "step": "year", "stepmode": "backward"},
    {"step": "all", "label": "all"},
]


@functools.cache
def plotly_js() -> str:
    """plotly.js (minified) from the ``plotly`` package, to inline in the page."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _bucket_edges(n: int) -> np.ndarray:
    """Start indices of at most MAX_PLOT_POINTS equal buckets of ``n`` bars (plus n)."""
    k = min(n, MAX_PLOT_POINTS)
    return np.unique(np.linspace(0, n, k + 1).round().astype(np.int64))


def _bucket_last(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return values[edges[1:] - 1]


def _bucket_mean(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    sums = np.add.reduceat(values, edges[:-1])
    return sums / np.diff(edges)


def _series(values: np.ndarray, digits: int) -> list[float | None]:
    """Rounded values for JSON; NaN/inf -> None (a gap in the line)."""
    v = np.round(np.asarray(values, dtype=np.float64), digits)
    return [float(x) if math.isfinite(x) else None for x in v.tolist()]


def _axis(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title, "font": {"size": 11}}, "gridcolor": "#e8ebf0", "zeroline": False,
            "automargin": True, **extra}


def _time_axis(anchor: str, **extra: Any) -> dict[str, Any]:
    return {"type": "date", "anchor": anchor, "gridcolor": "#e8ebf0", "hoverformat": "%Y-%m-%d %H:%M UTC",
            "rangeselector": {"buttons": _RANGE_BUTTONS, "x": 0, "y": 1.02, "yanchor": "bottom",
                              "font": {"size": 11}}, **extra}


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    # Range buttons above the plot, the legend below it (a long legend would run into the buttons).
    return {"height": height, "margin": {"l": 64, "r": 24, "t": 44, "b": 64}, "hovermode": "x unified",
            "font": _LINE_FONT, "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff",
            "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": -0.07, "yanchor": "top",
                       "font": {"size": 11}}, **extra}


def _equity_figure(data: ReportData, edges: np.ndarray, best: str | None) -> dict[str, Any]:
    """Equity of the strategy and every baseline (top) over the drawdowns of the strategy and the best baseline."""
    traces: list[dict[str, Any]] = []
    curves = {name: equity_curve(r) for name, r in data.baseline_returns.items()}
    strategy = equity_curve(data.strategy_returns)
    for i, (name, curve) in enumerate(curves.items()):
        traces.append({"type": "scatter", "mode": "lines", "name": baseline_label(name), "x": TIME_AXIS,
                       "y": _series(_bucket_last(curve, edges), 5), "xaxis": "x", "yaxis": "y",
                       "line": {"width": 1.1, "color": BASELINE_COLORS[i % len(BASELINE_COLORS)]},
                       "hovertemplate": "%{y:.3f}"})
    traces.append({"type": "scatter", "mode": "lines", "name": "strategy", "x": TIME_AXIS,
                   "y": _series(_bucket_last(strategy, edges), 5), "xaxis": "x", "yaxis": "y",
                   "line": {"width": 2.0, "color": STRATEGY_COLOR}, "hovertemplate": "%{y:.3f}"})
    # Worst drawdown within each bucket, so short deep drawdowns are not hidden by bucketing.
    dd = np.maximum.reduceat(drawdown_curve(data.strategy_returns), edges[:-1])
    traces.append({"type": "scatter", "mode": "lines", "name": "strategy drawdown", "x": TIME_AXIS,
                   "y": _series(-dd * 100, 3), "xaxis": "x", "yaxis": "y2", "fill": "tozeroy",
                   "line": {"width": 0.8, "color": "#c0392b"}, "fillcolor": "rgba(192,57,43,0.35)",
                   "hovertemplate": "%{y:.2f}%"})
    if best is not None and best in data.baseline_returns:
        bdd = np.maximum.reduceat(drawdown_curve(data.baseline_returns[best]), edges[:-1])
        traces.append({"type": "scatter", "mode": "lines", "name": f"{baseline_label(best)} drawdown",
                       "x": TIME_AXIS, "y": _series(-bdd * 100, 3), "xaxis": "x", "yaxis": "y2",
                       "line": {"width": 1.0, "color": "#1f77b4"}, "hovertemplate": "%{y:.2f}%"})
    all_curves = [strategy, *curves.values()]
    low = min(float(np.nanmin(c)) for c in all_curves)
    high = max(float(np.nanmax(c)) for c in all_curves)
    log = bool(low > 0 and high / low > 8)  # log scale only when it spans enough to matter
    equity_axis = _axis("equity (log scale, start = 1)" if log else "equity (start = 1)", domain=[0.34, 1.0],
                        **({"type": "log", "dtick": "D2"} if log else {"type": "linear"}))  # D2: 1-2-5 ticks
    layout = _layout(560, xaxis=_time_axis("y2"), yaxis=equity_axis,
                     yaxis2=_axis("drawdown (%)", domain=[0.0, 0.27], ticksuffix="%"))
    return {"data": traces, "layout": layout}


def _price_figure(data: ReportData, edges: np.ndarray) -> dict[str, Any]:
    """Close (top), the regime of each bar as a colour strip, and the net position (bottom)."""
    traces: list[dict[str, Any]] = [
        {"type": "scatter", "mode": "lines", "name": "close", "x": TIME_AXIS,
         "y": _series(_bucket_last(np.asarray(data.close, dtype=np.float64), edges), 6), "xaxis": "x", "yaxis": "y",
         "line": {"width": 1.0, "color": "#222222"}, "hovertemplate": "%{y:,.6g}"},
    ]
    has_regimes = data.regimes is not None
    if has_regimes:
        regimes = np.asarray(data.regimes)
        # Regime of a bucket = the regime most of its bars had (unknown when none was labelled).
        counts = np.stack([np.add.reduceat((regimes == c).astype(np.float64), edges[:-1])
                           for c in range(len(REGIME_NAMES))], axis=1)
        dominant = np.where(counts.max(axis=1) > 0, counts.argmax(axis=1), -1)
        colours = [REGIME_COLORS[name] for name in REGIME_NAMES]
        k = len(colours)
        scale: list[list[Any]] = [[0.0, UNKNOWN_REGIME_COLOUR], [1.0 / (k + 1), UNKNOWN_REGIME_COLOUR]]
        for i, colour in enumerate(colours):  # discrete colour bands: code c occupies [(c+1)/(k+1), (c+2)/(k+1)]
            scale += [[(i + 1) / (k + 1), colour], [(i + 2) / (k + 1), colour]]
        names = [REGIME_NAMES[int(c)] if c >= 0 else "unknown" for c in dominant]
        traces.append({"type": "heatmap", "name": "regime", "x": TIME_AXIS, "z": [dominant.astype(int).tolist()],
                       "text": [names], "zmin": -1.5, "zmax": k - 0.5, "colorscale": scale, "showscale": False,
                       "xaxis": "x", "yaxis": "y2", "hovertemplate": "%{text}<extra>regime</extra>"})
        for name in REGIME_NAMES:  # legend entries for the strip's colours
            traces.append({"type": "scatter", "mode": "markers", "name": name, "x": [None], "y": [None],
                           "xaxis": "x", "yaxis": "y", "marker": {"symbol": "square", "size": 11,
                                                                  "color": REGIME_COLORS[name]},
                           "hoverinfo": "skip"})
    pos = np.asarray(data.positions, dtype=np.float64)
    net = _bucket_mean(pos if pos.ndim == 1 else pos.sum(axis=1), edges)
    for label, values, colour in (("long", np.maximum(net, 0.0), "#27ae60"), ("short", np.minimum(net, 0.0), "#c0392b")):
        traces.append({"type": "scatter", "mode": "lines", "name": f"{label} position", "x": TIME_AXIS,
                       "y": _series(values, 4), "xaxis": "x", "yaxis": "y3", "fill": "tozeroy",
                       "line": {"width": 0.6, "color": colour, "shape": "hv"}, "hovertemplate": "%{y:.3f}"})
    layout = _layout(
        600, xaxis=_time_axis("y3"),
        yaxis=_axis("close", domain=[0.40, 1.0]),
        yaxis2={"domain": [0.31, 0.37], "showticklabels": False, "showgrid": False, "zeroline": False,
                "title": {"text": "regime" if has_regimes else "", "font": {"size": 11}}, "automargin": True},
        yaxis3=_axis("net position", domain=[0.0, 0.27]),
    )
    return {"data": traces, "layout": layout}


def rolling_window(n: int, default_bars: int) -> int | None:
    """Trailing window for the rolling Sharpe: ``default_bars`` when the series has at least twice that many bars,
    else a quarter of the series (so a short backtest still gets a chart), None under ``MIN_ROLLING_WINDOW`` bars."""
    if n >= 2 * default_bars:
        return default_bars
    window = n // 4
    return window if window >= MIN_ROLLING_WINDOW else None


def _rolling_sharpe_figure(data: ReportData, edges: np.ndarray, window: int, ppy: float, bar_seconds: float,
                           best: str | None) -> dict[str, Any]:
    rs = rolling_sharpe(data.strategy_returns, window, ppy)
    traces = [{"type": "scatter", "mode": "lines", "name": "strategy", "x": TIME_AXIS,
               "y": _series(_bucket_last(rs, edges), 3), "line": {"width": 1.4, "color": STRATEGY_COLOR},
               "hovertemplate": "%{y:.2f}"}]
    if best is not None and best in data.baseline_returns:
        rb = rolling_sharpe(data.baseline_returns[best], window, ppy)
        traces.append({"type": "scatter", "mode": "lines", "name": baseline_label(best), "x": TIME_AXIS,
                       "y": _series(_bucket_last(rb, edges), 3), "line": {"width": 1.0, "color": "#1f77b4"},
                       "hovertemplate": "%{y:.2f}"})
    days = window * bar_seconds / 86400
    layout = _layout(340, xaxis=_time_axis("y"),
                     yaxis=_axis(f"Sharpe, trailing {window} bars ({days:.3g} days)"),
                     shapes=[{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": 0, "y1": 0,
                              "line": {"color": "#555555", "width": 0.8}}])
    return {"data": traces, "layout": layout}


def _chart_div(chart_id: str, figure: dict[str, Any] | None) -> str:
    if figure is None:
        return ""
    return f'<div class="chart" id="{chart_id}" data-height="{figure["layout"]["height"]}"></div>'


def _chart_script(times_ms: np.ndarray, figures: Mapping[str, dict[str, Any]]) -> str:
    """The page's data (shared time axis + figures) and the few lines that draw them with plotly.js."""
    payload = json.dumps({"t": times_ms.astype(np.int64).tolist(), "figures": figures}, separators=(",", ":"),
                         allow_nan=False)
    payload = payload.replace("</", "<\\/")  # never close the script element from inside the data
    return (
        f'<script type="application/json" id="report-data">{payload}</script>\n'
        "<script>(function(){"
        "var d=JSON.parse(document.getElementById('report-data').textContent);"
        "var cfg={responsive:true,displaylogo:false,scrollZoom:false};"
        "Object.keys(d.figures).forEach(function(id){var f=d.figures[id];"
        f"f.data.forEach(function(tr){{if(tr.x==='{TIME_AXIS}'){{tr.x=d.t;}}}});"
        "f.layout.xaxis.range=[d.t[0],d.t[d.t.length-1]];"
        "Plotly.newPlot(id,f.data,f.layout,cfg);});"
        "document.querySelectorAll('table.sortable th').forEach(function(th,i){th.addEventListener('click',"
        "function(){var tb=th.closest('table').tBodies[0];var rows=Array.from(tb.rows);"
        "var col=th.cellIndex;var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';"
        "rows.sort(function(a,b){var x=a.cells[col].dataset.v,y=b.cells[col].dataset.v;"
        "var p=parseFloat(x),q=parseFloat(y);var c=(isNaN(p)||isNaN(q))?String(x).localeCompare(String(y)):p-q;"
        "return asc?c:-c;});rows.forEach(function(r){tb.appendChild(r);});});});"
        "})();</script>"
    )


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
    rows = [[fmt(row.get(k), "pct" if is_pct_key(k) else "num") for k in keys] for row in windows]
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
    rows = [[html.escape(name), *[fmt(values.get(k), "pct" if is_pct_key(k) else "num") for k in keys]]
            for name, values in stages.items()]
    return _table(["Stage", *[k.replace("_", " ") for k in keys]], rows, "num")


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _return_cell(value: float, scale: float) -> str:
    """A % cell shaded green (gain) or red (loss) with intensity |value| / scale; sortable value in data-v."""
    if not math.isfinite(value):
        return '<td data-v="">–</td>'
    alpha = min(abs(value) / scale, 1.0) * 0.55 if scale > 0 else 0.0
    colour = f"rgba(39,174,96,{alpha:.2f})" if value >= 0 else f"rgba(192,57,43,{alpha:.2f})"
    return f'<td data-v="{value:.6g}" style="background:{colour}">{value * 100:.1f}%</td>'


def _monthly_table(data: ReportData) -> str:
    table = monthly_returns(data.timestamps_ns, data.strategy_returns)
    finite = np.abs(table.returns[np.isfinite(table.returns)])
    scale = float(np.percentile(finite, 90)) if finite.size else 0.0
    bench = data.baseline_returns.get("buy_and_hold")
    bench_years = monthly_returns(data.timestamps_ns, bench).year_total if bench is not None else None
    header = "".join(f"<th>{h}</th>" for h in ("Year", *_MONTHS, "Year total"))
    if bench_years is not None:
        header += "<th>Buy-and-hold year</th>"
    rows = []
    for i, year in enumerate(table.years):
        cells = "".join(_return_cell(float(v), scale) for v in table.returns[i])
        cells += _return_cell(float(table.year_total[i]), scale * 3)
        if bench_years is not None:
            cells += _return_cell(float(bench_years[i]), scale * 3)
        rows.append(f"<tr><td>{int(year)}</td>{cells}</tr>")
    return (f'<table class="num monthly"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            "<p class=muted>Compounded strategy return per calendar month (UTC, bar open times), after costs; "
            "– marks a month without bars in the period.</p>")


def _utc(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns").astype("datetime64[m]")).replace("T", " ")


def _trades_table(data: ReportData, bar_ns: int) -> str:
    trades = trade_list(data.positions, data.strategy_returns, data.close)
    if not trades:
        return "<p class=muted>No position was held: no trades.</p>"
    ts = np.asarray(data.timestamps_ns, dtype=np.int64)
    names = data.asset_names or tuple(f"asset {a}" for a in range(max(t.asset for t in trades) + 1))
    returns = np.array([t.trade_return for t in trades])
    known = returns[np.isfinite(returns)]
    bars = np.array([t.last_bar - t.first_bar + 1 for t in trades])
    summary = f"{len(trades):,} round trips, mean holding {bars.mean():.1f} bars"
    if known.size:
        summary += (f"; {np.mean(known > 0) * 100:.1f}% won, mean trade return {known.mean() * 100:.2f}%, "
                    f"best {known.max() * 100:.1f}%, worst {known.min() * 100:.1f}%")
    shown = trades[-MAX_TRADE_ROWS:]
    header = "".join(f"<th title='click to sort'>{h}</th>" for h in (
        "#", "Asset", "Side", "Entry (UTC)", "Exit (UTC)", "Bars", "Mean |position|", "Trade return", "Asset move"))
    scale = float(np.percentile(np.abs(known), 90)) if known.size else 0.0
    rows = []
    first_number = len(trades) - len(shown) + 1
    for k, t in enumerate(shown):
        side = "LONG" if t.side > 0 else "SHORT"
        entry, exit_ = int(ts[t.first_bar]), int(ts[t.last_bar]) + bar_ns
        rows.append(
            f'<tr><td data-v="{first_number + k}">{first_number + k}</td>'
            f'<td data-v="{html.escape(names[t.asset])}">{html.escape(names[t.asset])}</td>'
            f'<td data-v="{side}" class="{side.lower()}">{side}</td>'
            f'<td data-v="{entry}">{_utc(entry)}</td><td data-v="{exit_}">{_utc(exit_)}</td>'
            f'<td data-v="{t.last_bar - t.first_bar + 1}">{t.last_bar - t.first_bar + 1:,}</td>'
            f'<td data-v="{t.mean_abs_position:.6g}">{t.mean_abs_position:.3f}</td>'
            f"{_return_cell(t.trade_return, scale)}{_return_cell(t.asset_move, scale)}</tr>"
        )
    note = (f"<p class=muted>Showing the last {len(shown):,} of {len(trades):,} trades.</p>"
            if len(shown) < len(trades) else "")
    return (f"<p>{summary}.</p>{note}<div class=scroll><table class='num sortable trades'><thead><tr>{header}"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            "<p class=muted>A trade is a run of bars holding a position of one sign (a flip closes one trade and "
            "opens the next); it is filled at the first bar's open and closed at the next bar's open after the "
            "last. Trade return compounds the strategy's net returns over the held bars (fees included; with "
            "several assets it is not separable and shows –). Click a column to sort.</p>")


def _warnings(data: ReportData) -> list[str]:
    """Notes that must not be overlooked: in-sample results and explicit warnings."""
    out = [note for note in data.notes if note.lstrip().upper().startswith("WARNING")]
    if data.metrics.get("in_sample") and not out:
        out.append("WARNING: this backtest overlaps the period the model was fitted and selected on; its results are "
                   "in-sample, not evidence of an edge.")
    return out


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1280px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:18px;margin:30px 0 10px;border-bottom:1px solid #dde1e7;
padding-bottom:4px}.sub{color:#5b6472;font-size:13px}
.verdict{font-size:17px;padding:14px 18px;border-radius:8px;margin:16px 0;border-left:6px solid}
.verdict.no{background:#fdf0ef;border-color:#c0392b}.verdict.yes{background:#eef8f0;border-color:#27ae60}
.warning{font-size:18px;font-weight:700;padding:16px 20px;border-radius:8px;margin:16px 0;background:#c0392b;
color:#fff;border:3px solid #7b1d13}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0;box-shadow:0 1px 2px #0001}
th,td{padding:5px 10px;border-bottom:1px solid #eceff3;text-align:left;white-space:nowrap}
th{background:#eef1f5;font-weight:600;position:sticky;top:0}table.num td:not(:first-child){text-align:right;
font-variant-numeric:tabular-nums}table.sortable th{cursor:pointer}
.chart{background:#fff;border-radius:6px;box-shadow:0 1px 2px #0001;min-height:200px}
.scroll{max-height:460px;overflow:auto;display:inline-block}td.long{color:#1e8449}td.short{color:#b03a2e}
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
    window = rolling_window(n, data.rolling_window_bars or max(2, round(30 * 86400 / tf.seconds)))
    stats = data.statistics
    ci = (stats.get("sharpe_ci_low"), stats.get("sharpe_ci_high")) if "sharpe_ci_low" in stats else None
    verdict = make_verdict(data.metrics, data.baseline_metrics, ci, stats.get("dsr"), stats.get("n_trials"),
                           stats.get("pbo"), _num(stats.get("sharpe_ci_confidence", 0.95)))
    verdict_text = data.verdict or verdict.text
    best = verdict.best_baseline
    edges = _bucket_edges(n)

    ts = np.asarray(data.timestamps_ns, dtype=np.int64)
    start, end = _utc(int(ts[0])), _utc(int(ts[-1]))
    assets = ", ".join(data.asset_names) if data.asset_names else ""
    subtitle = f"{assets + ' · ' if assets else ''}{tf} bars · {start} → {end} UTC · {n:,} bars"
    # Points are drawn at each bucket's last bar open time; plotly reads epoch milliseconds on a date axis as UTC.
    times_ms = _bucket_last(ts, edges) // 1_000_000
    figures: dict[str, dict[str, Any]] = {
        "chart-equity": _equity_figure(data, edges, best),
        "chart-price-regimes": _price_figure(data, edges),
    }
    if window is not None:
        figures["chart-rolling-sharpe"] = _rolling_sharpe_figure(data, edges, window, ppy, tf.seconds, best)
        sharpe_html = _chart_div("chart-rolling-sharpe", figures["chart-rolling-sharpe"])
        if window < (data.rolling_window_bars or round(30 * 86400 / tf.seconds)):
            sharpe_html += (f"<p class=muted>The backtest is short ({n:,} bars), so the window is a quarter of it "
                            f"({window} bars) instead of 30 days.</p>")
    else:
        sharpe_html = (f"<p class=muted>Too short for a rolling Sharpe ratio: {n:,} bar(s); a window needs at "
                       f"least {MIN_ROLLING_WINDOW} bars and the series four windows.</p>")
    warnings = _warnings(data)
    other_notes = [note for note in data.notes if note not in warnings]

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style>",
        f"<script>{plotly_js()}</script></head><body><main>",
        f"<h1>{html.escape(data.title)}</h1><div class=sub>{html.escape(subtitle)}</div>",
        "<nav>" + "".join(f'<a href="#{s}">{s.replace("-", " ")}</a>' for s in SECTION_IDS) + "</nav>",
        '<section id="verdict">',
        *[f'<div class="warning" role="alert">{html.escape(text)}</div>' for text in warnings],
        f'<div class="verdict {"yes" if verdict.edge else "no"}">{html.escape(verdict_text)}</div>',
        *[f"<p class=muted>{html.escape(note)}</p>" for note in other_notes],
        "</section>",
        '<section id="summary"><h2>Strategy vs baselines (after costs)</h2>', _summary_table(data, best),
        "<p class=muted>Baselines trade the same data, period and costs. Ratios annualized from the bar timeframe "
        f"({ppy:g} bars per year); – marks an undefined value.</p></section>",
        '<section id="equity"><h2>Equity and drawdown</h2>', _chart_div("chart-equity", figures["chart-equity"]),
        "<p class=muted>Drag to zoom, double-click to reset; the buttons pick a trailing range.</p></section>",
        '<section id="price-regimes"><h2>Price, regimes and positions</h2>',
        _chart_div("chart-price-regimes", figures["chart-price-regimes"]),
        "" if data.regimes is not None else "<p class=muted>No regime labels were given for this run.</p>",
        "</section>",
        '<section id="rolling-sharpe"><h2>Rolling Sharpe</h2>', sharpe_html, "</section>",
        '<section id="monthly-returns"><h2>Monthly returns</h2>', _monthly_table(data), "</section>",
        '<section id="trades"><h2>Trades</h2>', _trades_table(data, tf.nanoseconds), "</section>",
        '<section id="regime-actions"><h2>Per-regime results and actions</h2>', _regime_table(data), "</section>",
        '<section id="walk-forward"><h2>Walk-forward windows</h2>', _windows_table(data.windows), "</section>",
        '<section id="statistics"><h2>Statistics</h2>', _statistics_table(stats), "</section>",
    ]
    if data.stages:
        parts += ['<section id="stages"><h2>Pipeline stages</h2>', _stages_table(data.stages), "</section>"]
    parts += ['<section id="run-info"><h2>Run information</h2>', _run_info_table(data.run_info), "</section>",
              "</main>", _chart_script(times_ms, figures), "</body></html>"]
    return "\n".join(parts)


def write_report(path: str, data: ReportData) -> str:
    """Render and write the report atomically; returns the path."""
    atomic_write_text(path, render_report(data))
    return path
