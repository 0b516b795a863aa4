"""``himari bench env`` runs end to end with a tiny budget and prints the documented JSON keys."""

from __future__ import annotations

import json

from click.testing import CliRunner

from himari.cli.main import cli


def test_bench_env_json_tiny() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "env",
            "--sizes",
            "1,8",
            "--seconds",
            "0.01",
            "--window",
            "4",
            "--features",
            "3",
            "--torch-device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in (
        "single_n1",
        "single_n8",
        "multi_n1",
        "multi_n8",
        "numpy_single_n8",
        "numpy_multi_n1",
        "torch_multi_n8",
    ):
        assert data[key] > 0


def test_bench_env_gym_anytrading_comparison() -> None:
    """The per-step Python environment the issue compares against, timed on this machine beside the simulator."""
    import pytest

    pytest.importorskip("gym_anytrading")
    args = ["bench", "env", "--sizes", "2", "--seconds", "0.01", "--window", "4", "--features", "2"]
    result = CliRunner().invoke(cli, [*args, "--gym-anytrading", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["gym_anytrading"] > 0
    result = CliRunner().invoke(cli, [*args, "--gym-anytrading"])
    assert result.exit_code == 0, result.output
    assert "gym-anytrading stocks-v0 (window=4, 2 features, 1 env)" in result.output
    assert "observation per env-step: 120 bytes single" in result.output  # 4 * (4 * (2 + 4) + 6)


def test_bench_env_gym_anytrading_missing(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gym_anytrading", None)  # import fails as if not installed
    result = CliRunner().invoke(cli, ["bench", "env", "--sizes", "1", "--seconds", "0.01", "--gym-anytrading"])
    assert result.exit_code != 0
    assert "pip install gym-anytrading" in result.output
