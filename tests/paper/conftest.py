"""Fixtures for paper-trading tests: a small real-data replay file (with real gaps) and a fake session factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from himari.data.loaders import load_bars


@pytest.fixture(scope="session")
def replay_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTCUSDT 2018-06-20 .. 2018-07-06 hourly (about 380 bars, three real gaps), as a CSV file."""
    bars = load_bars("BTCUSDT").between("2018-06-20", "2018-07-06")
    path = tmp_path_factory.mktemp("replay") / "BTCUSDT-1h.csv"
    frame = bars.frame.reset_index()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(autouse=True)
def _fast_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commit without fsync in fast tests (still kill-safe in WAL mode); the kill -9 test runs with FULL."""
    monkeypatch.setenv("HIMARI_PAPER_SYNCHRONOUS", "NORMAL")


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN directory with a real (small, untrained) MLP bundle."""
    from tests.paper.real_bundle import build_mlp_bundle

    return build_mlp_bundle(tmp_path_factory.mktemp("mlp_run"), seed=0)
