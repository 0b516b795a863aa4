"""The paper-trading record: SQLite in WAL mode, one transaction per bar.

Everything a bar produces (the bar itself, each stream's decision, new orders, fills, equity and positions, and the
session state needed to resume) is written in one ``BEGIN IMMEDIATE ... COMMIT``. A crash (even ``kill -9``) leaves
the database at the end of the last committed bar: that bar fully recorded, the next one not at all. Primary keys
on ``(stream, order_id)`` / ``(stream, ts_ns)`` make a duplicated fill or bar an error instead of silent double
counting.

Tables (timestamps are int64 nanoseconds since the epoch, UTC, bar open times)::

    meta(key, value)                                   run, feed, model ids; checked on resume
    bars(symbol, ts_ns, open, high, low, close, volume)
    decisions(stream, ts_ns, payload)                  Decision.to_dict() as JSON
    orders(stream, order_id, ts_ns, symbol, target_position, position_before, requested_change)
    fills(stream, order_id, ts_ns, symbol, side, quantity_change, price, fee, slippage_cost)
    equity(stream, ts_ns, equity, drawdown, positions)
    state(stream, ts_ns, payload)                      TradingSession.state_dict() after the bar
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from himari.errors import DataError, RunDirError
from himari.utils.io import to_json

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bars (
    symbol TEXT NOT NULL, ts_ns INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL,
    PRIMARY KEY (symbol, ts_ns));
CREATE TABLE IF NOT EXISTS decisions (
    stream TEXT NOT NULL, ts_ns INTEGER NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (stream, ts_ns));
CREATE TABLE IF NOT EXISTS orders (
    stream TEXT NOT NULL, order_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, symbol TEXT NOT NULL,
    target_position REAL NOT NULL, position_before REAL NOT NULL, requested_change REAL NOT NULL,
    PRIMARY KEY (stream, order_id));
CREATE TABLE IF NOT EXISTS fills (
    stream TEXT NOT NULL, order_id TEXT NOT NULL, ts_ns INTEGER NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL,
    quantity_change REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL, slippage_cost REAL NOT NULL,
    PRIMARY KEY (stream, order_id));
CREATE TABLE IF NOT EXISTS equity (
    stream TEXT NOT NULL, ts_ns INTEGER NOT NULL, equity REAL NOT NULL, drawdown REAL NOT NULL,
    positions TEXT NOT NULL, PRIMARY KEY (stream, ts_ns));
CREATE TABLE IF NOT EXISTS state (
    stream TEXT PRIMARY KEY, ts_ns INTEGER NOT NULL, payload TEXT NOT NULL);
"""


