"""The HTML report: well-formed, self-contained, every section present; rendered by headless Chromium if present."""

from __future__ import annotations

import dataclasses
import html
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from himari.errors import DataError
from himari.evaluation.verdict import baseline_label, make_verdict
from himari.report.html import SECTION_IDS, ReportData, fmt, render_report, write_report

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
CHROMIUM = Path("/usr/bin/chromium")


class _Checker(HTMLParser):
    """Checks that every non-void element is closed in order, and collects ids and URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.urls: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for key in ("src", "href"):
            if values.get(key):
                self.urls.append(str(values[key]))
        if tag == "img":
            self.images += 1
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
    assert checker.images == 4  # equity, drawdown, price/regimes/positions, rolling Sharpe
    for url in checker.urls:
        assert url.startswith(("#", "data:image/png;base64,")), url
    assert "http://" not in page and "https://" not in page
    assert len(page) < 2_000_000


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


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
def test_renders_in_headless_chromium(report_data: ReportData, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_report(str(page), report_data)
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp_path / 'ud'}"]
    subprocess.run([str(CHROMIUM), *flags, "--hide-scrollbars", "--window-size=1280,3000",
                    f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread

    image = imread(shot)
    assert image.shape[:2] == (3000, 1280)
    assert float(image[..., :3].std()) > 0.05  # not a blank page
    dom = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    for section in SECTION_IDS:
        assert f'id="{section}"' in dom
    # Every chart image decoded in the browser (naturalWidth is not in the DOM dump; check they survived parsing).
    assert dom.count("data:image/png;base64,") == 4
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
