"""Writing canonical OHLCV frames, and the local data store.

``write_frame`` writes a canonical frame (UTC ``timestamp`` index, OHLCV columns) as Parquet or CSV(.gz) atomically.
:class:`DataStore` keeps downloaded and derived series as Parquet files under a data directory (``./himari_store``
or ``$HIMARI_DATA_DIR``), one file per exchange/symbol/timeframe, queryable with DuckDB SQL.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from himari.data.bars import Bars
from himari.data.timeframe import Timeframe
from himari.data.validate import validate_frame
from himari.errors import ConfigError, DataError
from himari.utils.io import atomic_write_bytes


def frame_to_csv_text(frame: pd.DataFrame) -> str:
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index.name = "timestamp"
    return out.to_csv(float_format=None, lineterminator="\n")


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a canonical OHLCV frame to ``.parquet``, ``.csv`` or ``.csv.gz`` atomically."""
    target = Path(path)
    name = target.name.lower()
    if name.endswith((".parquet", ".pq")):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=True)
        return atomic_write_bytes(target, buffer.getvalue())
    text = frame_to_csv_text(frame)
    if name.endswith(".gz"):
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
            handle.write(text.encode())
        return atomic_write_bytes(target, buffer.getvalue())
    return atomic_write_bytes(target, text.encode())


# -- the local data store -------------------------------------------------------------------------------------------

DEFAULT_STORE_DIR = "himari_store"
STORE_ENV = "HIMARI_DATA_DIR"
_META_KEY = b"himari.store"


def store_dir(override: str | Path | None = None) -> Path:
    """The store root: ``override``, else ``$HIMARI_DATA_DIR``, else ``./himari_store``."""
    if override is not None:
        return Path(override)
    env = os.environ.get(STORE_ENV)
    return Path(env) if env else Path(DEFAULT_STORE_DIR)


def _safe(text: str, what: str) -> str:
    cleaned = text.strip().replace("/", "_").replace(":", "_")
    if not cleaned or not re.fullmatch(r"[A-Za-z0-9._-]+", cleaned) or cleaned.startswith("."):
        raise ConfigError(f"invalid {what} {text!r} for the store (letters, digits, '/', '.', '_', '-' only)")
    return cleaned


@dataclass(frozen=True)
class StoreEntry:
    """One stored series: ``ROOT/<exchange>/<SYMBOL>-<timeframe>.parquet`` (``/`` in the symbol becomes ``_``)."""

    exchange: str
    symbol: str
    timeframe: str
    path: Path
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None


