"""Serve tests reuse the paper fixtures (a small real-data replay file, fast SQLite commits)."""

from tests.paper.conftest import _fast_sqlite, mlp_run, replay_csv  # noqa: F401
