"""Loading OHLCV files into :class:`~himari.data.bars.Bars`, with validation on every load.

Formats: CSV (optionally gzipped), Parquet, Feather (freqtrade ``*.feather``), JSON (freqtrade ``[[ms, o, h, l, c, v],
...]``), headerless Binance kline CSV (12 columns) and ccxt OHLCV arrays (6 columns). Common column names are mapped
(``date``/``open_time``/``time`` -> ``timestamp``; ``o``/``h``/``l``/``c``/``v`` and so on).

:func:`load_bars` raises :class:`~himari.errors.DataError` naming file, row and problem when the data is unusable.
Repairs (dropping duplicate timestamps, sorting) happen only when asked for and are reported in ``Bars.repairs``.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from himari.data.bars import OHLCV_COLUMNS, Bars
from himari.data.timeframe import Timeframe
from himari.data.validate import (
    DEFAULT_PLAUSIBILITY,
    PlausibilityConfig,
    ValidationReport,
    check_timestamps,
    check_values,
)
from himari.errors import DataError

COLUMN_ALIASES: dict[str, str] = {
    "timestamp": "timestamp",
    "date": "timestamp",
    "datetime": "timestamp",
    "time": "timestamp",
    "open_time": "timestamp",
    "opentime": "timestamp",
    "open time": "timestamp",
    "ts": "timestamp",
    "open": "open",
    "o": "open",
    "high": "high",
    "h": "high",
    "low": "low",
    "l": "low",
    "close": "close",
    "c": "close",
    "volume": "volume",
    "vol": "volume",
    "v": "volume",
    "base_volume": "volume",
    "volume_base": "volume",
}
BINANCE_KLINE_COLUMNS = (
    "timestamp", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
    "taker_buy_base", "taker_buy_quote", "ignore",
)
CCXT_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Repair:
    """Explicit, reported repairs. Nothing is repaired unless asked for."""

    drop_duplicates: bool = False
    sort: bool = False


@dataclass
class RawTable:
    frame: pd.DataFrame  # raw cells, canonical column names where mapped
    path: str
    row_offset: int  # line = row + row_offset
    extra_columns: list[str]
    missing_columns: list[str]
    layout: str


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _read_text(path: Path) -> str:
    try:
        if _is_gzip(path):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return handle.read()
        return path.read_text(encoding="utf-8")
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DataError(f"truncated or corrupt gzip file ({exc})", str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not a text file (byte {exc.start} is not UTF-8)", str(path)) from None


def _map_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    rename: dict[str, str] = {}
    extra: list[str] = []
    for col in frame.columns:
        key = str(col).strip().lower()
        target = COLUMN_ALIASES.get(key)
        if target is not None and target not in rename.values():
            rename[col] = target
        else:
            extra.append(str(col))
    mapped = frame.rename(columns=rename)
    missing = [c for c in ("timestamp", *OHLCV_COLUMNS) if c not in mapped.columns]
    return mapped, extra, missing


def _looks_numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"\s*-?\d+(\.\d*)?([eE][-+]?\d+)?\s*", cell))


def read_raw(path: str | Path) -> RawTable:
    """Read a file's cells without interpreting values (interpretation and checks are in :func:`validate_raw`)."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", str(p))
    if p.is_dir():
        raise DataError("is a directory, expected an OHLCV file", str(p))
    if p.stat().st_size == 0:
        raise DataError("empty file", str(p))
    name = p.name.lower()
    layout = "csv"
    row_offset = 1
    if name.endswith((".parquet", ".pq")):
        try:
            frame = pd.read_parquet(p)
        except Exception as exc:
            raise DataError(f"cannot read Parquet ({type(exc).__name__}: {exc})", str(p)) from None
        layout, row_offset = "parquet", 0
        if isinstance(frame.index, pd.DatetimeIndex):
            frame = frame.reset_index()
    elif name.endswith(".feather"):
        try:
            frame = pd.read_feather(p)
        except Exception as exc:
            raise DataError(f"cannot read Feather ({type(exc).__name__}: {exc})", str(p)) from None
        layout, row_offset = "feather", 0
    elif name.endswith((".json", ".json.gz")):
        text = _read_text(p)
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON at line {exc.lineno}: {exc.msg}", str(p)) from None
        if isinstance(payload, list) and payload and isinstance(payload[0], list):
            width = len(payload[0])
            names = list(CCXT_COLUMNS) + [f"extra_{i}" for i in range(width - 6)] if width >= 6 else None
            if names is None:
                raise DataError(f"JSON arrays have {width} fields, expected [time, open, high, low, close, volume]", str(p))
            frame = pd.DataFrame(payload, columns=names[:width])
        elif isinstance(payload, list):
            frame = pd.DataFrame(payload)
        else:
            raise DataError("JSON must be a list of bars", str(p))
        layout, row_offset = "json", 0
    else:
        text = _read_text(p)
        if not text.strip():
            raise DataError("empty file", str(p))
        first_line = text.lstrip().splitlines()[0]
        first_cells = [c.strip() for c in first_line.split(",")]
        from io import StringIO

        if first_cells and _looks_numeric(first_cells[0]):
            names = BINANCE_KLINE_COLUMNS if len(first_cells) == 12 else CCXT_COLUMNS
            if len(first_cells) not in (6, 12):
                raise DataError(
                    f"headerless CSV with {len(first_cells)} columns: expected 6 (ccxt) or 12 (Binance klines)", str(p)
                )
            layout = "binance_klines" if len(first_cells) == 12 else "ccxt"
            row_offset = 0
            frame = pd.read_csv(StringIO(text), header=None, names=list(names), dtype=str, keep_default_na=False)
        else:
            try:
                frame = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
            except pd.errors.ParserError as exc:
                raise DataError(f"malformed CSV: {exc}", str(p)) from None
    frame, extra, missing = _map_columns(frame)
    if layout in ("binance_klines",):
        extra = []
    return RawTable(frame=frame, path=str(p), row_offset=row_offset, extra_columns=extra, missing_columns=missing, layout=layout)


