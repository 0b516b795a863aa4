"""Walk-forward checkpoints: a run interrupted after a window resumes there and writes the same results as an
uninterrupted run; checkpoints of another config or other data are not reused; nothing is pickled."""

from __future__ import annotations

import numpy as np
import pytest

from himari.backtest import wfo
from himari.backtest.checkpoint import _decode, _Encoder
from himari.backtest.pipeline import run_wfo_to_dir
from himari.backtest.wfo import WFOConfig
from himari.errors import RunDirError

BASE = {
    "test_start": "2023-01-01", "test_end": "2023-04-01", "train_months": 3, "seeds": 2,
    "steps_first_window": 512, "steps_per_window": 256, "num_envs": 8, "n_steps": 32, "episode_length": 64,
    "warmup_bars": 1500, "sizing": {"decision_every_bars": 24},
    "configurations": {"a": {}, "small": {"policy_config": {"hidden_sizes": [16]}}},
}
FILES = ("metrics.json", "windows.json", "decisions.csv", "fills.csv", "equity.csv", "trials.json")


class Interrupted(Exception):
    pass


def test_tree_codec_round_trips_exactly_and_refuses_unknown_objects():
    from himari.backtest.backtester import PathResult

    value = {"x": np.float32(0.1), "n": np.int64(3), "nan": float("nan"), "t": (1, "a"), 2: [np.arange(3.0)],
             "p": PathResult(np.array([0.5]), np.zeros((1, 1)), np.array([0.0]), np.array([1e-300]))}
    from himari.backtest.backtester import BacktestResult

    enc = _Encoder({"PathResult": PathResult, "BacktestResult": BacktestResult})
    tree = enc(value)
    back = _decode(tree, enc.arrays, enc.known)
    assert type(back["x"]) is np.float32 and back["x"] == np.float32(0.1)
    assert type(back["n"]) is np.int64 and np.isnan(back["nan"]) and back["t"] == (1, "a")
    assert np.array_equal(back[2][0], np.arange(3.0)) and back["p"].fees[0] == 1e-300
    with pytest.raises(RunDirError, match="cannot save a object"):
        _Encoder({})({"bad": object()})
    with pytest.raises(RunDirError, match="without pickle"):
        _Encoder({})(np.array([object()]))


def test_an_interrupted_walk_forward_resumes_without_refitting_finished_windows(btc_bars, tmp_path, monkeypatch):
    bars = {"BTCUSDT": btc_bars.between("2022-06-01", "2023-04-01")}
    cfg = WFOConfig.parse(BASE)
    run_wfo_to_dir(cfg, bars, tmp_path / "whole", command="test", progress=False)

    real = wfo.run_window
    fitted: list[int] = []

    def counting(config, window, *args, **kwargs):
        fitted.append(window.index)
        if window.index == 2 and len(fitted) == 3:
            raise Interrupted  # killed while fitting window 2
        return real(config, window, *args, **kwargs)

    monkeypatch.setattr(wfo, "run_window", counting)
    with pytest.raises(Interrupted):
        run_wfo_to_dir(cfg, bars, tmp_path / "resumed", command="test", progress=False)
    assert fitted == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints" / "windows").iterdir()) == ["000", "001"]
    fitted.clear()
    run_wfo_to_dir(cfg, bars, tmp_path / "resumed", command="test", progress=False)
    assert fitted == [2]  # windows 0 and 1 were loaded, not fitted again
    for name in FILES:
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    for rel in ("bundle/bundle.json", "bundle/policy/weights.safetensors"):
        assert (tmp_path / "resumed" / rel).exists()
    whole = (tmp_path / "whole" / "bundle" / "policy")
    resumed = (tmp_path / "resumed" / "bundle" / "policy")
    assert sorted(p.name for p in whole.rglob("*")) == sorted(p.name for p in resumed.rglob("*"))
    for p in whole.rglob("*.safetensors"):
        assert p.read_bytes() == (resumed / p.relative_to(whole)).read_bytes()
    import json

    assert json.loads((tmp_path / "resumed" / "timing.json").read_text())["resumed_windows"] == 2

    # a finished run rerun loads every window; another config (or --fresh) fits them all again
    fitted.clear()
    run_wfo_to_dir(cfg, bars, tmp_path / "resumed", command="test", progress=False)
    assert fitted == []
    assert (tmp_path / "resumed" / "metrics.json").read_bytes() == (tmp_path / "whole" / "metrics.json").read_bytes()
    other = WFOConfig.parse({**BASE, "steps_first_window": 256, "max_windows": 1})
    run_wfo_to_dir(other, bars, tmp_path / "resumed", command="test", progress=False)
    assert fitted == [0]
    fitted.clear()
    run_wfo_to_dir(other, bars, tmp_path / "resumed", command="test", progress=False, fresh=True)
    assert fitted == [0]
