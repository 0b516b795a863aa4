"""Paper trading through the real TradingSession on a real bundle: same fills as the backtester, and the CLI."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from himari.backtest.backtester import run_backtest
from himari.cli.main import cli
from himari.data.loaders import load_bars
from himari.paper.runner import run_paper_command
from himari.paper.store import PaperStore
from himari.trading.bundle import load_bundle

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


def _committed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM equity").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_cli_paper_killed_and_restarted_matches_the_backtest(tmp_path: Path, mlp_run: Path, replay_2022: Path) -> None:
    start = "2022-04-08"
    db = tmp_path / "cli.sqlite"
    args = ["paper", "--run", str(mlp_run), "--feed", f"replay:{replay_2022}", "--db", str(db), "--start", start,
            "--end", END]
    total = len(load_bars(replay_2022).between(start, END))
    env = {**os.environ, "HIMARI_PAPER_SYNCHRONOUS": "FULL"}
    proc = subprocess.Popen([sys.executable, "-m", "himari", *args, "--speed", "36000"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _committed(db) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 8 <= _committed(db) < total
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runner = CliRunner()
    second = runner.invoke(cli, [*args, "--metrics-port", str(port)])
    assert second.exit_code == 0 and "(resumed)" in second.output, second.output
    exported = httpx.get(f"http://127.0.0.1:{port}/metrics").text  # the exporter thread outlives the command here
    assert 'himari_equity{stream="champion"}' in exported and "himari_decision_latency_seconds_count" in exported
    with PaperStore(db, readonly=True) as store:
        ts, equity, _ = store.equity_curve("champion")
        fills = store.fills("champion")
        decisions = store.decisions("champion")
    assert len(ts) == total and len(set(ts.tolist())) == total
    assert decisions[-1]["model_id"] == "mlp-test" and len(decisions[-1]["gates"]) >= 8
    result = run_backtest(load_bundle(mlp_run), {"BTCUSDT": load_bars(replay_2022)}, start, END, show_progress=False)
    assert [(f["order_id"], f["ts_ns"]) for f in fills] == [(f["order_id"], f["timestamp_ns"]) for f in result.fills]
    assert np.allclose([f["quantity_change"] for f in fills], [f["quantity_change"] for f in result.fills], rtol=1e-9)
    bt_equity = {d["timestamp_ns"]: d["equity"] for d in result.decisions}
    assert np.allclose(equity, [bt_equity[t] for t in ts.tolist()], rtol=1e-9, atol=0)
    wrong = runner.invoke(cli, ["paper", "--run", str(tmp_path / "nothing"), "--feed", "replay:BTCUSDT", "--db",
                                str(tmp_path / "x.sqlite")])
    assert wrong.exit_code == 2 and "no model bundle" in wrong.output
