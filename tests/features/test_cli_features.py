"""CLI: features build (table keyed by timestamp), features denoise, bench features (tiny)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.bars import Bars
from himari.data.store import write_frame
from himari.features.technical import FEATURE_NAMES


def test_features_build(btc_bars: Bars, tmp_path) -> None:
    src = tmp_path / "slice.parquet"
    write_frame(btc_bars.between("2021-03-01", "2021-05-01").frame, src)  # holds real gaps
    out = tmp_path / "features.parquet"
    res = CliRunner().invoke(cli, ["features", "build", "--data", str(src), "--out", str(out), "--start", "2021-03-10"])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(out)
    assert list(frame.columns[:44]) == list(FEATURE_NAMES)
    assert frame.index.name == "timestamp" and frame.index.min() >= pd.Timestamp("2021-03-10", tz="UTC")
    assert frame["valid"].dtype == bool and frame["valid"].mean() > 0.7
    assert np.isfinite(frame.loc[frame["valid"], list(FEATURE_NAMES)].to_numpy()).all()


def test_features_build_bad_input(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2020-01-01T00:00Z,1,2,0.5,-1,3\n")
    res = CliRunner().invoke(cli, ["features", "build", "--data", str(bad), "--out", str(tmp_path / "o.parquet")])
    assert res.exit_code == 2 and "error:" in res.output


def test_denoise_report(btc_bars: Bars, tmp_path) -> None:
    src = tmp_path / "slice.csv"
    write_frame(btc_bars.between("2022-09-01", "2022-12-01").frame, src)
    res = CliRunner().invoke(cli, ["features", "denoise", "--data", str(src), "--train-start", "2022-09-01",
                                   "--train-end", "2022-11-01"])
    assert res.exit_code == 0, res.output
    assert "local level MLE" in res.output and "Ljung-Box" in res.output and "noise reduction" in res.output


def test_bench_features_json() -> None:
    res = CliRunner().invoke(cli, ["bench", "features", "--bars", "3000", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert payload["bars"] == 3000 and payload["features44_bars_per_s"] > 0


def test_bench_features_latency_json() -> None:
    res = CliRunner().invoke(cli, ["bench", "features", "--latency", "--history", "1000", "--new-bars", "20", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert payload["history_bars"] == 1000 and payload["new_bars"] == 20
    assert 0 < payload["stream_p50_ms"] <= payload["stream_p99_ms"] <= payload["stream_max_ms"]
    assert payload["recompute_p50_ms"] > 0
