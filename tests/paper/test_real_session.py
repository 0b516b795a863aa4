"""Paper trading through the real TradingSession on a real bundle: same fills as the backtester, and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from himari.backtest.backtester import run_backtest
from himari.bundle import load_bundle
from himari.cli.main import cli
from himari.data.loaders import load_bars
from himari.paper.runner import run_paper_command
from himari.paper.store import PaperStore

START, END = "2022-04-06", "2022-04-10"  # 96 traded bars: every paper bar rebuilds features (~0.1 s)


@pytest.fixture(scope="module")
def replay_2022(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTCUSDT 2022-03-10 .. 2022-04-10 (under the session's 3000-bar history, so paper sees what the backtest sees)."""
    bars = load_bars("BTCUSDT").between("2022-03-10", END)
    path = tmp_path_factory.mktemp("replay2022") / "BTCUSDT-1h.csv"
    frame = bars.frame.reset_index()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index=False)
    return path


def test_replay_gives_the_backtesters_fills(tmp_path: Path, mlp_run: Path, replay_2022: Path) -> None:
    db = tmp_path / "paper.sqlite"
    summary = run_paper_command(str(mlp_run), [f"replay:{replay_2022}"], db, start=START, end=END)
    bars = load_bars(replay_2022)
    result = run_backtest(load_bundle(mlp_run), {"BTCUSDT": bars}, START, END, show_progress=False)
    with PaperStore(db, readonly=True) as store:
        paper_fills = store.fills("champion")
        ts, equity, _ = store.equity_curve("champion")
    assert summary.bars_traded == len(bars.between(START, END))
    backtest_fills = result.fills
    assert len(backtest_fills) > 0, "the untrained policy should trade at least once"
    assert [f["order_id"] for f in paper_fills] == [f["order_id"] for f in backtest_fills]
    for p, b in zip(paper_fills, backtest_fills, strict=True):
        assert p["ts_ns"] == b["timestamp_ns"] and p["side"] == b["side"].lower()
        assert p["quantity_change"] == pytest.approx(b["quantity_change"], rel=1e-9, abs=1e-12)
        assert p["price"] == pytest.approx(b["price"], rel=1e-12)
        assert p["fee"] == pytest.approx(b["fee"], rel=1e-9, abs=1e-12)
    bt_equity = {d["timestamp_ns"]: d["equity"] for d in result.decisions}
    assert np.allclose(equity, [bt_equity[t] for t in ts.tolist()], rtol=1e-9, atol=0)


def test_cli_paper_runs_and_resumes_on_a_real_bundle(tmp_path: Path, mlp_run: Path, replay_2022: Path) -> None:
    db = tmp_path / "cli.sqlite"
    args = ["paper", "--run", str(mlp_run), "--feed", f"replay:{replay_2022}", "--db", str(db), "--start", "2022-04-08",
            "--end", END]
    runner = CliRunner()
    first = runner.invoke(cli, [*args, "--max-bars", "10"])
    assert first.exit_code == 0, first.output
    assert "traded 10 bars" in first.output
    second = runner.invoke(cli, args)
    assert second.exit_code == 0 and "(resumed)" in second.output, second.output
    with PaperStore(db, readonly=True) as store:
        ts, _, _ = store.equity_curve("champion")
        decisions = store.decisions("champion")
    assert len(ts) == len(load_bars(replay_2022).between("2022-04-08", END)) and len(set(ts.tolist())) == len(ts)
    assert decisions[-1]["model_id"] == "mlp-test" and len(decisions[-1]["gates"]) >= 8
    wrong = runner.invoke(cli, ["paper", "--run", str(tmp_path / "nothing"), "--feed", "replay:BTCUSDT", "--db",
                                str(tmp_path / "x.sqlite")])
    assert wrong.exit_code == 2 and "no model bundle" in wrong.output
