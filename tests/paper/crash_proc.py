"""Subprocess entry for the kill -9 test: ``python -m tests.paper.crash_proc RUN REPLAY_CSV DB SPEED``."""

from __future__ import annotations

import sys

from himari.paper.runner import run_paper_command
from tests.paper.factory import fake_session_factory

if __name__ == "__main__":
    run, csv, db, speed = sys.argv[1:5]
    summary = run_paper_command(run, [f"replay:{csv}"], db, speed=float(speed), session_factory=fake_session_factory)
    print(f"traded={summary.bars_traded} resumed={summary.resumed_from_ns}")
