"""Plausibility checks (one-bar moves, price range) and messages for timestamp columns in the wrong format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.loaders import load_bars, validate_file
from himari.data.validate import PlausibilityConfig, implausible_rows
from himari.errors import ConfigError, DataError

HEADER = "timestamp,open,high,low,close,volume\n"


def _csv(path: Path, closes: list[float], stamps: list[str] | None = None) -> Path:
    lines = [HEADER]
    for i, c in enumerate(closes):
        ts = stamps[i] if stamps else f"2024-01-01T{i:02d}:00:00Z"
        o = closes[i - 1] if i else c
        lines.append(f"{ts},{o},{max(o, c)},{min(o, c)},{c},1.0\n")
    path.write_text("".join(lines))
    return path


def test_implausible_rows_kernel() -> None:
    x = np.array([[100, 101, 99, 100, 1], [100, 100, 0.05, 0.1, 1], [0.1, 0.2, 0.1, 0.15, 1]], dtype=float)
    found = implausible_rows(x)
    assert [(i, c) for i, c, _ in found] == [(1, "high"), (1, "close")]
    assert "1000x" in found[1][2] or "0.001x" in found[1][2]
    assert implausible_rows(x, PlausibilityConfig(max_bar_move=5000.0)) == []
    assert implausible_rows(np.array([[1e-300, 1e-300, 1e-300, 1e-300, 1.0]]))[0][2].startswith("open = 1e-300")
    assert implausible_rows(x[:1], previous_close=1e4)[0][:2] == (0, "close")
    with pytest.raises(ConfigError, match="min_price"):
        PlausibilityConfig.parse({"min_price": 10.0, "max_price": 1.0})


@pytest.mark.parametrize(
    ("closes", "message"),
    [
        ([100.0] * 5 + [100_000.0] + [100.0] * 4, "line 7 (row 6): close 100000 is 1000x the previous close 100"),
        ([1e300] * 10, "above the plausible maximum"),
        ([1e-300] * 10, "below the plausible minimum"),
    ],
)
def test_files_with_implausible_prices_are_refused_naming_the_row(tmp_path: Path, closes, message) -> None:
    path = _csv(tmp_path / "X-1h.csv", closes)
    report, frame = validate_file(path)
    assert frame is None and not report.ok
    assert message in report.format()
    with pytest.raises(DataError, match=r"plausib|max_bar_move"):
        load_bars(path)
    # configurable: a bound wide enough accepts the spike
    if closes[0] == 100.0:
        assert len(load_bars(path, plausibility=PlausibilityConfig(max_bar_move=2000.0))) == 10
    result = CliRunner().invoke(cli, ["data", "validate", str(path)])
    assert result.exit_code == 2 and message in result.output
    wide = ["--max-bar-move", "1e5", "--min-price", "1e-310", "--max-price", "1e15"]
    assert CliRunner().invoke(cli, ["data", "validate", str(path), *wide]).exit_code == (2 if closes[0] == 1e300 else 0)


def test_excel_serial_and_day_month_dates_say_what_the_column_looks_like(tmp_path: Path) -> None:
    excel = _csv(tmp_path / "E-1h.csv", [100.0] * 5, [f"{45292 + i / 24:.6f}" for i in range(5)])
    report, _ = validate_file(excel)
    line = report.first_error_line()
    assert "Excel serial dates" in line and "45292.000000" in line and "ISO 8601" in line
    ddmm = _csv(tmp_path / "D-1h.csv", [100.0] * 5, [f"13/01/2024 {i:02d}:00" for i in range(5)])
    line = validate_file(ddmm)[0].first_error_line()
    assert "dd/mm/yyyy or mm/dd/yyyy" in line and "'13/01/2024 00:00'" in line and "unsorted" not in line
    with pytest.raises(DataError, match="Excel serial dates"):
        load_bars(excel)