_OFFSET_RE = re.compile(r"(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)
_UTC_OFFSETS = {"z", "+00:00", "+0000", "-00:00", "-0000"}
_DAY_MONTH_RE = re.compile(r"^\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b")
EXCEL_SERIAL_RANGE = (20_000.0, 80_000.0)  # Excel serial days 1954..2119 (1970-01-01 + under a day as epoch seconds)


def _parse_timestamps(col: pd.Series, report: ValidationReport) -> np.ndarray:
    """int64 ns UTC timestamps; rows that fail are reported and returned as the int64 minimum."""
    nat = np.iinfo(np.int64).min
    n = len(col)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        if str(col.dtype.tz) not in ("UTC", "utc", "Etc/UTC", "UTC+00:00"):
            report.add("warning", "converted_to_utc", f"timestamps in time zone {col.dtype.tz} converted to UTC")
        return col.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").to_numpy()
    if pd.api.types.is_datetime64_dtype(col.dtype):
        report.add("warning", "naive_timestamps", "timestamps carry no time zone; taken as UTC")
        return col.astype("datetime64[ns]").astype("int64").to_numpy()
    as_text = col.astype(str).str.strip()
    numeric = pd.to_numeric(as_text, errors="coerce")
    if numeric.notna().all():
        values = numeric.to_numpy(dtype=np.float64)
        magnitude = np.nanmedian(np.abs(values)) if len(values) else 0
        if EXCEL_SERIAL_RANGE[0] <= magnitude <= EXCEL_SERIAL_RANGE[1]:
            report.add(
                "error",
                "excel_serial_dates",
                f"the timestamp column holds numbers like {as_text.iloc[0]} (Excel serial dates: days since "
                "1899-12-30); expected ISO 8601 text (2024-01-31T00:00:00Z) or epoch seconds/milliseconds",
                1,
                "timestamp",
            )
            return np.full(n, nat, dtype=np.int64)
        scale = 1 if magnitude > 1e17 else 1_000 if magnitude > 1e14 else 1_000_000 if magnitude > 1e11 else 1_000_000_000
        return (values.astype(np.int64) * scale).astype(np.int64)
    slashed = as_text.str.match(_DAY_MONTH_RE)
    if slashed.mean() > 0.5:
        first = int(np.flatnonzero(slashed.to_numpy())[0])
        report.add(
            "error",
            "ambiguous_dates",
            f"the timestamp column holds dates like {as_text.iloc[first]!r} (dd/mm/yyyy or mm/dd/yyyy: ambiguous); "
            "expected ISO 8601 text (2024-01-31T00:00:00Z) or epoch seconds/milliseconds",
            first + 1,
            "timestamp",
        )
        return np.full(n, nat, dtype=np.int64)
    offsets = as_text.str.extract(_OFFSET_RE, expand=False)
    has_offset = offsets.notna().to_numpy()
    non_utc = has_offset & ~offsets.fillna("").str.lower().isin(_UTC_OFFSETS).to_numpy()
    parsed = pd.to_datetime(as_text, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        # Fall back to pandas' flexible parser row by row only for the failures (e.g. "2021-01-01 00:00:00").
        retry = pd.to_datetime(as_text[bad], utc=True, errors="coerce", format="mixed")
        parsed = parsed.copy()
        parsed[bad] = retry
        bad = parsed.isna().to_numpy()
    out = parsed.dt.as_unit("ns").astype("int64").to_numpy().copy()
    for i in np.flatnonzero(bad)[:1000]:
        report.add("error", "bad_timestamp", f"unparsable timestamp {as_text.iloc[i]!r}", int(i + 1), "timestamp")
    for i in np.flatnonzero(non_utc & ~bad)[:1000]:
        report.add("error", "non_utc", f"timestamp {as_text.iloc[i]!r} is not UTC (offset {offsets.iloc[i]})", int(i + 1), "timestamp")
    if (~has_offset & ~bad).any() and not non_utc.any():
        report.add("warning", "naive_timestamps", "timestamps carry no time zone; taken as UTC")
    out[bad] = nat
    return out


def validate_raw(
    raw: RawTable,
    timeframe: str | Timeframe | None = None,
    repair: Repair | None = None,
    plausibility: PlausibilityConfig = DEFAULT_PLAUSIBILITY,
) -> tuple[ValidationReport, pd.DataFrame | None]:
    """Check a raw table; return the report and, when usable, the canonical frame (UTC index, float64 OHLCV)."""
    report = ValidationReport(path=raw.path, row_offset=raw.row_offset)
    frame = raw.frame
    report.n_rows = len(frame)
    if raw.missing_columns:
        report.add("error", "missing_columns", f"missing column(s) {', '.join(raw.missing_columns)}; found {', '.join(map(str, frame.columns))}")
        return report, None
    for col in raw.extra_columns:
        report.add("warning", "extra_column", f"extra column {col!r} ignored")
    if len(frame) == 0:
        report.add("error", "empty", "no data rows")
        return report, None
    tf = Timeframe.parse(timeframe) if timeframe is not None else None
    ts = _parse_timestamps(frame["timestamp"], report)
    values: dict[str, np.ndarray] = {}
    bad_numbers: dict[str, np.ndarray] = {}
    for col in OHLCV_COLUMNS:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series.dtype):
            values[col] = series.to_numpy(dtype=np.float64)
            continue
        text = series.astype(str).str.strip()
        parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        empty = text.isin(["", "nan", "NaN", "NAN", "null", "None"]).to_numpy()
        bad_numbers[col] = np.isnan(parsed) & ~empty & ~text.str.lower().isin(["nan"]).to_numpy()
        values[col] = parsed
    check_values(values, report, bad_numbers, plausibility)
    valid_ts = ts != np.iinfo(np.int64).min
    canonical = pd.DataFrame(values)
    canonical.index = pd.DatetimeIndex(pd.to_datetime(np.where(valid_ts, ts, 0), utc=True), name="timestamp").as_unit("ns")
    canonical = canonical.loc[valid_ts] if not valid_ts.all() else canonical
    if repair is not None and (repair.sort or repair.drop_duplicates):
        before = len(canonical)
        if repair.sort and not canonical.index.is_monotonic_increasing:
            canonical = canonical.sort_index(kind="stable")
            report.repairs.append("sorted rows by timestamp")
        if repair.drop_duplicates:
            dup = canonical.index.duplicated(keep="first")
            if dup.any():
                canonical = canonical.loc[~dup]
                report.repairs.append(f"dropped {int(dup.sum())} rows with duplicate timestamps (kept the first)")
        if len(canonical) != before or report.repairs:
            # Re-check ordering on the repaired table; value problems stay as found.
            report.issues = [i for i in report.issues if i.code not in ("unsorted", "duplicate")]
    if valid_ts.all() or repair is not None:
        tf = check_timestamps(canonical.index.as_unit("ns").asi8, report, tf) if not (~valid_ts).any() else tf
    report.timeframe = tf
    if len(canonical):
        report.first, report.last = canonical.index[0], canonical.index[-1]
    if not report.ok:
        return report, None
    if tf is None:
        report.add("error", "timeframe", "cannot infer the timeframe from a single bar; pass --timeframe")
        return report, None
    return report, canonical[list(OHLCV_COLUMNS)]


def infer_symbol(path: str | Path) -> str:
    """``BTCUSDT-1h.csv.gz`` -> ``BTCUSDT``; ``BTC_USDT-1h.feather`` -> ``BTC/USDT``."""
    stem = Path(path).name.split(".")[0]
    base = re.split(r"[-](?=\d+[smhdw]\b)", stem)[0]
    return base.replace("_", "/") or stem


def infer_timeframe_from_name(path: str | Path) -> Timeframe | None:
    match = re.search(r"[-_](\d+[smhdw])(?:[-_.]|$)", Path(path).name)
    return Timeframe.parse(match.group(1)) if match else None


def validate_file(
    path: str | Path,
    timeframe: str | Timeframe | None = None,
    repair: Repair | None = None,
    plausibility: PlausibilityConfig = DEFAULT_PLAUSIBILITY,
) -> tuple[ValidationReport, pd.DataFrame | None]:
    """Read and check a file. Read failures (corrupt gzip, empty file) come back as a one-error report."""
    try:
        raw = read_raw(path)
    except DataError as exc:
        report = ValidationReport(path=str(path))
        message = str(exc)
        prefix = f"{path}: "
        report.add("error", "unreadable", message[len(prefix):] if message.startswith(prefix) else message)
        return report, None
    if timeframe is None:
        timeframe = infer_timeframe_from_name(path)
    return validate_raw(raw, timeframe, repair, plausibility)


def load_bars(
    path: str | Path,
    symbol: str | None = None,
    timeframe: str | Timeframe | None = None,
    repair: Repair | None = None,
    plausibility: PlausibilityConfig = DEFAULT_PLAUSIBILITY,
) -> Bars:
    """Load and validate an OHLCV file (or a bundled dataset name such as ``BTCUSDT``).

    Raises :class:`DataError` with the first problem (file, row, kind) and a count of the rest.
    Gaps are allowed and left unfilled; see :class:`~himari.data.bars.Bars` for the gap policy.
    """
    from himari.data.bundled import resolve_data_path

    resolved = resolve_data_path(path)
    report, frame = validate_file(resolved, timeframe, repair, plausibility)
    if frame is None or not report.ok:
        raise DataError(report.first_error_line().split(": ", 1)[1] if ": " in report.first_error_line() else "invalid", str(resolved))
    assert report.timeframe is not None
    return Bars(
        frame=frame,
        symbol=symbol or infer_symbol(resolved),
        timeframe=report.timeframe,
        source=str(resolved),
        repairs=tuple(report.repairs),
    )


def bars_from_frame(
    frame: pd.DataFrame,
    symbol: str = "DATA",
    timeframe: str | Timeframe | None = None,
    repair: Repair | None = None,
) -> Bars:
    """Validate a pandas OHLCV table and return :class:`Bars`, with the same checks as :func:`load_bars`.

    ``frame`` has the timestamps as a DatetimeIndex (naive = UTC) or in a ``timestamp`` column (datetimes, epoch
    seconds or milliseconds, ISO strings), and open/high/low/close/volume columns (case-insensitive; the aliases of
    files, such as ``o``/``h``/``l``/``c``/``v``, work too). Errors name the row (``row k`` = the k-th row, from 1).
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}", "<DataFrame>")
    table = frame
    if isinstance(table.index, pd.DatetimeIndex):
        table = table.reset_index(names="timestamp")
    mapped, extra, missing = _map_columns(table)
    raw = RawTable(frame=mapped, path="<DataFrame>", row_offset=0, extra_columns=extra, missing_columns=missing,
                   layout="frame")
    report, canonical = validate_raw(raw, timeframe, repair)
    if canonical is None or not report.ok:
        line = report.first_error_line().replace("; run 'himari data validate <DataFrame>'", "")
        raise DataError(line.split(": ", 1)[1] if ": " in line else "invalid", "<DataFrame>")
    assert report.timeframe is not None
    return Bars(frame=canonical, symbol=symbol, timeframe=report.timeframe, source="<DataFrame>",
                repairs=tuple(report.repairs))


def as_bars(data: object, symbol: str | None = None, timeframe: str | Timeframe | None = None) -> Bars:
    """:class:`Bars` from Bars, a pandas OHLCV DataFrame (validated by :func:`bars_from_frame`), or a bundled
    dataset name / file path (:func:`load_bars`)."""
    if isinstance(data, Bars):
        return data
    if isinstance(data, pd.DataFrame):
        return bars_from_frame(data, symbol or "DATA", timeframe)
    if isinstance(data, str | Path):
        return load_bars(data, symbol=symbol, timeframe=timeframe)
    raise DataError(f"expected Bars, a pandas DataFrame or a dataset name/path, got {type(data).__name__}")
