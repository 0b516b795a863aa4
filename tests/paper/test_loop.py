"""The paper loop: what it records, that it hands sessions only bars <= t, resume, and kill -9 crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from himari.data.loaders import load_bars
from himari.errors import ConfigError, DataError, RunDirError
from himari.ops.metrics import Metrics
from himari.paper.loop import CHAMPION, order_records
from himari.paper.runner import run_paper_command
from himari.paper.store import PaperStore
from tests.paper.factory import HISTORY_BARS, WARMUP_BARS, fake_session_factory
from tests.paper.fakes import FakeEngine, FakeSession

REPO = Path(__file__).resolve().parents[2]


def _tables(db: Path) -> tuple[list, list, list]:
    with PaperStore(db, readonly=True) as store:
        fills = store.fills()
        ts, equity, dd = store.equity_curve(CHAMPION)
        orders = store.orders(CHAMPION)
    return fills, list(zip(ts.tolist(), equity.tolist(), dd.tolist(), strict=True)), orders


def _reference(csv: Path, start_index: int = WARMUP_BARS) -> tuple[list, list]:
    """The same fake session driven directly bar by bar over the full history (the backtest's view)."""
    bars = load_bars(csv)
    session = FakeSession(FakeEngine(("BTCUSDT",), model_id="fake-momentum"))
    fills, curve = [], []
    for t in range(start_index, len(bars)):
        outcome = session.on_bar({"BTCUSDT": bars.head(t + 1)})
        fills += [(f.order_id, f.timestamp_ns, f.quantity_change, f.price, f.fee) for f in outcome.fills]
        curve.append((outcome.timestamp_ns, outcome.equity))
    return fills, curve


def test_replay_records_every_bar_like_the_direct_loop(tmp_path: Path, replay_csv: Path) -> None:
    db = tmp_path / "paper.sqlite"
    metrics = Metrics()
    summary = run_paper_command("momentum", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory,
                                metrics=metrics)
    bars = load_bars(replay_csv)
    assert summary.bars_traded == len(bars) - WARMUP_BARS and summary.bars_warmup == WARMUP_BARS
    fills, curve, orders = _tables(db)
    ref_fills, ref_curve = _reference(replay_csv)
    assert [(f["order_id"], f["ts_ns"], f["quantity_change"], f["price"], f["fee"]) for f in fills] == ref_fills
    assert [(t, e) for t, e, _ in curve] == ref_curve
    assert len(fills) > 20  # the fake trades: the comparison is not vacuous
    # every fill answers an order recorded at the previous decision
    order_ids = {o["order_id"] for o in orders}
    assert {f["order_id"] for f in fills} <= order_ids
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM bars").fetchone()[0] == summary.bars_traded
        assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == summary.bars_traded
    text = metrics.render()[0].decode()
    assert 'himari_equity{stream="champion"}' in text and "himari_fills_total" in text


def test_sessions_only_see_bars_up_to_t(tmp_path: Path, replay_csv: Path) -> None:
    seen = []

    class Spy(FakeSession):
        def on_bar(self, bars_by_symbol):
            b = bars_by_symbol["BTCUSDT"]
            seen.append((b.index[-1].value, len(b)))
            return super().on_bar(bars_by_symbol)

    def factory(run, equity):
        session, info = fake_session_factory(run, equity)
        return Spy(session.engine, equity), info

    committed = []
    run_paper_command("m", [f"replay:{replay_csv}"], tmp_path / "p.sqlite", session_factory=factory,
                      on_commit=lambda ts, records: committed.append(ts))
    assert [s[0] for s in seen] == committed  # the last row handed over is the bar being committed
    assert max(s[1] for s in seen) == HISTORY_BARS  # bounded history


def test_in_process_resume_matches_uninterrupted(tmp_path: Path, replay_csv: Path) -> None:
    ref = tmp_path / "ref.sqlite"
    run_paper_command("m", [f"replay:{replay_csv}"], ref, session_factory=fake_session_factory)
    db = tmp_path / "resumed.sqlite"
    first = run_paper_command("m", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory, max_bars=100)
    second = run_paper_command("m", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory, max_bars=7)
    third = run_paper_command("m", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory)
    assert first.bars_traded == 100 and second.resumed_from_ns == first.last_ts_ns and second.bars_traded == 7
    assert first.bars_traded + second.bars_traded + third.bars_traded == len(load_bars(replay_csv)) - WARMUP_BARS
    assert _tables(db) == _tables(ref)
    # a finished run restarted does nothing and duplicates nothing
    again = run_paper_command("m", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory)
    assert again.bars_traded == 0 and _tables(db) == _tables(ref)


def _committed_bars(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM equity").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_kill9_mid_run_then_restart_matches_uninterrupted(tmp_path: Path, replay_csv: Path) -> None:
    ref = tmp_path / "ref.sqlite"
    run_paper_command("m", [f"replay:{replay_csv}"], ref, session_factory=fake_session_factory)
    total = len(load_bars(replay_csv)) - WARMUP_BARS
    db = tmp_path / "crash.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HIMARI_PAPER_SYNCHRONOUS": "FULL"}
    # 3600 s bars at 360000x real time: 10 ms per bar, so the run is still going when it is killed
    cmd = [sys.executable, "-m", "tests.paper.crash_proc", "m", str(replay_csv), str(db), "360000"]
    for kill_after in (30, 150):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _committed_bars(db) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        done = _committed_bars(db)
        assert kill_after <= done < total  # killed mid-run
    final = subprocess.run([*cmd[:-1], "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert "resumed=" in final.stdout and "resumed=None" not in final.stdout
    fills, curve, orders = _tables(db)
    ref_fills, ref_curve, ref_orders = _tables(ref)
    assert len(curve) == total
    assert fills == ref_fills and curve == ref_curve and orders == ref_orders


def test_restart_with_a_different_command_is_refused(tmp_path: Path, replay_csv: Path) -> None:
    db = tmp_path / "p.sqlite"
    run_paper_command("m", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory, max_bars=5)
    with pytest.raises(RunDirError, match="initial_equity"):
        run_paper_command("m", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory, initial_equity=5.0)
    with pytest.raises(RunDirError, match="run="):
        run_paper_command("other", [f"replay:{replay_csv}"], db, session_factory=fake_session_factory)
    with pytest.raises(RunDirError, match="shadow_run"):
        run_paper_command("m", [f"replay:{replay_csv}"], db, shadow="m2", session_factory=fake_session_factory)


def test_start_end_window_and_feed_errors(tmp_path: Path, replay_csv: Path) -> None:
    s = run_paper_command("m", [f"replay:{replay_csv}"], tmp_path / "w.sqlite", session_factory=fake_session_factory,
                          start="2018-06-25", end="2018-06-26")
    assert s.bars_traded == 24
    with pytest.raises(ConfigError, match="expected replay:PATH"):
        run_paper_command("m", ["kafka:x"], tmp_path / "x.sqlite", session_factory=fake_session_factory)
    with pytest.raises(ConfigError, match="not after"):
        run_paper_command("m", [f"replay:{replay_csv}"], tmp_path / "x.sqlite", session_factory=fake_session_factory,
                          start="2018-06-25", end="2018-06-24")
    with pytest.raises(ConfigError, match="not traded by the model"):
        run_paper_command("m", ["replay:ETHUSDT"], tmp_path / "x.sqlite", session_factory=fake_session_factory)
    with pytest.raises(DataError):
        run_paper_command("m", [f"replay:{tmp_path / 'missing.csv'}"], tmp_path / "x.sqlite",
                          session_factory=fake_session_factory)


def test_order_records_follow_target_changes() -> None:
    decision = {"timestamp": "2024-01-01T00:00:00Z", "symbols": ["BTCUSDT", "ETHUSDT"],
                "target_position": {"BTCUSDT": 0.5, "ETHUSDT": 0.0}}
    orders = order_records(decision, {"BTCUSDT": 0.2, "ETHUSDT": 0.0}, 1_704_067_200_000_000_000)
    assert orders == [{"order_id": "BTCUSDT:1704067200000000000", "symbol": "BTCUSDT", "target_position": 0.5,
                       "position_before": 0.2, "requested_change": pytest.approx(0.3)}]
    assert np.isclose(orders[0]["requested_change"], 0.3)


def test_one_writer_per_database(tmp_path: Path) -> None:
    first = PaperStore(tmp_path / "p.sqlite")
    with pytest.raises(RunDirError, match="another himari paper process"):
        PaperStore(tmp_path / "p.sqlite")
    with PaperStore(tmp_path / "p.sqlite", readonly=True) as reader:  # readers (API, compare) are fine
        assert reader.streams() == []
    first.close()
    PaperStore(tmp_path / "p.sqlite").close()  # released on close (and by the OS when a process dies)
