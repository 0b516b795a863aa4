"""Exact resume: a paper run stopped after any committed bar (what a kill -9 leaves, since a bar is one transaction)
and restarted writes a database byte-identical to an uninterrupted run's, apart from latency fields."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from himari.data.loaders import load_bars
from himari.paper.runner import run_paper_command

START, END = "2022-04-08", "2022-04-10"  # 48 traded bars on a real bundle (~0.1 s per bar)
TABLES = ("bars", "decisions", "orders", "fills", "equity", "state")


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bars = load_bars("BTCUSDT").between("2022-03-10", END)
    path = tmp_path_factory.mktemp("exact") / "BTCUSDT-1h.csv"
    frame = bars.frame.reset_index()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index=False)
    return path


def _without_latency(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_latency(v) for k, v in value.items() if "latency" not in k}
    if isinstance(value, list):
        return [_without_latency(v) for v in value]
    return value


def dump_store(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, JSON payloads re-serialized without latency fields (floats compared exactly)."""
    out: dict[str, list[tuple]] = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for table in TABLES:
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            if table in ("decisions", "state"):
                rows = [(*r[:-1], json.dumps(_without_latency(json.loads(r[-1])), sort_keys=True)) for r in rows]
            out[table] = rows
    return out


def test_stop_at_any_bar_then_resume_is_byte_identical(tmp_path: Path, mlp_run: Path, replay: Path) -> None:
    feeds = [f"replay:{replay}"]
    ref = tmp_path / "ref.sqlite"
    summary = run_paper_command(str(mlp_run), feeds, ref, start=START, end=END)
    reference = dump_store(ref)
    assert summary.bars_traded == len(reference["equity"]) == 48
    assert len(reference["fills"]) > 0, "the untrained policy should trade"
    for stops in ((1,), (13, 30)):
        db = tmp_path / f"stopped{'-'.join(map(str, stops))}.sqlite"
        done = 0
        for stop in stops:  # each restart builds a fresh session from the bundle and the store, as after kill -9
            done += run_paper_command(str(mlp_run), feeds, db, start=START, end=END, max_bars=stop - done).bars_traded
            assert done == stop
        resumed = run_paper_command(str(mlp_run), feeds, db, start=START, end=END)
        assert resumed.resumed_from_ns is not None
        got = dump_store(db)
        for table in TABLES:
            assert got[table] == reference[table], f"{table} differs after stops at {stops}"
    # and a real kill -9 of the CLI process mid-run (a bar is one transaction: it is in the store or not at all)
    db = tmp_path / "killed.sqlite"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "HIMARI_PAPER_SYNCHRONOUS": "FULL"}
    args = [sys.executable, "-m", "himari", "paper", "--run", str(mlp_run), "--feed", feeds[0], "--db", str(db),
            "--start", START, "--end", END, "--speed", "36000"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _committed(db) < 21 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    assert 21 <= _committed(db) < 48
    run_paper_command(str(mlp_run), feeds, db, start=START, end=END)
    got = dump_store(db)
    for table in TABLES:
        assert got[table] == reference[table], f"{table} differs after kill -9"


def _committed(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM equity").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_kelly_tracker_resumes_on_the_same_floating_point_path() -> None:
    """A tracker restored from its JSON state at any bar continues with bit-identical running sums (the Kelly cap
    differed by 5.5e-12 when the sums were recounted from the outcomes on load)."""
    import numpy as np

    from himari.sizing.kelly import SignalOutcomeTracker

    rng = np.random.default_rng(5)
    n, a, window = 300, 2, 64
    returns = rng.normal(0, 0.01, (n, a))
    directions = rng.integers(-1, 2, (n, a)).astype(float)
    tracker = SignalOutcomeTracker(a, window)
    for t in range(n):
        tracker.update(t, returns[t], directions[t])
        if t in (10, 63, 64, 150, 250):
            clone = SignalOutcomeTracker(a, window)
            clone.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
            for u in range(t + 1, n):
                clone.update(u, returns[u], directions[u])
            reference = SignalOutcomeTracker(a, window)
            for u in range(n):
                reference.update(u, returns[u], directions[u])
            for a_state, b_state, name in zip(clone.state, reference.state, clone.state._fields, strict=True):
                assert np.array_equal(a_state, b_state, equal_nan=True), (t, name)


def test_one_writer_whatever_the_name(tmp_path: Path) -> None:
    """A symlink or a hard link to a database being written is the same database: a second writer is refused."""
    from himari.errors import RunDirError
    from himari.paper.store import PaperStore

    real = tmp_path / "real" / "p.sqlite"
    first = PaperStore(real)
    (tmp_path / "link.sqlite").symlink_to(real)
    os.link(real, tmp_path / "hard.sqlite")
    for name in ("link.sqlite", "hard.sqlite"):
        with pytest.raises(RunDirError, match="another himari paper process"):
            PaperStore(tmp_path / name)
    first.close()
    with PaperStore(tmp_path / "link.sqlite") as second:  # released on close; the link opens the real database
        assert second.streams() == []
    assert not (tmp_path / "link.sqlite-wal").exists()
