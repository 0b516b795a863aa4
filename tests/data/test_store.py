"""The local store (himari/data/store.py): layout, merge, metadata, DuckDB queries, CLI."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.data.store import DataStore, store_dir, write_frame
from himari.errors import ConfigError, DataError


@pytest.fixture
def two_months(btc_recent):
    return btc_recent.between("2022-01-01", "2022-03-01")


def test_store_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("HIMARI_DATA_DIR", raising=False)
    assert str(store_dir()) == "himari_store"
    monkeypatch.setenv("HIMARI_DATA_DIR", str(tmp_path))
    assert store_dir() == tmp_path
    assert store_dir(tmp_path / "x") == tmp_path / "x"


def test_add_merge_list_load(tmp_path, two_months):
    store = DataStore(tmp_path)
    jan = two_months.between("2022-01-01", "2022-02-01")
    overlap = two_months.between("2022-01-20", "2022-03-01")
    entry = store.add(jan, "binance", "BTC/USDT")
    assert entry.path == tmp_path / "binance" / "BTC_USDT-1h.parquet" and entry.rows == len(jan)
    merged = store.add(overlap, "binance", "BTC/USDT")
    assert merged.rows == len(two_months)
    loaded = store.load("binance", "btc/usdt", "1h")
    pd.testing.assert_frame_equal(loaded.frame, two_months.frame, check_freq=False)
    assert loaded.symbol == "BTC/USDT"
    store.add(jan, "binance", "BTC/USDT", replace=True)
    assert store.entries()[0].rows == len(jan)
    store.add(jan, "kraken", "ETH/USD")
    names = [(e.exchange, e.symbol, e.timeframe) for e in store.entries()]
    assert names == [("binance", "BTC/USDT", "1h"), ("kraken", "ETH/USD", "1h")]


def test_query_with_duckdb(tmp_path, two_months):
    store = DataStore(tmp_path)
    assert store.query("SELECT count(*) AS n FROM bars")["n"].iloc[0] == 0
    store.add(two_months, "binance", "BTC/USDT")
    out = store.query(
        "SELECT symbol, date_trunc('month', timestamp) AS month, count(*) AS n, max(high) AS hi "
        "FROM bars GROUP BY ALL ORDER BY month"
    )
    assert list(out["n"]) == [
        len(two_months.between("2022-01-01", "2022-02-01")),
        len(two_months.between("2022-02-01", "2022-03-01")),
    ]
    assert out["hi"].iloc[0] == pytest.approx(two_months.between("2022-01-01", "2022-02-01").high.max())
    with pytest.raises(DataError, match="query failed"):
        store.query("SELECT nope FROM bars")


def test_rejects_bad_names_and_conflicting_timeframes(tmp_path, two_months):
    store = DataStore(tmp_path)
    with pytest.raises(ConfigError, match="invalid exchange"):
        store.path_for("../evil", "BTC/USDT", "1h")
    with pytest.raises(ConfigError, match="invalid symbol"):
        store.path_for("binance", "BTC USDT", "1h")
    with pytest.raises(DataError, match="no stored data"):
        store.load("binance", "BTC/USDT", "1h")


def test_file_written_by_fetch_is_listed_from_its_path(tmp_path, two_months):
    store = DataStore(tmp_path)
    write_frame(two_months.frame, store.path_for("binance", "SOL/USDT", "1h"))
    [entry] = store.entries()
    assert (entry.exchange, entry.symbol, entry.timeframe, entry.rows) == ("binance", "SOL/USDT", "1h",
                                                                          len(two_months))


def test_cli_store_add_list_query(tmp_path, two_months):
    src = tmp_path / "BTCUSDT-1h.csv.gz"
    write_frame(two_months.frame, src)
    runner = CliRunner()
    root = str(tmp_path / "store")
    added = runner.invoke(cli, ["data", "store", "--data-dir", root, "add", str(src), "--exchange", "binance",
                                "--symbol", "BTC/USDT"])
    assert added.exit_code == 0, added.output
    assert f"{len(two_months)} bars (+{len(two_months)})" in added.output
    again = runner.invoke(cli, ["data", "store", "--data-dir", root, "add", str(src), "--exchange", "binance",
                                "--symbol", "BTC/USDT"])
    assert "(+0)" in again.output
    listed = runner.invoke(cli, ["data", "store", "--data-dir", root, "list"])
    assert "binance" in listed.output and "BTC/USDT" in listed.output and "2022-01-01T00:00Z" in listed.output
    query = runner.invoke(cli, ["data", "store", "--data-dir", root, "query", "--csv",
                                "SELECT count(*) AS n FROM bars WHERE symbol = 'BTC/USDT'"])
    assert query.exit_code == 0 and query.output.strip().splitlines() == ["n", str(len(two_months))]
    bad = runner.invoke(cli, ["data", "store", "--data-dir", root, "query", "SELEC 1"])
    assert bad.exit_code == 2 and "query failed" in bad.output and "Traceback" not in bad.output
    empty = runner.invoke(cli, ["data", "store", "--data-dir", str(tmp_path / "none"), "list"])
    assert "is empty" in empty.output
