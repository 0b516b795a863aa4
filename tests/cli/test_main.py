"""The CLI's start and usage errors: no heavy import at start, dates checked while parsing (exit 2, naming the
option, nothing created), half-made run directories removed, -v/-q, progress as log lines off a terminal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from himari.cli.main import _remove_half_made, cli
from himari.utils.progress import LogProgress, progress_bar

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "pandas", "numba", "torch", "scipy", "matplotlib", "pydantic", "gymnasium", "plotly")


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, check=False)


def test_start_imports_no_heavy_module() -> None:
    """`himari --help` and a completion TAB load only click and the command modules (timed by `himari bench cli`)."""
    res = _python("import sys\nfrom himari.cli.main import cli\n"
                  "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
                  f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"
    import himari

    assert callable(himari.load_run) and callable(himari.features_frame)  # the lazy API still resolves


def test_shell_completion_lists_commands() -> None:
    res = subprocess.run([sys.executable, "-m", "himari"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "_HIMARI_COMPLETE": "bash_complete",
                              "COMP_WORDS": "himari r", "COMP_CWORD": "1"}, check=False)
    assert res.returncode == 0, res.stderr
    assert "plain,regime" in res.stdout.split() and "plain,risk" in res.stdout.split()


@pytest.mark.parametrize(("args", "option"), [
    (["wfo", "--test-start", "yesterday"], "'--test-start'"),
    (["backtest", "--run", "x", "--start", "2023-13-01"], "'--start'"),
    (["regime", "fit", "--train-start", "2023-01-01", "--train-end", "2023-02-30"], "'--train-end'"),
    (["train", "--val-end", "soon"], "'--val-end'"),
])
def test_bad_dates_are_usage_errors_naming_the_option(tmp_path: Path, args: list[str], option: str) -> None:
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"Invalid value for {option}" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_bad_option_value_is_a_usage_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["regime", "fit", "--train-start", "2023-01-01", "--train-end", "2023-02-01",
                                   "--method", "magic", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "Invalid value for '--method'" in res.output
    assert not (tmp_path / "r").exists()


def test_failed_run_leaves_no_half_made_directory(tmp_path: Path) -> None:
    out = tmp_path / "wfo"
    res = CliRunner().invoke(cli, ["-q", "wfo", "--test-start", "2030-01-01", "--test-end", "2030-03-01",
                                   "--out", str(out)])
    assert res.exit_code == 2 and "error:" in res.output
    assert not out.exists()  # run.json and wfo_config.json had been written, then removed


def test_half_made_cleanup_keeps_results_and_existing_dirs(tmp_path: Path) -> None:
    scaffold, results, progress = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root in (scaffold, results, progress):
        root.mkdir()
        (root / "run.json").write_text("{}")
    (scaffold / "windows.json").write_text("[]")
    (results / "checkpoints").mkdir()
    (progress / "windows.json").write_text(json.dumps([{"window": 0}]))
    _remove_half_made([scaffold, results, progress, tmp_path / "never-made"])
    assert not scaffold.exists() and results.exists() and progress.exists()


def test_verbose_and_quiet_set_the_log_level() -> None:
    runner = CliRunner()
    for flags, level in ((["-q"], logging.WARNING), ([], logging.INFO), (["-v"], logging.DEBUG)):
        assert runner.invoke(cli, [*flags, "data", "info", "--help"]).exit_code == 0
        runner.invoke(cli, [*flags, "data", "info", "/nonexistent.csv"])
        assert logging.getLogger("himari").level == level


def test_progress_is_logged_when_not_a_terminal(caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIMARI_NO_PROGRESS", raising=False)
    caplog.set_level(logging.INFO, logger="himari.progress")
    with progress_bar("windows", total=4) as bar:  # pytest's stderr is not a terminal
        assert isinstance(bar, LogProgress)
        bar.interval_s = 0.0  # every advance logs
        for _ in range(4):
            bar.advance(1, info="sharpe 0.1")
    lines = [r.getMessage() for r in caplog.records if r.name == "himari.progress"]
    assert lines[0] == "windows: started (4 to do)"
    assert lines[1].startswith("windows: 1/4 (25%)") and "sharpe 0.1" in lines[1]
    assert lines[-1].startswith("windows: 4/4 (100%)") and lines[-1].endswith("(done)")
    caplog.clear()
    monkeypatch.setenv("HIMARI_NO_PROGRESS", "1")
    with progress_bar("quiet", total=2) as bar:
        bar.advance(2)
    assert not [r for r in caplog.records if r.name == "himari.progress"]


def test_bench_cli_reports_start_up_figures() -> None:
    res = CliRunner().invoke(cli, ["bench", "cli", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout)
    assert figures["heavy_modules_at_start"] == []
    for key in ("python_startup_s", "help_s", "group_help_s", "completion_tab_s", "version_s"):
        assert figures[key] > 0
