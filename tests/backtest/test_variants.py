"""Method ablations (himari ablate): same windows and seeds per variant, merged overrides, a paired comparison."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from himari.backtest.variants import paired_sharpe_difference
from himari.cli.main import cli
from himari.config import merge_overrides


def test_merge_overrides_merges_sections_and_replaces_values():
    base = {"ppo": {"lr": 1e-3, "clip": 0.2}, "sizing": {"decision_every_bars": 24}, "policy": "mlp"}
    out = merge_overrides(base, {"ppo": {"lr": 5e-4}, "policy": "stack", "sim": {"window": 4}})
    assert out == {"ppo": {"lr": 5e-4, "clip": 0.2}, "sizing": {"decision_every_bars": 24}, "policy": "stack",
                   "sim": {"window": 4}}
    assert base["ppo"]["lr"] == 1e-3  # the base is not modified


def test_paired_sharpe_difference_is_exact_and_antisymmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1e-4, 1e-2, 500), rng.normal(0, 1e-2, 500)
    ab = paired_sharpe_difference(a, b, 8760, seed=1)
    ba = paired_sharpe_difference(b, a, 8760, seed=1)
    sharpe = lambda x: x.mean() / x.std(ddof=1) * np.sqrt(8760)  # noqa: E731
    assert np.isclose(ab["sharpe_diff"], sharpe(a) - sharpe(b))
    assert np.isclose(ab["ci_low"], -ba["ci_high"]) and np.isclose(ab["ci_high"], -ba["ci_low"])
    same = paired_sharpe_difference(a, a, 8760, seed=1)
    assert same["sharpe_diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0


def test_ablate_cli_runs_each_variant_on_the_same_windows(tmp_path):
    cfg = tmp_path / "base.json"
    cfg.write_text(json.dumps({
        "test_start": "2023-01-01", "test_end": "2023-02-01", "train_months": 3, "seeds": 1,
        "steps_first_window": 256, "steps_per_window": 128, "num_envs": 8, "n_steps": 32, "episode_length": 64,
        "warmup_bars": 1500, "ablation": False, "sizing": {"decision_every_bars": 24},
    }))
    out = tmp_path / "abl"
    result = CliRunner().invoke(cli, ["ablate", "--config", str(cfg), "--out", str(out), "--variant", "without={}",
                                      "--variant", 'hourly={"sizing": {"decision_every_bars": 1}}'])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "variants.json").read_text())
    assert table["reference"] == "without" and [r["variant"] for r in table["rows"]] == ["without", "hourly"]
    assert table["rows"][0]["vs_reference"] is None and "sharpe_diff" in table["rows"][1]["vs_reference"]
    hourly = json.loads((out / "hourly" / "wfo_config.json").read_text())
    assert hourly["sizing"]["decision_every_bars"] == 1 and hourly["train_months"] == 3
    assert "| hourly |" in (out / "variants.md").read_text()
    bad = CliRunner().invoke(cli, ["ablate", "--config", str(cfg), "--out", str(tmp_path / "x"),
                                   "--variant", 'v={"nope": 1}'])
    assert bad.exit_code != 0 and "variant 'v'" in bad.output and "Traceback" not in bad.output


def test_ablate_switches_training_methods_through_the_ppo_section(tmp_path):
    """Every trainer method is a WFOConfig override of the one run assembly; a typo in it is a one-line error."""
    cfg = tmp_path / "base.json"
    cfg.write_text(json.dumps({
        "test_start": "2023-01-01", "test_end": "2023-02-01", "train_months": 2, "seeds": 1,
        "steps_first_window": 256, "steps_per_window": 128, "num_envs": 8, "n_steps": 16, "episode_length": 48,
        "warmup_bars": 1500, "ablation": False, "test_months": 1,
    }))
    out = tmp_path / "abl"
    methods = {"ppo": {"curriculum": {}, "aux": {}, "adversarial": {"eps": 0.05, "steps": 2},
                       "meta": {"tasks": 2, "inner_updates": 1}}, "sim": {"reward": {"preset": "seeds_sortino"}}}
    result = CliRunner().invoke(cli, ["ablate", "--config", str(cfg), "--out", str(out),
                                      "--variant", f"methods={json.dumps(methods)}"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "methods" / "wfo_config.json").read_text())
    assert saved["ppo"]["adversarial"]["steps"] == 2 and saved["ppo"]["meta"]["tasks"] == 2
    bad = CliRunner().invoke(cli, ["ablate", "--config", str(cfg), "--out", str(tmp_path / "x"),
                                   "--variant", 'v={"ppo": {"curriculum": {"stage_fractions": [0.5, 0.6, 0.1]}}}'])
    assert bad.exit_code != 0 and "stage_fractions" in bad.output and "Traceback" not in bad.output
