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


def test_use_from_python_example_runs(tmp_path, monkeypatch) -> None:
    """The "Use from Python" block, run as written in a folder holding a small real run (``runs/quick``)."""
    from tests.paper.real_bundle import build_mlp_bundle

    build_mlp_bundle(tmp_path / "runs" / "quick")
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks("Use from Python")
    assert blocks, "the section has a Python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    features, regimes, frame = namespace["features"], namespace["regimes"], namespace["frame"]
    assert len(features) == len(frame) == len(regimes)  # type: ignore[arg-type]
    assert {"valid", "p_crisis", "label_name"} <= set(features.columns) | set(regimes.columns)  # type: ignore[attr-defined]
    decision = namespace["decision"]
    assert decision.symbols == ("BTCUSDT",)  # type: ignore[attr-defined]
    assert namespace["table"].index.tolist() == ["BTCUSDT"]  # type: ignore[attr-defined]
    assert namespace["obs"].shape == namespace["env"].observation_space.shape  # type: ignore[attr-defined]


def test_decide_request_body_example_is_a_valid_request(tmp_path, monkeypatch) -> None:
    from himari.serve.schemas import DecideRequest

    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks("Dashboard and API docs")
    assert blocks
    exec(compile(blocks[0], "README.md", "exec"), {})
    request = DecideRequest.model_validate_json((tmp_path / "body.json").read_text())
    assert request.bars is not None and len(request.bars["BTCUSDT"]) == 3000
    assert request.bars["BTCUSDT"][-1].timestamp == "2024-12-31T23:00:00Z"


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
