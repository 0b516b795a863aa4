"""Shadow A/B: champion and challenger on the same feed, compared with a paired block bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.errors import DataError
from himari.paper.runner import run_paper_command
from himari.paper.shadow import compare_streams, format_comparison
from himari.paper.store import BarRecord, PaperStore
from tests.paper.factory import fake_session_factory


def test_shadow_runs_beside_champion_on_the_same_bars(tmp_path: Path, replay_csv: Path) -> None:
    db = tmp_path / "ab.sqlite"
    run_paper_command("models/momentum", [f"replay:{replay_csv}"], db, shadow="models/contrarian",
                      session_factory=fake_session_factory)
    with PaperStore(db, readonly=True) as store:
        assert store.streams() == ["champion", "shadow"]
        ts_a, eq_a, _ = store.equity_curve("champion")
        ts_b, eq_b, _ = store.equity_curve("shadow")
        assert np.array_equal(ts_a, ts_b) and not np.allclose(eq_a, eq_b)
        assert store.meta()["shadow_model_id"] == "fake-contrarian"
        result = compare_streams(store, "1h", seed=3, n_boot=500)
    assert result.bars == len(ts_a)
    assert result.champion.total_return == pytest.approx(eq_a[-1] / eq_a[0] - 1)
    assert result.challenger.total_return == pytest.approx(eq_b[-1] / eq_b[0] - 1)
    d = (eq_b[1:] / eq_b[:-1] - 1) - (eq_a[1:] / eq_a[:-1] - 1)
    assert result.mean_difference_per_bar == pytest.approx(d.mean())
    assert result.ci_low <= result.mean_difference_per_bar <= result.ci_high
    assert 0 < result.p_value <= 1 and result.action_agreement < 0.5  # opposite signals rarely agree
    text = format_comparison(result)
    assert "paired block bootstrap" in text and "verdict:" in text


def _synthetic_store(path: Path, drift_per_bar: float, n: int = 400, seed: int = 0) -> None:
    """Two streams on the same bars: challenger = champion's returns + drift (+ small idiosyncratic noise)."""
    rng = np.random.default_rng(seed)
    common = rng.standard_t(4, n) * 0.01
    r_a = common + rng.normal(0, 0.001, n)
    r_b = common + drift_per_bar + rng.normal(0, 0.001, n)
    eq = {"champion": 1e4 * np.cumprod(1 + r_a), "shadow": 1e4 * np.cumprod(1 + r_b)}
    with PaperStore(path) as store:
        for i in range(n):
            ts = 1_700_000_000_000_000_000 // 3_600_000_000_000 * 3_600_000_000_000 + i * 3_600_000_000_000
            records = [BarRecord(s, ts, {"timestamp": str(ts), "symbols": ["X"], "actions": ["LONG"]}, [], [],
                                 float(eq[s][i]), 0.0, {"X": 1.0}, {}) for s in ("champion", "shadow")]
            store.record_bar({"X": np.array([1.0, 1.0, 1.0, 1.0, 0.0])}, ts, records)


def test_paired_test_detects_a_real_edge_and_not_a_null_one(tmp_path: Path) -> None:
    _synthetic_store(tmp_path / "edge.sqlite", drift_per_bar=0.0005)
    with PaperStore(tmp_path / "edge.sqlite", readonly=True) as store:
        edge = compare_streams(store, "1h", seed=0, n_boot=1000)
    # the edge (5e-4/bar) is large against the 1e-3 per-bar noise of the difference: an independent test on the
    # raw returns (std 1.4e-2) would miss it, the paired one must not
    assert edge.p_value < 0.01 and edge.ci_low > 0 and "outperforms" in edge.verdict
    _synthetic_store(tmp_path / "null.sqlite", drift_per_bar=0.0, seed=1)
    with PaperStore(tmp_path / "null.sqlite", readonly=True) as store:
        null = compare_streams(store, "1h", seed=0, n_boot=1000)
    assert null.p_value > 0.05 and "no significant difference" in null.verdict
    assert null.action_agreement == 1.0


def test_paired_test_false_positive_rate_is_near_nominal() -> None:
    from himari.evaluation.statistics import paired_bootstrap_test

    rejections = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        common = rng.standard_t(4, 300) * 0.01
        r_a, r_b = common + rng.normal(0, 0.001, 300), common + rng.normal(0, 0.001, 300)
        rejections += paired_bootstrap_test(r_b, r_a, np.random.default_rng(seed), n_boot=400).p_value < 0.05
    assert rejections <= 6  # 5% of 40 is 2; binomial P(X > 6) < 0.1%


def test_compare_needs_both_streams(tmp_path: Path, replay_csv: Path) -> None:
    db = tmp_path / "solo.sqlite"
    run_paper_command("m", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory, max_bars=20)
    with PaperStore(db, readonly=True) as store, pytest.raises(DataError, match="no records for stream 'shadow'"):
        compare_streams(store, "1h")


def test_cli_paper_compare_and_usage_errors(tmp_path: Path) -> None:
    _synthetic_store(tmp_path / "ab.sqlite", drift_per_bar=0.0005)
    (tmp_path / "ab.sqlite")
    runner = CliRunner()
    with PaperStore(tmp_path / "ab.sqlite") as store:
        store.bind_meta({"timeframe": "1h"})
    out = runner.invoke(cli, ["paper", "compare", "--db", str(tmp_path / "ab.sqlite"), "--n-boot", "300"])
    assert out.exit_code == 0, out.output
    assert "Sharpe (annual)" in out.output and "verdict: challenger outperforms" in out.output
    as_json = runner.invoke(cli, ["paper", "compare", "--db", str(tmp_path / "ab.sqlite"), "--json", "--n-boot", "300"])
    assert json.loads(as_json.output)["p_value"] < 0.05
    missing = runner.invoke(cli, ["paper", "compare", "--db", str(tmp_path / "nope.sqlite")])
    assert missing.exit_code == 2 and "no paper-trading database" in missing.output
    usage = runner.invoke(cli, ["paper", "--feed", "replay:BTCUSDT"])
    assert usage.exit_code == 2 and "--run, --feed and --db are required" in usage.output
