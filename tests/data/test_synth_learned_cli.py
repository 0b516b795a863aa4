"""``himari data synth --method timegan|tabddpm`` and ``himari data synth-report``: tiny-budget end-to-end runs,
reproducible files, a saved generator reused, clear one-line errors."""

from __future__ import annotations

import hashlib
import json

from click.testing import CliRunner

from himari.cli.main import cli

FIT = ["--calibrate-from", "BTCUSDT", "--calibrate-start", "2021-06-01", "--calibrate-end", "2021-08-01"]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_synth_learned_methods_end_to_end(tmp_path) -> None:
    args = ["data", "synth", "--method", "tabddpm", "--size", "tiny", "--scenarios", "2", "--bars", "200", *FIT]
    first = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "2 scenarios x 200 bars (1h) from tabddpm, seed 0" in first.output
    manifest = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert manifest["method"] == "tabddpm" and manifest["n_scenarios"] == 2 and manifest["n_bars"] == 200
    reuse = CliRunner().invoke(cli, ["data", "synth", "--method", "tabddpm", "--generator", str(tmp_path / "a" / "generator"),
                                     "--scenarios", "2", "--bars", "200", "--out", str(tmp_path / "c")])
    assert reuse.exit_code == 0, reuse.output
    assert _sha(tmp_path / "c" / "scenarios.parquet") == _sha(tmp_path / "a" / "scenarios.parquet")
    gan = CliRunner().invoke(cli, ["data", "synth", "--method", "timegan", "--size", "tiny", "--scenarios", "1",
                                   "--bars", "100", *FIT, "--out", str(tmp_path / "g")])
    assert gan.exit_code == 0, gan.output
    assert (tmp_path / "g" / "generator" / "weights.safetensors").exists()


def test_synth_learned_errors(tmp_path) -> None:
    no_data = CliRunner().invoke(cli, ["data", "synth", "--method", "timegan", "--out", str(tmp_path / "x")])
    assert no_data.exit_code == 2 and "--calibrate-from" in no_data.output and "Traceback" not in no_data.output
    wrong = CliRunner().invoke(cli, ["data", "synth", "--method", "timegan", "--generator", str(tmp_path),
                                     "--out", str(tmp_path / "y")])
    assert wrong.exit_code == 2 and "generator.json" in wrong.output
    mjd_gen = CliRunner().invoke(cli, ["data", "synth", "--generator", str(tmp_path), "--out", str(tmp_path / "z")])
    assert mjd_gen.exit_code == 2 and "--generator needs" in mjd_gen.output


def test_synth_report_tiny(tmp_path) -> None:
    args = ["data", "synth-report", "--fit-start", "2021-06-01", "--fit-end", "2021-08-01", "--holdout-end",
            "2021-10-01", "--methods", "mjd,tabddpm", "--size", "tiny", "--score-iters", "3", "--bars", "1500"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for source in ("real held-out", "real fit window", "mjd", "tabddpm"):
        assert f"| {source} |" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["source"]: r for r in report["rows"]}
    assert 0.0 <= rows["mjd"]["discriminative"] <= 0.5 and rows["tabddpm"]["predictive"] > 0
    assert rows["real held-out"]["bars"] > 1000 and "duration_CRISIS" in rows["tabddpm"]
    bad = CliRunner().invoke(cli, [*args[:-6], "--methods", "vae"])
    assert bad.exit_code == 2 and "unknown" in bad.output
