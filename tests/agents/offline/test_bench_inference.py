"""`himari bench inference` runs and reports a latency per requested kind (no timing assertions)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from himari.bench.inference import decision_latency, policy_builders
from himari.cli.main import cli


def test_bench_inference_json() -> None:
    result = CliRunner().invoke(cli, ["bench", "inference", "--json", "--repeats", "3", "--warmup", "1",
                                      "--kinds", "mlp-classifier,cql,rule,ensemble-low-latency"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert set(payload) == {"mlp-classifier", "cql", "rule", "ensemble-low-latency"}
    assert all(v > 0 for v in payload.values())


def test_every_offline_kind_has_a_builder() -> None:
    builders = policy_builders()
    for kind in ("mlp-classifier", "cql", "dt", "cgdt", "flag-trader", "mlp", "lstm", "ensemble-production"):
        assert kind in builders
    stats = decision_latency(builders["dt"](), repeats=3, warmup=2)
    assert stats["p99_ms"] >= stats["p50_ms"] > 0


def test_bench_inference_rejects_unknown_kind() -> None:
    result = CliRunner().invoke(cli, ["bench", "inference", "--kinds", "nope"])
    assert result.exit_code != 0
