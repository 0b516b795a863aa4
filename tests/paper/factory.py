"""A ``session_factory`` for :func:`himari.paper.runner.run_paper_command` built on the fakes (importable by the
crash-test subprocess). The run name picks the model: a path ending in ``contrarian`` trades the opposite signal."""

from __future__ import annotations

from himari.paper.runner import SessionInfo
from tests.paper.fakes import FakeEngine, FakeSession

WARMUP_BARS = 24
HISTORY_BARS = 64


def fake_session_factory(run: str, initial_equity: float) -> tuple[FakeSession, SessionInfo]:
    contrarian = str(run).rstrip("/").endswith("contrarian")
    engine = FakeEngine(("BTCUSDT",), sign=-1.0 if contrarian else 1.0,
                        model_id="fake-contrarian" if contrarian else "fake-momentum")
    info = SessionInfo(("BTCUSDT",), "1h", engine.model_id, WARMUP_BARS, HISTORY_BARS)
    return FakeSession(engine, initial_equity), info
