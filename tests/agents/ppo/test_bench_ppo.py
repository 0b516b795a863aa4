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
