"""``himari data validate`` / ``repair`` / ``info`` through the CLI: every problem class, named by file and row."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.loaders import load_bars
from himari.errors import DataError

HEADER = "timestamp,open,high,low,close,volume"
R1 = "2021-01-01T00:00:00Z,1,2,0.5,1.5,10"
R2 = "2021-01-01T01:00:00Z,1.5,2,1,1.2,11"
R3 = "2021-01-01T02:00:00Z,1.2,1.3,1.1,1.25,12"


def _bad_row(cells: str, ts: str = "2021-01-01T01:00:00Z") -> str:
    return f"{HEADER}\n{R1}\n{ts},{cells}\n{R3}\n"


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


# (name, file text, expected message fragment) -- each problem is on data row 2 = line 3 of the file.
ROW_PROBLEMS = [
    ("unparsable_timestamp", f"{HEADER}\n{R1}\nnot-a-date,1.5,2,1,1.2,11\n{R3}\n", "unparsable timestamp 'not-a-date'"),
    ("non_utc_offset", f"{HEADER}\n{R1}\n2021-01-01T03:00:00+02:00,1.5,2,1,1.2,11\n{R3}\n",
     "timestamp '2021-01-01T03:00:00+02:00' is not UTC (offset +02:00)"),
    ("duplicate", f"{HEADER}\n{R1}\n{R1}\n{R3}\n", "duplicate timestamp 2021-01-01T00:00:00Z (same as line 2 (row 1))"),
    ("nan_empty_cell", _bad_row("1.5,2,1,,11"), "close is NaN/empty"),
    ("nan_literal", _bad_row("1.5,2,1,NaN,11"), "close is NaN/empty"),
    ("not_a_number", _bad_row("1.5,2,1,abc,11"), "close is not a number"),
    ("inf", _bad_row("1.5,inf,1,1.2,11"), "high is infinite (inf)"),
    ("zero_price", _bad_row("0,2,1,1.2,11"), "open = 0 is not positive"),
    ("negative_price", _bad_row("1.5,2,1,-1.2,11"), "close = -1.2 is not positive"),
    ("high_below_open_close", _bad_row("1.5,1.4,1,1.2,11"), "high 1.4 < max(open 1.5, close 1.2)"),
    ("low_above_open_close", _bad_row("1.5,2,1.3,1.2,11"), "low 1.3 > min(open 1.5, close 1.2)"),
    ("negative_volume", _bad_row("1.5,2,1,1.2,-1"), "volume -1 is negative"),
]


@pytest.mark.parametrize(("name", "text", "fragment"), ROW_PROBLEMS, ids=[p[0] for p in ROW_PROBLEMS])
def test_row_problems_are_named_with_line_and_row(tmp_path, name, text, fragment):
    path = tmp_path / f"{name}-1h.csv"
    path.write_text(text)
    result = _run("data", "validate", str(path))
    assert result.exit_code == 2, result.output
    assert f"{path}: line 3 (row 2): {fragment}" in result.output
    assert "INVALID" in result.output and "Traceback" not in result.output
    # The same validation runs inside every command that reads data: one line, exit 2.
    info = _run("data", "info", str(path))
    assert info.exit_code == 2 and "line 3 (row 2)" in info.output and "Traceback" not in info.output
    with pytest.raises(DataError, match=r"line 3 \(row 2\)"):
        load_bars(path)


def test_unsorted_names_the_row_that_goes_back(tmp_path):
    path = tmp_path / "unsorted-1h.csv"
    path.write_text(f"{HEADER}\n{R1}\n{R3}\n{R2}\n")
    result = _run("data", "validate", str(path))
    assert result.exit_code == 2
    assert ("line 4 (row 3): timestamp 2021-01-01T01:00:00Z is earlier than the previous row's "
            "2021-01-01T02:00:00Z") in result.output


def test_missing_and_extra_columns(tmp_path):
    missing = tmp_path / "missing-1h.csv"
    missing.write_text(f"timestamp,open,high,low,close\n{R1.rsplit(',', 1)[0]}\n")
    result = _run("data", "validate", str(missing))
    assert result.exit_code == 2 and f"{missing}: missing column(s) volume" in result.output
    extra = tmp_path / "extra-1h.csv"
    extra.write_text(f"{HEADER},trades\n{R1},5\n{R2},6\n{R3},7\n")
    result = _run("data", "validate", str(extra))
    assert result.exit_code == 0 and "extra column 'trades' ignored" in result.output and ": OK:" in result.output


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty-1h.csv"
    empty.write_bytes(b"")
    result = _run("data", "validate", str(empty))
    assert result.exit_code == 2 and f"{empty}: empty file" in result.output
    header = tmp_path / "header-1h.csv"
    header.write_text(HEADER + "\n")
    result = _run("data", "validate", str(header))
    assert result.exit_code == 2 and f"{header}: no data rows" in result.output


def _gzip_payload(n: int = 600) -> bytes:
    rows = "".join(f"{pd.Timestamp('2021-01-01', tz='UTC') + pd.Timedelta(hours=i):%Y-%m-%dT%H:%M:%SZ},1,2,0.5,1.5,10\n"
                   for i in range(n))
    return gzip.compress((HEADER + "\n" + rows).encode(), mtime=0)


def test_truncated_and_corrupt_gzip(tmp_path):
    payload = _gzip_payload()
    good = tmp_path / "good-1h.csv.gz"
    good.write_bytes(payload)
    assert _run("data", "validate", str(good)).exit_code == 0
    truncated = tmp_path / "truncated-1h.csv.gz"
    truncated.write_bytes(payload[: len(payload) // 2])
    result = _run("data", "validate", str(truncated))
    assert result.exit_code == 2 and f"{truncated}: truncated or corrupt gzip file" in result.output
    corrupt = bytearray(payload)
    corrupt[len(corrupt) // 2] ^= 0xFF
    corrupt[len(corrupt) // 2 + 1] ^= 0xFF
    bad = tmp_path / "corrupt-1h.csv.gz"
    bad.write_bytes(bytes(corrupt))
    result = _run("data", "validate", str(bad))
    assert result.exit_code == 2 and f"{bad}: truncated or corrupt gzip file" in result.output


def test_gaps_are_reported_with_exit_zero(tmp_path):
    path = tmp_path / "gappy-1h.csv"
    path.write_text(f"{HEADER}\n{R1}\n2021-01-01T03:00:00Z,1.2,1.3,1.1,1.25,12\n2021-01-01T04:00:00Z,1.2,1.3,1.1,1.25,12\n")
    result = _run("data", "validate", str(path))
    assert result.exit_code == 0, result.output
    assert "gaps: 1 events, 2 missing bars (not filled)" in result.output
    assert "2021-01-01T01:00Z (+2 bars) after line 2 (row 1)" in result.output
    bars = load_bars(path)
    assert bars.gap_before.tolist() == [False, True, False]


def test_several_problems_listed_and_counted(tmp_path):
    path = tmp_path / "many-1h.csv"
    rows = [R1] + [f"2021-01-01T{h:02d}:00:00Z,1,2,0.5,1.5,-1" for h in range(1, 15)]
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    result = _run("data", "validate", str(path), "--max-rows", "3")
    assert result.exit_code == 2
    assert "ERROR negative_volume (14 rows):" in result.output and "... and 11 more" in result.output
    with pytest.raises(DataError, match=r"line 3 \(row 2\): volume -1 is negative \(and 13 more problems"):
        load_bars(path)


def test_bundled_files_validate_with_documented_gaps():
    result = _run("data", "validate", "BTCUSDT", "ETHUSDT", "SOLUSDT", "--max-rows", "1")
    assert result.exit_code == 0, result.output
    gap_lines = [line for line in result.output.splitlines() if line.startswith("  gaps:")]
    assert [line.split()[1] for line in gap_lines] == ["28", "28", "10"]
    assert result.output.count(": OK:") == 3


def test_info_on_bundled_default():
    result = _run("data", "info")
    assert result.exit_code == 0, result.output
    assert "rows:            64524" in result.output and "gaps:            28 events" in result.output
    assert "2017-08-17T04:00Z -> 2024-12-31T23:00Z" in result.output


def test_repair_drop_duplicates_and_sort(tmp_path):
    path = tmp_path / "messy-1h.csv"
    path.write_text(f"{HEADER}\n{R3}\n{R1}\n{R2}\n{R1}\n")
    out = tmp_path / "clean-1h.parquet"
    only_dups = _run("data", "repair", str(path), "--drop-duplicates", "--out", str(out))
    assert only_dups.exit_code == 2 and "still not usable" in only_dups.output and not out.exists()
    result = _run("data", "repair", str(path), "--drop-duplicates", "--sort", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "repaired: sorted rows by timestamp" in result.output
    assert "dropped 1 rows with duplicate timestamps (kept the first)" in result.output
    bars = load_bars(out)
    assert len(bars) == 3 and bars.index.is_monotonic_increasing
    assert _run("data", "validate", str(out)).exit_code == 0
    usage = _run("data", "repair", str(path), "--out", str(out))
    assert usage.exit_code == 2 and "name at least one repair" in usage.output
    nan = tmp_path / "nan-1h.csv"
    nan.write_text(_bad_row("1.5,2,1,,11"))
    still = _run("data", "repair", str(nan), "--sort", "--out", str(tmp_path / "x.csv"))
    assert still.exit_code == 2 and "close is NaN/empty" in still.output


def test_missing_file_is_one_line(tmp_path):
    result = _run("data", "validate", str(tmp_path / "nope.csv"))
    assert result.exit_code == 2 and "file not found" in result.output