def _exclusive_lock(db: Path) -> tuple[Any, int]:
    """Exclusive, non-blocking ``flock``s that make one writer per database, however it is named.

    ``db`` is the resolved real path (symlinks followed). Two locks: ``REAL.lock`` beside the real file, and the
    database file itself (its inode: a hard link or a symlink to the same database is the same file). SQLite uses
    POSIX ``fcntl`` locks, which are independent of ``flock`` on Linux; the descriptor stays open for the store's
    lifetime (closing another descriptor of the file would drop SQLite's own POSIX locks). The OS drops both when
    the process dies (kill -9 included), so a restart is never blocked by a stale lock.
    """
    import fcntl

    handle = open(db.with_name(db.name + ".lock"), "a+")  # held for the store's lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunDirError(f"{db}: another himari paper process is writing this database") from None
    try:
        fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        handle.close()
        raise RunDirError(f"{db}: cannot open the database ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        handle.close()
        raise RunDirError(
            f"{db}: another himari paper process is writing this database (under another name)"
        ) from None
    return handle, fd


@dataclass(frozen=True)
class BarRecord:
    """What one stream produced on one bar (built by the loop from a ``BarOutcome``)."""

    stream: str
    ts_ns: int
    decision: Mapping[str, Any]
    orders: Sequence[Mapping[str, Any]]
    fills: Sequence[Mapping[str, Any]]
    equity: float
    drawdown: float
    positions: Mapping[str, float]
    state: Mapping[str, Any]


class PaperStore:
    """Read/write access to a paper-trading database (``readonly`` for the API server and ``compare``)."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise RunDirError(f"{self.path}: no paper-trading database")
            uri = f"file:{self.path.resolve()}?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            real = self.path.resolve()  # symlinks followed: the lock and SQLite see the one real file
            if real.exists() and not real.is_file():
                raise RunDirError(f"{self.path}: not a regular file")
            self._lock, self._db_fd = _exclusive_lock(real)
            self.conn = sqlite3.connect(real, isolation_level=None, check_same_thread=False)
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RunDirError(f"{self.path}: cannot switch SQLite to WAL mode (got {mode})")
            # FULL: a committed bar survives power loss too. NORMAL (HIMARI_PAPER_SYNCHRONOUS=NORMAL, used by the
            # fast tests) still survives a killed process in WAL mode; it may lose the last bars on power loss.
            sync = os.environ.get("HIMARI_PAPER_SYNCHRONOUS", "FULL").upper()
            if sync not in ("FULL", "NORMAL"):
                raise RunDirError(f"HIMARI_PAPER_SYNCHRONOUS must be FULL or NORMAL, got {sync!r}")
            self.conn.execute(f"PRAGMA synchronous={sync}")
            self.conn.executescript(_SCHEMA)
            self._init_meta()
        self.conn.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self.conn.close()
        fd = getattr(self, "_db_fd", None)
        if fd is not None:
            os.close(fd)  # after SQLite closed its own descriptors; releases the flock on the database file
            self._db_fd = None
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> PaperStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta ---------------------------------------------------------------------------------------------------
    def _init_meta(self) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        version = self.meta().get("schema_version")
        if version != str(SCHEMA_VERSION):
            raise RunDirError(f"{self.path}: schema version {version} is not supported (expected {SCHEMA_VERSION})")

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def bind_meta(self, expected: Mapping[str, str]) -> None:
        """Record ``expected`` on first use; on resume, refuse a database written by a different configuration."""
        current = self.meta()
        mismatched = [k for k, v in expected.items() if k in current and current[k] != v]
        if mismatched:
            key = mismatched[0]
            raise RunDirError(
                f"{self.path}: was written with {key}={current[key]!r}, now {expected[key]!r}; "
                "resume with the same command or use a new --db"
            )
        with self.transaction():
            for key, value in expected.items():
                self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- writing ------------------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on any exception)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def record_bar(self, bars: Mapping[str, np.ndarray], ts_ns: int, records: Sequence[BarRecord]) -> None:
        """Commit one bar: the bar rows (``{symbol: [o, h, l, c, v]}``) and every stream's record, atomically."""
        with self.transaction() as conn:
            for symbol, row in bars.items():
                conn.execute(
                    "INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", (symbol, int(ts_ns), *(float(x) for x in row))
                )
            for rec in records:
                conn.execute(
                    "INSERT INTO decisions VALUES (?, ?, ?)", (rec.stream, rec.ts_ns, to_json(rec.decision, None))
                )
                for order in rec.orders:
                    conn.execute(
                        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (rec.stream, order["order_id"], rec.ts_ns, order["symbol"], float(order["target_position"]),
                         float(order["position_before"]), float(order["requested_change"])),
                    )
                for fill in rec.fills:
                    conn.execute(
                        "INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (rec.stream, fill["order_id"], int(fill["ts_ns"]), fill["symbol"], fill["side"],
                         float(fill["quantity_change"]), float(fill["price"]), float(fill["fee"]),
                         float(fill["slippage_cost"])),
                    )
                conn.execute(
                    "INSERT INTO equity VALUES (?, ?, ?, ?, ?)",
                    (rec.stream, rec.ts_ns, float(rec.equity), float(rec.drawdown), to_json(dict(rec.positions), None)),
                )
                conn.execute(
                    "INSERT INTO state VALUES (?, ?, ?) ON CONFLICT(stream) DO UPDATE SET ts_ns=excluded.ts_ns, "
                    "payload=excluded.payload",
                    (rec.stream, rec.ts_ns, json.dumps(rec.state, sort_keys=True)),  # NaN kept: exact round trip
                )

    # -- reading ------------------------------------------------------------------------------------------------
    def last_state(self, stream: str) -> tuple[int, dict[str, Any]] | None:
        row = self.conn.execute("SELECT ts_ns, payload FROM state WHERE stream = ?", (stream,)).fetchone()
        if row is None:
            return None
        return int(row[0]), json.loads(row[1])

    def streams(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT stream FROM equity ORDER BY stream").fetchall()]

    def fills(self, stream: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT stream, order_id, ts_ns, symbol, side, quantity_change, price, fee, slippage_cost FROM fills"
        args: tuple[Any, ...] = ()
        if stream is not None:
            sql += " WHERE stream = ?"
            args = (stream,)
        sql += " ORDER BY stream, ts_ns, order_id"
        cols = ("stream", "order_id", "ts_ns", "symbol", "side", "quantity_change", "price", "fee", "slippage_cost")
        return [dict(zip(cols, row, strict=True)) for row in self.conn.execute(sql, args).fetchall()]

    def orders(self, stream: str) -> list[dict[str, Any]]:
        cols = ("order_id", "ts_ns", "symbol", "target_position", "position_before", "requested_change")
        rows = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM orders WHERE stream = ? ORDER BY ts_ns, order_id", (stream,)
        ).fetchall()
        return [dict(zip(cols, row, strict=True)) for row in rows]

    def equity_curve(self, stream: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ts_ns, equity, drawdown) in time order; the last ``limit`` rows when given."""
        if limit is None:
            rows = self.conn.execute(
                "SELECT ts_ns, equity, drawdown FROM equity WHERE stream = ? ORDER BY ts_ns", (stream,)
            ).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT ts_ns, equity, drawdown FROM (SELECT ts_ns, equity, drawdown FROM equity WHERE stream = ? "
                "ORDER BY ts_ns DESC LIMIT ?) ORDER BY ts_ns",
                (stream, int(limit)),
            ).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        arr = np.array(rows, dtype=object)
        return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.float64), arr[:, 2].astype(np.float64)

    def last_positions(self, stream: str) -> dict[str, float]:
        row = self.conn.execute(
            "SELECT positions FROM equity WHERE stream = ? ORDER BY ts_ns DESC LIMIT 1", (stream,)
        ).fetchone()
        return {} if row is None else {str(k): float(v) for k, v in json.loads(row[0]).items()}

    def decisions(self, stream: str, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT payload FROM decisions WHERE stream = ? ORDER BY ts_ns"
        if limit is not None:
            sql = (
                f"SELECT payload FROM (SELECT ts_ns, payload FROM decisions WHERE stream = ? ORDER BY ts_ns DESC "
                f"LIMIT {int(limit)}) ORDER BY ts_ns"
            )
        return [json.loads(r[0]) for r in self.conn.execute(sql, (stream,)).fetchall()]

    def n_bars(self) -> int:
        return int(self.conn.execute("SELECT COUNT(DISTINCT ts_ns) FROM bars").fetchone()[0])

    def bar_history(self, symbol: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``limit`` recorded bars of ``symbol``: (ts_ns (n,), ohlcv (n, 5)), oldest first."""
        rows = self.conn.execute(
            "SELECT ts_ns, open, high, low, close, volume FROM (SELECT * FROM bars WHERE symbol = ? "
            "ORDER BY ts_ns DESC LIMIT ?) ORDER BY ts_ns",
            (symbol, int(limit)),
        ).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 5))
        arr = np.array(rows, dtype=np.float64)
        ts = np.array([r[0] for r in rows], dtype=np.int64)
        return ts, arr[:, 1:]


def require_stream(store: PaperStore, stream: str) -> None:
    if stream not in store.streams():
        raise DataError(f"{store.path}: no records for stream {stream!r} (streams: {', '.join(store.streams()) or 'none'})")
