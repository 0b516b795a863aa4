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
