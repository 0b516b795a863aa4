"""The HTML report: well-formed, self-contained, every section present; rendered by headless Chromium if present."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from himari.errors import DataError
from himari.evaluation.verdict import baseline_label, make_verdict
from himari.regime import plot as regime_plot
from himari.regime.palette import REGIME_COLOURS
from himari.report.html import (
    CHART_IDS,
    REGIME_COLORS,
    SECTION_IDS,
    ReportData,
    fmt,
    plotly_js,
    render_report,
    rolling_window,
    write_report,
)

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
CHROMIUM = next((Path(p) for p in (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)


class _Checker(HTMLParser):
    """Checks that every non-void element is closed in order, and collects ids and URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.urls: list[str] = []
        self.scripts_with_src = 0
        self.links = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for key in ("src", "href"):
            if values.get(key):
                self.urls.append(str(values[key]))
        if tag == "script" and values.get("src"):
            self.scripts_with_src += 1
        if tag == "link":
            self.links += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def _check(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    return checker


@pytest.fixture(scope="module")
def page(report_data: ReportData) -> str:
    return render_report(report_data)


def test_report_is_well_formed_and_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    checker = _check(page)
    assert checker.errors == [] and checker.stack == []
    assert set(SECTION_IDS) | {"stages"} <= checker.ids
    assert set(CHART_IDS) <= checker.ids  # equity+drawdown, price/regimes/positions, rolling Sharpe
    for url in checker.urls:
        assert url.startswith("#"), url  # nothing is loaded from a URL: plotly.js and the data are inline
    assert checker.scripts_with_src == 0 and checker.links == 0
    assert plotly_js() in page
    assert len(page) < 8_000_000  # plotly.js is ~4.8 MB of it


def test_report_content(report_data: ReportData, page: str) -> None:
    stats = report_data.statistics
    expected = make_verdict(report_data.metrics, report_data.baseline_metrics,
                            (stats["sharpe_ci_low"], stats["sharpe_ci_high"]), stats["dsr"], stats["n_trials"],
                            stats["pbo"])
    verdict_section = page.split('<section id="verdict">')[1].split("</section>")[0]
    assert html.escape(expected.text) in verdict_section
    assert expected.best_baseline is not None
    assert html.escape(baseline_label(expected.best_baseline)) in verdict_section
    for label in ("strategy", "buy-and-hold", "volatility-targeted buy-and-hold", "moving-average crossover",
                  "random trader"):
        assert label in page
    for regime in ("LOW_VOL", "TRENDING", "HIGH_VOL", "CRISIS"):
        assert regime in page
    assert "Deflated Sharpe ratio" in page and "4 trials" in page
    assert "Probability of backtest overfitting" in page
    assert "abc123" in page and "f" * 64 in page  # run info: config hash, data sha256
    assert "2023-04" in page  # walk-forward table


def test_custom_verdict_and_minimal_data(report_data: ReportData) -> None:
    minimal = dataclasses.replace(
        report_data, baseline_returns={}, baseline_metrics={}, regimes=None, statistics={}, windows=[], stages={},
        run_info={}, verdict="Custom <verdict> & text",
    )
    page = render_report(minimal)
    assert _check(page).errors == []
    assert "Custom &lt;verdict&gt; &amp; text" in page
    assert "no walk-forward windows" in page and "No statistics" in page


def test_mismatched_lengths_raise(report_data: ReportData) -> None:
    broken = dataclasses.replace(report_data, close=report_data.close[:-1])
    with pytest.raises(DataError, match="'close' has"):
        render_report(broken)


def test_fmt() -> None:
    assert fmt(0.1234, "pct") == "12.3%"
    assert fmt(math.nan) == "–" and fmt(None) == "–" and fmt(math.inf, "pct") == "–"
    assert fmt(1234567) == "1,234,567"
    assert fmt(0.4149) == "0.41"
    assert fmt("<b>") == "&lt;b&gt;"


def _figures(page: str) -> dict[str, dict]:
    payload = page.split('<script type="application/json" id="report-data">')[1].split("</script>")[0]
    return json.loads(payload)["figures"]  # type: ignore[no-any-return]


def test_charts_hold_every_bar_and_series(report_data: ReportData, page: str) -> None:
    payload = json.loads(page.split('id="report-data">')[1].split("</script>")[0])
    n = len(report_data.strategy_returns)
    assert len(payload["t"]) == n  # 2,879 hourly bars: plotted bar by bar, zoomable to single bars
    assert payload["t"][0] == report_data.timestamps_ns[0] // 1_000_000
    equity = payload["figures"]["chart-equity"]["data"]
    names = [trace["name"] for trace in equity]
    assert "strategy" in names and "buy-and-hold" in names and "strategy drawdown" in names
    strategy = next(trace for trace in equity if trace["name"] == "strategy")
    np.testing.assert_allclose(strategy["y"][-1], np.prod(1 + report_data.strategy_returns), rtol=1e-5)
    drawdown = next(trace for trace in equity if trace["name"] == "strategy drawdown")
    assert drawdown["yaxis"] == "y2" and min(v for v in drawdown["y"] if v is not None) < 0
    strip = next(t for t in payload["figures"]["chart-price-regimes"]["data"] if t["type"] == "heatmap")
    assert strip["z"][0] == np.asarray(report_data.regimes).tolist()


def test_regime_colours_match_regime_plots(page: str) -> None:
    from himari.regime.labeller import REGIME_NAMES
    from himari.regime.palette import REGIME_PALETTE_NAMES

    assert REGIME_PALETTE_NAMES == REGIME_NAMES
    assert regime_plot.REGIME_COLOURS is REGIME_COLOURS  # one palette constant for both
    assert tuple(REGIME_COLORS.values()) == REGIME_COLOURS
    scale = next(t for t in _figures(page)["chart-price-regimes"]["data"] if t["type"] == "heatmap")["colorscale"]
    assert [c for _, c in scale][2::2] == list(REGIME_COLOURS)
    for colour in REGIME_COLOURS:  # the per-regime table's swatches
        assert f"background:{colour}" in page


def test_walk_forward_return_columns_in_percent(report_data: ReportData) -> None:
    windows = [{"window": 0, "test_return": 0.0123, "buy_and_hold_return": 0.40},
               {"window": 1, "test_return": -0.02, "buy_and_hold_return": 0.000712}]
    section = render_report(dataclasses.replace(report_data, windows=windows)).split('id="walk-forward"')[1]
    section = section.split("</section>")[0]
    assert "40.0%" in section and "0.1%" in section and "1.2%" in section and "-2.0%" in section
    assert "0.40<" not in section and "0.000712" not in section


def test_in_sample_warning_is_a_banner(report_data: ReportData) -> None:
    text = "WARNING: this backtest overlaps the period the model was fitted and selected on"
    page = render_report(dataclasses.replace(report_data, notes=[text, "Costs are on."]))
    verdict = page.split('<section id="verdict">')[1].split("</section>")[0]
    assert f'<div class="warning" role="alert">{html.escape(text)}</div>' in verdict
    assert verdict.index('class="warning"') < verdict.index('class="verdict')  # above the verdict
    assert "<p class=muted>Costs are on.</p>" in verdict
    flagged = render_report(dataclasses.replace(report_data, notes=[], metrics={**report_data.metrics,
                                                                                "in_sample": True}))
    assert 'class="warning"' in flagged and "in-sample" in flagged


def test_monthly_and_trade_sections(report_data: ReportData, page: str) -> None:
    from himari.report.tables import monthly_returns, trade_list

    monthly = page.split('<section id="monthly-returns">')[1].split("</section>")[0]
    table = monthly_returns(report_data.timestamps_ns, report_data.strategy_returns)
    assert table.years.tolist() == [2023]
    assert f"{table.returns[0, 0] * 100:.1f}%" in monthly and "Buy-and-hold year" in monthly
    trades = page.split('<section id="trades">')[1].split("</section>")[0]
    expected = trade_list(report_data.positions, report_data.strategy_returns, report_data.close)
    assert f"{len(expected):,} round trips" in trades
    assert trades.count("<tr>") == len(expected) + 1  # header + one row per trade


def test_rolling_window_for_short_backtests() -> None:
    assert rolling_window(10_000, 720) == 720
    assert rolling_window(1_439, 720) == 359  # shorter than two windows: a quarter of the series
    assert rolling_window(20, 720) == 5
    assert rolling_window(19, 720) is None


def test_short_backtest_gets_a_rolling_sharpe_with_real_dates(report_data: ReportData) -> None:
    short = dataclasses.replace(
        report_data, timestamps_ns=report_data.timestamps_ns[:300], close=report_data.close[:300],
        strategy_returns=report_data.strategy_returns[:300], positions=report_data.positions[:300],
        baseline_returns={k: v[:300] for k, v in report_data.baseline_returns.items()},
        regimes=report_data.regimes[:300],
    )
    page = render_report(short)
    figure = _figures(page)["chart-rolling-sharpe"]
    values = [v for v in figure["data"][0]["y"] if v is not None]
    assert len(values) == 300 - 75 + 1  # window = 300 // 4 bars
    assert "trailing 75 bars" in figure["layout"]["yaxis"]["title"]["text"]
    assert "quarter of it" in page
    payload = json.loads(page.split('id="report-data">')[1].split("</script>")[0])
    assert payload["t"][0] // 1000 == short.timestamps_ns[0] // 1_000_000_000  # 2023, not 1970


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (apt-get install chromium)")
def test_renders_in_headless_chromium(report_data: ReportData, tmp_path: Path) -> None:
    """Opened offline in a real browser, plotly draws every chart (screenshot not blank, SVGs in the DOM)."""
    page = tmp_path / "report.html"
    write_report(str(page), report_data)
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--virtual-time-budget=10000",
             f"--user-data-dir={tmp_path / 'ud'}"]
    subprocess.run([str(CHROMIUM), *flags, "--hide-scrollbars", "--window-size=1280,3000",
                    f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=180)
    from matplotlib.image import imread

    image = imread(shot)
    assert image.shape[:2] == (3000, 1280)
    assert float(image[..., :3].std()) > 0.05  # not a blank page
    dom = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=180).stdout
    for section in SECTION_IDS:
        assert f'id="{section}"' in dom
    for chart in CHART_IDS:  # plotly.js ran offline and drew into each chart container
        container = dom.split(f'id="{chart}"')[1][:2000]
        assert "plot-container" in container and "main-svg" in container, chart
    shutil.rmtree(tmp_path / "ud", ignore_errors=True)


@pytest.mark.parametrize("n", [1, 3])
def test_tiny_series_render(n: int) -> None:
    from himari.evaluation.metrics import compute_metrics

    r = np.linspace(-0.01, 0.01, n)
    pos = np.ones(n)
    metrics = compute_metrics(r, pos, np.zeros(n), np.zeros(n), "1h", regimes=np.zeros(n))
    data = ReportData(
        title="tiny", timeframe="1h", timestamps_ns=np.arange(n, dtype=np.int64) * 3_600_000_000_000,
        close=100.0 * np.cumprod(1 + r), strategy_returns=r, positions=pos, metrics=metrics,
        baseline_returns={"buy_and_hold": r}, baseline_metrics={"buy_and_hold": metrics}, regimes=np.zeros(n),
    )
    page = render_report(data)
    assert _check(page).errors == []
    assert "No edge claimed" in page if n == 1 else "Does not beat buy-and-hold" in page
    assert "Too short for a rolling Sharpe ratio" in page and "chart-rolling-sharpe" not in _figures(page)
