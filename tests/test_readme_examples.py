"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], flags=re.S)


def test_simulator_example_runs() -> None:
    blocks = _python_blocks("The simulator")
    assert blocks, "the simulator section has a Python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    res = namespace["res"]
    assert res.reward.shape == (256,) and (res.info["fee"] >= 0).all()  # type: ignore[attr-defined]
    test = namespace["test"]
    assert test.num_envs == 1  # type: ignore[attr-defined]


def test_bar_by_bar_tactical_example_runs(tmp_path: Path, monkeypatch: object) -> None:
    import numpy as np

    blocks = _python_blocks("Speed: PPO throughput, devices and bar-by-bar features")
    assert blocks, "the speed section has a Python example"
    monkeypatch.chdir(tmp_path)  # type: ignore[attr-defined]
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    row, pipe, bars = namespace["row"], namespace["pipe"], namespace["bars"]
    batch = pipe.transform(bars)  # type: ignore[attr-defined]
    assert np.array_equal(row.features, batch.features[-1]) and row.valid == batch.valid[-1]  # type: ignore[attr-defined]
    assert (tmp_path / "runs" / "stream" / "tactical_stream.npz").exists()
