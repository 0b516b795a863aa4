"""Run configs: a typo in any section, or a section the run does not use, is rejected before any work starts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from himari.backtest.wfo import WFOConfig
from himari.cli.main import cli
from himari.errors import ConfigError
from himari.training.config import TrainRunConfig, validate_sections

TYPOS = [
    ({"ppo": {"learnin_rate": 1e-3}}, "learnin_rate"),
    ({"sim": {"episode_lenght": 64}}, "episode_lenght"),
    ({"policy_config": {"hidden": [8]}}, "hidden"),
    ({"tactical": {"windows": 3}}, "windows"),
    ({"sizing": {"target_vol": 0.3}}, "target_vol"),
    ({"risk": {"vol_cap": 0.3}}, "vol_cap"),
]


@pytest.mark.parametrize(("section", "key"), TYPOS)
def test_typo_in_any_section_names_the_key(section: dict, key: str) -> None:
    for build in (lambda: WFOConfig.parse(section), lambda: TrainRunConfig.parse({"policy": "mlp", **section})):
        with pytest.raises(ConfigError, match=key):
            build()


def test_sections_the_run_does_not_use_are_errors() -> None:
    with pytest.raises(ConfigError, match="'offline' is not used"):
        validate_sections("mlp", "x", offline={"labels": {}})
    with pytest.raises(ConfigError, match="'ppo' is not used"):
        WFOConfig.parse({"policy": "cql", "ppo": {"n_epochs": 2}})
    with pytest.raises(ConfigError, match=r"offline: .*unknown options"):
        TrainRunConfig.parse({"policy": "cql", "offline": {"labelz": {}}})
    with pytest.raises(ConfigError, match="not a walk-forward kind"):
        WFOConfig.parse({"policy": "sizer"})


def test_train_cli_rejects_a_typo_before_any_work(tmp_path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"ppo": {"n_stepz": 8}}))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--policy", "mlp", "--out", str(out), "--config", str(cfg)])
    assert res.exit_code == 2 and "n_stepz" in res.output and "Traceback" not in res.output
    assert not out.exists()  # nothing was started


def test_serve_and_paper_configs_reject_typos_and_bad_values() -> None:
    from himari.paper.runner import PaperConfig
    from himari.serve.app import ServeConfig

    base = {"symbols": ["BTCUSDT"], "timeframe": "1h", "model_id": "m", "model_version": "0"}
    with pytest.raises(ConfigError, match="workerz"):
        ServeConfig.parse({**base, "workerz": 2})
    with pytest.raises(ConfigError, match="history_bars"):
        ServeConfig.parse({**base, "history_bars": 0})
    with pytest.raises(ConfigError, match="initial_equity"):
        PaperConfig.parse({"run": "r", "feeds": ["replay:BTCUSDT"], "db": "p.sqlite", "initial_equity": -1})
    with pytest.raises(ConfigError, match="feeds"):
        PaperConfig.parse({"run": "r", "feeds": [], "db": "p.sqlite"})
