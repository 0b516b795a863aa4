"""Kill a training process with SIGKILL mid-run, resume it, and get exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from himari.agents.ppo.checkpoint import latest_checkpoint
from himari.errors import RunDirError
from tests.agents.ppo.kill_target import UPDATES, make_trainer

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HIMARI_TORCH_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.agents.ppo.kill_target", str(run_dir)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        pointer = run_dir / "checkpoints" / "latest.json"
        while time.monotonic() < deadline:
            if pointer.exists() and json.loads(pointer.read_text())["update"] >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"training process ended early with {proc.returncode}")
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint within the deadline")
        time.sleep(0.3)  # let it get into the next updates
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    assert checkpoint is not None
    killed_at = json.loads((checkpoint / "trainer_state.json").read_text())["next_update"]
    assert 0 < killed_at < UPDATES

    # a different config is refused
    with pytest.raises(RunDirError, match="config"):
        make_trainer(str(run_dir), seed=12).train(resume=True)

    resumed = make_trainer(str(run_dir))
    result = resumed.train(resume=True)
    assert result.updates == UPDATES
    assert next(h["update"] for h in result.history) == killed_at  # continued from the last checkpoint
    updates_logged = [json.loads(line)["update"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert updates_logged == list(range(UPDATES))

    reference = make_trainer(None)
    reference.train()
    a, b = reference.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
