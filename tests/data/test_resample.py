"""Resampling (himari/data/resample.py): UTC buckets, aggregation, incomplete-bucket policy, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.bars import Bars
from himari.data.loaders import load_bars
from himari.data.resample import bucket_starts, resample_bars
from himari.data.store import write_frame
from himari.data.timeframe import Timeframe
from himari.errors import ConfigError


def _hourly(start: str, n: int, drop: tuple[int, ...] = ()) -> Bars:
    rng = np.random.default_rng(1)
    ts = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.uniform(1, 10, n)
    keep = np.setdiff1d(np.arange(n), drop)
    return Bars.from_arrays(ts[keep], open_[keep], high[keep], low[keep], close[keep], volume[keep], "TEST", "1h")


def test_matches_pandas_resample_on_complete_data():
    bars = _hourly("2024-01-01", 24 * 10)
    out = resample_bars(bars, "4h")
    ref = bars.frame.resample("4h", origin="epoch").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    pd.testing.assert_frame_equal(out.bars.frame, ref, check_freq=False)
    assert out.complete.all() and not out.incomplete and str(out.bars.timeframe) == "4h"
    daily = resample_bars(bars, "1d").bars
    assert len(daily) == 10 and (daily.index.hour == 0).all()
    assert daily.volume.sum() == pytest.approx(bars.volume.sum())


def test_buckets_are_utc_aligned_not_data_aligned():
    bars = _hourly("2024-01-01T03:00", 24)  # starts mid-bucket
    out = resample_bars(bars, "4h")
    assert (out.bars.index.hour % 4 == 0).all()
    assert [b.start.hour for b in out.incomplete] == [0, 0]  # 03:00 alone, and 00:00-02:00 of the next day
    assert out.incomplete[0].bars_present == 1 and out.incomplete[1].bars_present == 3
    keep = resample_bars(bars, "4h", incomplete="keep")
    assert len(keep.bars) == len(out.bars) + 2 and keep.complete.sum() == len(out.bars)
    assert keep.bars.open[0] == bars.open[0] and keep.dropped == 0


def test_gap_inside_bucket_is_reported_and_dropped():
    bars = _hourly("2024-01-01", 48, drop=(5, 6))
    out = resample_bars(bars, "4h")
    assert len(out.bars) == 11 and out.dropped == 1
    gap = out.incomplete[0]
    assert gap.start == pd.Timestamp("2024-01-01T04:00", tz="UTC") and (gap.bars_present, gap.bars_expected) == (2, 4)
    assert "2024-01-01T04:00Z: 2/4 source bars" in out.report()
    assert out.bars.gap_before.sum() == 1  # the dropped bucket leaves an honest gap, never a filled bar


def test_weekly_buckets_open_monday():
    starts = bucket_starts(np.array([pd.Timestamp("2024-01-10T12:00", tz="UTC").value]), Timeframe.parse("1w"))
    assert pd.Timestamp(int(starts[0]), tz="UTC") == pd.Timestamp("2024-01-08", tz="UTC")


def test_rejects_non_multiple_targets():
    bars = _hourly("2024-01-01", 10)
    with pytest.raises(ConfigError, match="whole multiple"):
        resample_bars(bars, "90m")
    with pytest.raises(ConfigError, match="whole multiple"):
        resample_bars(resample_bars(bars, "4h", incomplete="keep").bars, "1h")


def test_resampled_bundled_btc_validates(btc_recent):
    out = resample_bars(btc_recent, "1d")
    assert np.all(out.bars.high >= np.maximum(out.bars.open, out.bars.close))
    assert len(out.bars) + len(out.incomplete) == btc_recent.index.normalize().nunique()


def test_cli_resample(tmp_path):
    src = tmp_path / "TEST-1h.csv"
    write_frame(_hourly("2024-01-01T02:00", 30, drop=(10,)).frame, src)
    out = tmp_path / "TEST-4h.parquet"
    result = CliRunner().invoke(cli, ["data", "resample", str(src), "--to", "4h", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 incomplete buckets (dropped)" in result.output and "2024-01-01T12:00Z: 3/4" in result.output
    bars = load_bars(out)
    assert str(bars.timeframe) == "4h" and len(bars) == 6
    bad = CliRunner().invoke(cli, ["data", "resample", str(src), "--to", "90m", "--out", str(out)])
    assert bad.exit_code == 2 and "whole multiple" in bad.output


def test_truncation_invariance_of_complete_buckets():
    bars = _hourly("2024-01-01", 24 * 5, drop=(30,))
    full = resample_bars(bars, "4h").bars.frame
    for k in (1, 7, 29, 31, 50, 97, 119):
        prefix = resample_bars(bars.head(k), "4h").bars.frame
        pd.testing.assert_frame_equal(prefix, full.iloc[: len(prefix)], check_freq=False)
        # Every complete bucket of the prefix ends at or before its last bar: nothing is extrapolated.
        if len(prefix):
            assert prefix.index[-1] + pd.Timedelta(hours=4) <= bars.index[k - 1] + pd.Timedelta(hours=1)
