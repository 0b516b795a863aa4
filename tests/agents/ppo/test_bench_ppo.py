"""``himari bench ppo --json`` runs end to end on a tiny budget and prints one JSON object of steps/s."""

from __future__ import annotations

import json

from click.testing import CliRunner

from himari.cli.main import cli


def test_bench_ppo_json_tiny() -> None:
    result = CliRunner().invoke(cli, ["bench", "ppo", "--json", "--only", "mlp", "--only", "sb3_ppo", "--only", "cleanrl_ppo",
                                      "--steps", "1024",
                                      "--num-envs", "32", "--n-steps", "16", "--sb3-steps", "512", "--sb3-envs", "2"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["mlp"] > 0 and figures["sb3_ppo"] > 0
    assert figures["mlp_over_sb3_ppo"] == figures["mlp"] / figures["sb3_ppo"]
    assert figures["cleanrl_ppo"] > 0
    assert figures["mlp_over_cleanrl_ppo"] == figures["mlp"] / figures["cleanrl_ppo"]


def test_bench_ppo_cuda_skips_cleanly_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        return  # the GPU path runs the full bench; exercised by hand where a GPU exists
    result = CliRunner().invoke(cli, ["bench", "ppo", "--device", "cuda", "--only", "mlp", "--steps", "512"])
    assert result.exit_code == 0, result.output
    assert "skipped (no CUDA GPU" in result.output


def test_bench_ppo_rounds_report_medians(monkeypatch: object) -> None:
    import himari.bench.ppo as bench

    rounds = iter([{"mlp": 100.0, "cleanrl_ppo": 50.0}, {"mlp": 60.0, "cleanrl_ppo": 60.0},
                   {"mlp": 90.0, "cleanrl_ppo": 30.0}])
    monkeypatch.setattr(bench, "_one_round", lambda *args: next(rounds))  # type: ignore[attr-defined]
    monkeypatch.setattr(bench, "_warm_up", lambda num_envs: None)  # type: ignore[attr-defined]
    out = bench.run_ppo_bench(which=("mlp", "cleanrl_ppo"), rounds=3)
    assert out["mlp"] == 90.0 and out["cleanrl_ppo"] == 50.0
    assert out["mlp_over_cleanrl_ppo"] == 2.0  # median of the per-round ratios 2.0, 1.0, 3.0
