"""``himari bench decide`` / ``himari bench backtest``: tiny-budget CLI runs on a small real bundle (no timing asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from himari.cli.main import cli


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.paper.real_bundle import build_mlp_bundle

    return build_mlp_bundle(tmp_path_factory.mktemp("bench_run"), seed=1)


def test_bench_decide_json(run: Path) -> None:
    res = CliRunner().invoke(cli, ["bench", "decide", "--run", str(run), "--history", "400", "--new-bars", "12",
                                   "--batch-bars", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["history_bars"] == 400 and out["new_bars"] == 12
    for key in ("p50_ms", "p99_ms", "cpu_p50_ms", "batch_p50_ms", "first_bar_ms"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    assert out["p50_ms"] <= out["p99_ms"] <= out["max_ms"]


def test_bench_backtest_json(run: Path) -> None:
    res = CliRunner().invoke(cli, ["bench", "backtest", "--run", str(run), "--start", "2024-01-01", "--end",
                                   "2024-01-08", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["bars"] == 7 * 24 - 1  # bars whose move a decision paid
    for key in ("market_s", "loop_s", "loop_no_log_s", "run_backtest_s", "bars_per_s"):
        assert math.isfinite(out[key]) and out[key] > 0, key


def test_bench_decide_refuses_a_missing_run(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["bench", "decide", "--run", str(tmp_path / "nope")])
    assert res.exit_code != 0
    assert "Traceback" not in res.output