class DataStore:
    """Parquet files, one per exchange/symbol/timeframe, with a DuckDB view over all of them.

    Each file is a canonical OHLCV frame; its Parquet metadata (key ``himari.store``) records exchange, symbol and
    timeframe, so names survive the ``/`` -> ``_`` file naming. Writes are validated and atomic.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = store_dir(root)

    def path_for(self, exchange: str, symbol: str, timeframe: str | Timeframe) -> Path:
        tf = Timeframe.parse(timeframe)
        return self.root / _safe(exchange.lower(), "exchange") / f"{_safe(symbol.upper(), 'symbol')}-{tf}.parquet"

    def add(self, bars: Bars, exchange: str, symbol: str | None = None, replace: bool = False) -> StoreEntry:
        """Store ``bars`` (merged with what is stored unless ``replace``: stored bars win on equal timestamps)."""
        sym = (symbol or bars.symbol).upper()
        path = self.path_for(exchange, sym, bars.timeframe)
        frame = bars.frame
        if path.exists() and not replace:
            old = self.load(exchange, sym, bars.timeframe).frame
            both = pd.concat([old, frame])
            frame = both[~both.index.duplicated(keep="first")].sort_index(kind="stable")
        report = validate_frame(frame, bars.timeframe, str(path))
        if not report.ok:
            raise DataError(f"not stored: {report.first_error_line()}", str(path))
        table = pa.Table.from_pandas(frame, preserve_index=True)
        meta = dict(table.schema.metadata or {})
        meta[_META_KEY] = json.dumps({"exchange": exchange.lower(), "symbol": sym, "timeframe": str(bars.timeframe)},
                                     sort_keys=True).encode()
        buffer = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), buffer, compression="zstd")
        atomic_write_bytes(path, buffer.getvalue())
        return self._entry(path)

    def _entry(self, path: Path) -> StoreEntry:
        pf = pq.ParquetFile(path)
        raw = (pf.schema_arrow.metadata or {}).get(_META_KEY)
        if raw is not None:
            meta = json.loads(raw)
        else:  # written by another tool (e.g. 'himari data fetch --out' into the store): names from the path
            stem, _, tf_text = path.name[: -len(".parquet")].rpartition("-")
            if not stem:
                raise DataError("store file name must be <SYMBOL>-<timeframe>.parquet", str(path))
            meta = {"exchange": path.parent.name, "symbol": stem.replace("_", "/"), "timeframe": tf_text}
        ts = pq.read_table(path, columns=["timestamp"]).column("timestamp")
        first = pd.Timestamp(pa.compute.min(ts).as_py()) if len(ts) else None
        last = pd.Timestamp(pa.compute.max(ts).as_py()) if len(ts) else None
        return StoreEntry(meta["exchange"], meta["symbol"], meta["timeframe"], path, pf.metadata.num_rows, first, last)

    def entries(self) -> list[StoreEntry]:
        """Every stored series, sorted by exchange, symbol, timeframe."""
        if not self.root.exists():
            return []
        found = [self._entry(p) for p in sorted(self.root.glob("*/*.parquet"))]
        return sorted(found, key=lambda e: (e.exchange, e.symbol, Timeframe.parse(e.timeframe).seconds))

    def load(self, exchange: str, symbol: str, timeframe: str | Timeframe) -> Bars:
        """The stored series as validated :class:`Bars`."""
        from himari.data.loaders import load_bars

        path = self.path_for(exchange, symbol, timeframe)
        if not path.exists():
            raise DataError(f"no stored data for {exchange} {symbol} {Timeframe.parse(timeframe)}", str(path))
        return load_bars(path, symbol=symbol.upper(), timeframe=timeframe)

    def query(self, sql: str) -> pd.DataFrame:
        """Run DuckDB SQL over the view ``bars(exchange, symbol, timeframe, timestamp, open, high, low, close,
        volume)``, the union of all stored files. Returns a DataFrame."""
        import duckdb

        entries = self.entries()
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET TimeZone = 'UTC'")
            if entries:
                parts = [
                    f"SELECT {_sql_str(e.exchange)} AS exchange, {_sql_str(e.symbol)} AS symbol, "
                    f"{_sql_str(e.timeframe)} AS timeframe, CAST(timestamp AS TIMESTAMPTZ) AS timestamp, open, high, low, close, volume "
                    f"FROM read_parquet({_sql_str(str(e.path))})"
                    for e in entries
                ]
                con.execute("CREATE VIEW bars AS " + " UNION ALL ".join(parts))
            else:
                con.execute(
                    "CREATE VIEW bars AS SELECT NULL::VARCHAR AS exchange, NULL::VARCHAR AS symbol, "
                    "NULL::VARCHAR AS timeframe, NULL::TIMESTAMPTZ AS timestamp, NULL::DOUBLE AS open, "
                    "NULL::DOUBLE AS high, NULL::DOUBLE AS low, NULL::DOUBLE AS close, NULL::DOUBLE AS volume "
                    "WHERE false"
                )
            try:
                relation = con.sql(sql)
                return pd.DataFrame() if relation is None else relation.to_arrow_table().to_pandas()
            except duckdb.Error as exc:
                raise DataError(f"query failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        finally:
            con.close()


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
