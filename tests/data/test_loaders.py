"""Loaders (himari/data/loaders.py): the common file layouts map to the same canonical bars."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.loaders import infer_symbol, load_bars, read_raw, validate_file
from himari.data.store import write_frame


@pytest.fixture(scope="module")
def reference(btc_bars):
    return btc_bars.head(72)


def _ms(frame: pd.DataFrame) -> list[int]:
    return (frame.index.asi8 // 1_000_000).tolist()


def _assert_same(bars, reference) -> None:
    assert str(bars.timeframe) == "1h"
    pd.testing.assert_frame_equal(bars.frame, reference.frame, check_freq=False)


def test_freqtrade_feather(tmp_path, reference):
    path = tmp_path / "BTC_USDT-1h.feather"
    reference.frame.reset_index().rename(columns={"timestamp": "date"}).to_feather(path)
    bars = load_bars(path)
    assert bars.symbol == "BTC/USDT" and read_raw(path).layout == "feather"
    _assert_same(bars, reference)


def test_freqtrade_json_arrays(tmp_path, reference):
    path = tmp_path / "BTC_USDT-1h.json"
    rows = [[m, *r] for m, r in zip(_ms(reference.frame), reference.frame.to_numpy().tolist(), strict=True)]
    path.write_text(json.dumps(rows))
    bars = load_bars(path)
    assert bars.symbol == "BTC/USDT"
    _assert_same(bars, reference)


def test_json_records_with_named_fields(tmp_path, reference):
    path = tmp_path / "x-1h.json"
    records = [{"date": m, "open": r[0], "high": r[1], "low": r[2], "close": r[3], "volume": r[4]}
               for m, r in zip(_ms(reference.frame), reference.frame.to_numpy().tolist(), strict=True)]
    path.write_text(json.dumps(records))
    _assert_same(load_bars(path), reference)


@pytest.mark.parametrize("unit", [1, 1000], ids=["milliseconds", "microseconds_2025_format"])
def test_binance_kline_csv_headerless_12_columns(tmp_path, reference, unit):
    path = tmp_path / "BTCUSDT-1h-2017-08.csv"
    rows = [[m * unit, *r, (m + 3_599_999) * unit, 1.0, 10, 0.5, 0.5, 0]
            for m, r in zip(_ms(reference.frame), reference.frame.to_numpy().tolist(), strict=True)]
    pd.DataFrame(rows).to_csv(path, header=False, index=False)
    raw = read_raw(path)
    assert raw.layout == "binance_klines" and raw.extra_columns == []
    bars = load_bars(path)
    assert bars.symbol == "BTCUSDT"
    _assert_same(bars, reference)


def test_ccxt_arrays_csv_headerless_6_columns(tmp_path, reference):
    path = tmp_path / "ccxt-1h.csv"
    rows = [[m, *r] for m, r in zip(_ms(reference.frame), reference.frame.to_numpy().tolist(), strict=True)]
    pd.DataFrame(rows).to_csv(path, header=False, index=False)
    assert read_raw(path).layout == "ccxt"
    _assert_same(load_bars(path), reference)


def test_headerless_csv_with_wrong_width_is_rejected(tmp_path):
    path = tmp_path / "odd-1h.csv"
    path.write_text("1609459200000,1,2,0.5,1.5,10,3,4\n")
    result = CliRunner().invoke(cli, ["data", "validate", str(path)])
    assert result.exit_code == 2 and "headerless CSV with 8 columns" in result.output


def test_parquet_index_and_column_layouts(tmp_path, reference):
    indexed = tmp_path / "a-1h.parquet"
    write_frame(reference.frame, indexed)
    _assert_same(load_bars(indexed), reference)
    column = tmp_path / "b-1h.parquet"
    frame = reference.frame.reset_index()
    frame["timestamp"] = frame["timestamp"].astype("int64") // 1_000_000
    frame.rename(columns={"timestamp": "open_time"}).to_parquet(column)
    _assert_same(load_bars(column), reference)


def test_parquet_time_zones(tmp_path, reference):
    berlin = reference.frame.copy()
    berlin.index = berlin.index.tz_convert("Europe/Berlin")
    path = tmp_path / "berlin-1h.parquet"
    berlin.to_parquet(path)
    report, frame = validate_file(path)
    assert report.ok and any(i.code == "converted_to_utc" for i in report.issues)
    pd.testing.assert_frame_equal(frame, reference.frame, check_freq=False)
    naive = reference.frame.copy()
    naive.index = naive.index.tz_localize(None)
    path = tmp_path / "naive-1h.parquet"
    naive.to_parquet(path)
    report, _ = validate_file(path)
    assert report.ok and any(i.code == "naive_timestamps" for i in report.issues)


def test_csv_gz_roundtrip_and_aliases(tmp_path, reference):
    path = tmp_path / "BTCUSDT-1h.csv.gz"
    write_frame(reference.frame, path)
    _assert_same(load_bars(path), reference)
    alias = tmp_path / "alias-1h.csv"
    frame = reference.frame.reset_index()
    frame.columns = ["Date", "O", "H", "L", "C", "Vol"]
    frame["Date"] = frame["Date"].dt.strftime("%Y-%m-%d %H:%M:%S")
    frame.to_csv(alias, index=False)
    bars = load_bars(alias)
    assert np.array_equal(bars.close, reference.close)


def test_symbol_inference():
    assert infer_symbol("BTCUSDT-1h.csv.gz") == "BTCUSDT"
    assert infer_symbol("/x/BTC_USDT-1h.feather") == "BTC/USDT"


def test_timeframe_inferred_from_data_when_name_has_none(tmp_path, reference):
    daily = reference.frame.iloc[20::24]  # 00:00 UTC rows (the data starts at 04:00)
    path = tmp_path / "daily.csv"
    write_frame(daily, path)
    assert str(load_bars(path).timeframe) == "1d"
