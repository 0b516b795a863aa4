"""``himari data synth``: reproducible output files, summary table, calibration, config errors."""

from __future__ import annotations

import hashlib
import json

from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.store import write_frame
from himari.data.synth import load_batch


def _digest(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_synth_is_byte_identical_for_a_seed_and_prints_summary(tmp_path):
    args = ["data", "synth", "--scenarios", "20", "--bars", "300", "--seed", "0"]
    first = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b")])
    other = CliRunner().invoke(cli, ["data", "synth", "--scenarios", "20", "--bars", "300", "--seed", "1",
                                     "--out", str(tmp_path / "c")])
    assert other.exit_code == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["scenarios.parquet"] != _digest(tmp_path / "c")["scenarios.parquet"]
    out = first.output
    assert "20 scenarios x 300 bars (1h), seed 0" in out
    for family, n in (("mixed", 8), ("crash", 4), ("bear", 4), ("vol_cluster", 2), ("bull", 2)):
        assert any(line.split()[:2] == [family, str(n)] for line in out.splitlines()), family
    manifest = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert manifest["seed"] == 0 and manifest["families"]["mixed"] == 8
    batch = load_batch(str(tmp_path / "a"))
    assert batch.n_scenarios == 20 and batch.n_bars == 300


def test_synth_json_summary_and_mix(tmp_path):
    result = CliRunner().invoke(cli, ["data", "synth", "--scenarios", "6", "--bars", "200", "--out",
                                      str(tmp_path / "x"), "--mix", "flash_crash=1,bull=1", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[: result.output.rindex("]") + 1])
    assert {r["family"] for r in rows} == {"flash_crash", "bull"}
    assert all(r["count"] == 3 for r in rows)
    assert rows[0]["total_return_min"] <= rows[0]["total_return_mean"]


def test_synth_calibrated_from_a_file(tmp_path, btc_recent):
    src = tmp_path / "BTCUSDT-1h.csv.gz"
    write_frame(btc_recent.between("2023-01-01", "2023-04-01").frame, src)
    result = CliRunner().invoke(cli, ["data", "synth", "--scenarios", "5", "--bars", "200", "--out",
                                      str(tmp_path / "cal"), "--calibrate-from", str(src)])
    assert result.exit_code == 0, result.output
    assert "calibrated on BTCUSDT 1h" in result.output and "GARCH alpha" in result.output
    manifest = json.loads((tmp_path / "cal" / "synth.json").read_text())
    cal = manifest["config"]["calibration"]
    assert cal["n_returns"] > 2000 and manifest["config"]["garch"] == cal["garch"]


def test_synth_errors_are_one_line(tmp_path):
    bad_mix = CliRunner().invoke(cli, ["data", "synth", "--scenarios", "4", "--bars", "50", "--out",
                                       str(tmp_path / "x"), "--mix", "moon=1"])
    assert bad_mix.exit_code == 2 and "unknown scenario families" in bad_mix.output
    assert "Traceback" not in bad_mix.output
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"garch": {"alpha": 0.6, "beta": 0.5}}))
    bad_cfg = CliRunner().invoke(cli, ["data", "synth", "--scenarios", "4", "--bars", "50", "--out",
                                       str(tmp_path / "y"), "--config", str(cfg)])
    assert bad_cfg.exit_code == 2 and "must be < 1" in bad_cfg.output
    missing = CliRunner().invoke(cli, ["data", "synth", "--scenarios", "4", "--bars", "50", "--out",
                                       str(tmp_path / "z"), "--calibrate-from", str(tmp_path / "none.csv")])
    assert missing.exit_code == 2 and "file not found" in missing.output


def test_every_data_command_has_help():
    for command in (["data"], ["data", "synth"], ["data", "fetch"], ["data", "resample"], ["data", "store"],
                    ["data", "store", "add"], ["data", "store", "list"], ["data", "store", "query"],
                    ["data", "validate"], ["data", "info"], ["data", "repair"]):
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, command
