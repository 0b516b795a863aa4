"""Validation of OHLCV tables: every problem is named with file, row and kind.

Checks: missing/extra columns, empty file, unparsable or non-UTC timestamps, timestamps off the timeframe grid,
unsorted or duplicate timestamps, non-numeric / NaN / inf values, non-positive prices, high < max(open, close),
low > min(open, close), high < low, negative volume, and gaps (reported, not fatal). Plausibility
(:class:`PlausibilityConfig`, errors naming the row): prices outside ``[min_price, max_price]`` and one-bar moves larger
than ``max_bar_move`` (close to close, and high to low within a bar: a 1000x spike is a data error, not a market move).

Row numbers are 1-based data rows; for CSV files with a header, ``line`` is the line in the file (row + 1).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from himari.config import FrozenConfig
from himari.data.bars import OHLCV_COLUMNS, PRICE_COLUMNS
from himari.data.timeframe import Timeframe

Severity = Literal["error", "warning", "info"]


class PlausibilityConfig(FrozenConfig):
    """Bounds beyond which a bar is taken as a data error (used by every loader, command and the API).

    ``max_bar_move``: the largest ratio between consecutive closes (either way: ``1/m <= c_t / c_{t-1} <= m``) and
    between a bar's high and low. The default 10 is far above any real hourly or daily move of a listed crypto pair
    and catches unit mistakes and 1000x spikes. ``min_price``/``max_price`` bound every price (quote currency).
    """

    max_bar_move: float = Field(default=10.0, gt=1.0, le=1e6)
    min_price: float = Field(default=1e-8, gt=0.0)
    max_price: float = Field(default=1e9, gt=0.0, le=1e15)

    @model_validator(mode="after")
    def _check_range(self) -> PlausibilityConfig:
        if self.min_price >= self.max_price:
            raise ValueError(f"min_price {self.min_price:g} must be below max_price {self.max_price:g}")
        return self


DEFAULT_PLAUSIBILITY = PlausibilityConfig()


def implausible_rows(
    ohlcv: np.ndarray, config: PlausibilityConfig = DEFAULT_PLAUSIBILITY, previous_close: float | None = None
) -> list[tuple[int, str, str]]:
    """``(row index (0-based), column, message)`` for every implausible bar of a finite, positive ``(n, 5)`` array.

    ``previous_close`` is the close before row 0 (a held history), if any. Kernel: arrays in, no I/O.
    """
    x = np.asarray(ohlcv, dtype=np.float64).reshape(-1, 5)
    out: list[tuple[int, str, str]] = []
    if len(x) == 0:
        return out
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        prices = x[:, :4]
        low_bad = prices < config.min_price
        high_bad = prices > config.max_price
        for i, j in zip(*np.nonzero(low_bad | high_bad), strict=True):
            col = PRICE_COLUMNS[j]
            side = "below the plausible minimum" if low_bad[i, j] else "above the plausible maximum"
            bound = config.min_price if low_bad[i, j] else config.max_price
            out.append((int(i), col, f"{col} = {prices[i, j]:g} is {side} {bound:g} (PlausibilityConfig)"))
        m = config.max_bar_move
        spread = x[:, 1] / x[:, 2]
        for i in np.flatnonzero(spread > m):
            out.append((int(i), "high", f"high {x[i, 1]:g} is {spread[i]:.4g}x low {x[i, 2]:g} within one bar "
                                        f"(max_bar_move {m:g})"))
        close = x[:, 3]
        before = np.concatenate([[np.nan if previous_close is None else previous_close], close[:-1]])
        ratio = close / before
        for i in np.flatnonzero((ratio > m) | (ratio < 1.0 / m)):
            out.append((int(i), "close", f"close {close[i]:g} is {ratio[i]:.4g}x the previous close {before[i]:g} "
                                         f"(one-bar move beyond max_bar_move {m:g})"))
    out.sort(key=lambda item: item[0])
    return out


@dataclass(frozen=True)
class ValidationIssue:
    severity: Severity
    code: str
    message: str
    row: int | None = None
    column: str | None = None


@dataclass(frozen=True)
class Gap:
    """Missing bars: ``first_missing`` is the open time of the first missing bar; ``n_missing`` bars are absent."""

    after_row: int
    first_missing: pd.Timestamp
    n_missing: int


@dataclass
class ValidationReport:
    path: str
    n_rows: int = 0
    timeframe: Timeframe | None = None
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    issues: list[ValidationIssue] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    row_offset: int = 0  # line = row + row_offset (1 for CSV with a header)
    zero_volume_rows: int = 0

    @property
    def ok(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)

    @property
    def errors(self) -> list[ValidationIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def missing_bars(self) -> int:
        return sum(g.n_missing for g in self.gaps)

    def add(self, severity: Severity, code: str, message: str, row: int | None = None, column: str | None = None) -> None:
        self.issues.append(ValidationIssue(severity, code, message, row, column))

    def where(self, row: int | None) -> str:
        if row is None:
            return ""
        if self.row_offset:
            return f"line {row + self.row_offset} (row {row}): "
        return f"row {row}: "

    def format(self, max_per_kind: int = 10, show_gaps: int = 50) -> str:
        """Human-readable report, grouped by problem kind, at most ``max_per_kind`` rows listed per kind."""
        lines: list[str] = []
        status = "OK" if self.ok else "INVALID"
        tf = str(self.timeframe) if self.timeframe else "?"
        span = ""
        if self.first is not None and self.last is not None:
            span = f", {self.first:%Y-%m-%dT%H:%MZ} -> {self.last:%Y-%m-%dT%H:%MZ}"
        lines.append(f"{self.path}: {status}: {self.n_rows} rows, timeframe {tf}{span}")
        for repair in self.repairs:
            lines.append(f"  repaired: {repair}")
        grouped: dict[tuple[str, str], list[ValidationIssue]] = defaultdict(list)
        for issue in self.issues:
            grouped[(issue.severity, issue.code)].append(issue)
        order = {"error": 0, "warning": 1, "info": 2}
        for (severity, code), items in sorted(grouped.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
            count = f" ({len(items)} rows)" if len(items) > 1 else ""
            lines.append(f"  {severity.upper()} {code}{count}:")
            for issue in items[:max_per_kind]:
                lines.append(f"    {self.path}: {self.where(issue.row)}{issue.message}")
            if len(items) > max_per_kind:
                lines.append(f"    ... and {len(items) - max_per_kind} more")
        if self.gaps:
            lines.append(f"  gaps: {len(self.gaps)} events, {self.missing_bars} missing bars (not filled)")
            for gap in self.gaps[:show_gaps]:
                lines.append(f"    {gap.first_missing:%Y-%m-%dT%H:%MZ} (+{gap.n_missing} bars) after {self.where(gap.after_row).rstrip(': ')}")
            if len(self.gaps) > show_gaps:
                lines.append(f"    ... and {len(self.gaps) - show_gaps} more")
        if self.zero_volume_rows:
            lines.append(f"  zero-volume bars: {self.zero_volume_rows} (kept as reported)")
        return "\n".join(lines)

    def first_error_line(self) -> str:
        """One line naming the file, row and problem of the first error, with a count of the rest."""
        errors = self.errors
        if not errors:
            return f"{self.path}: OK"
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems; run 'himari data validate {self.path}')" if len(errors) > 1 else ""
        return f"{self.path}: {self.where(first.row)}{first.message}{more}"


def check_timestamps(ts_ns: np.ndarray, report: ValidationReport, timeframe: Timeframe | None) -> Timeframe | None:
    """Sortedness, duplicates, grid alignment and gaps of int64-ns timestamps (all valid). Returns the timeframe."""
    n = len(ts_ns)
    if n == 0:
        return timeframe
    diffs = np.diff(ts_ns)
    rows = np.arange(1, n + 1)
    for i in np.flatnonzero(diffs < 0)[:1000]:
        report.add(
            "error",
            "unsorted",
            f"timestamp {pd.Timestamp(ts_ns[i + 1], tz='UTC'):%Y-%m-%dT%H:%M:%SZ} is earlier than the previous row's "
            f"{pd.Timestamp(ts_ns[i], tz='UTC'):%Y-%m-%dT%H:%M:%SZ} (timestamps must increase)",
            int(rows[i + 1]),
            "timestamp",
        )
    uniq, first_idx, counts = np.unique(ts_ns, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup_mask = np.ones(n, dtype=bool)
        dup_mask[first_idx] = False
        first_of = dict(zip(uniq.tolist(), first_idx.tolist(), strict=True))
        for i in np.flatnonzero(dup_mask)[:1000]:
            original = first_of[int(ts_ns[i])]
            report.add(
                "error",
                "duplicate",
                f"duplicate timestamp {pd.Timestamp(ts_ns[i], tz='UTC'):%Y-%m-%dT%H:%M:%SZ} (same as "
                f"{report.where(int(rows[original])).rstrip(': ')})",
                int(rows[i]),
                "timestamp",
            )
    positive = np.diff(uniq)
    if timeframe is None:
        if len(positive) == 0:
            return None
        values, value_counts = np.unique(positive, return_counts=True)
        timeframe = Timeframe.from_seconds(int(values[np.argmax(value_counts)] // 1_000_000_000))
    step = timeframe.nanoseconds
    misaligned = np.flatnonzero(ts_ns % step != 0) if step <= 86400 * 1_000_000_000 else np.array([], dtype=int)
    for i in misaligned[:1000]:
        report.add(
            "error",
            "off_grid",
            f"timestamp {pd.Timestamp(ts_ns[i], tz='UTC'):%Y-%m-%dT%H:%M:%SZ} is not aligned to {timeframe} bars",
            int(rows[i]),
            "timestamp",
        )
    if not (diffs < 0).any():
        irregular = np.flatnonzero((diffs > 0) & (diffs % step != 0))
        for i in irregular[:1000]:
            if ts_ns[i + 1] % step == 0 and ts_ns[i] % step == 0:
                continue
            report.add("error", "irregular_step", f"bar spacing of {diffs[i] / 1e9:.0f}s is not a multiple of {timeframe}", int(rows[i + 1]), "timestamp")
        for i in np.flatnonzero(diffs > step):
            if diffs[i] % step != 0:
                continue
            report.gaps.append(
                Gap(
                    after_row=int(rows[i]),
                    first_missing=pd.Timestamp(ts_ns[i] + step, tz="UTC"),
                    n_missing=int(diffs[i] // step) - 1,
                )
            )
    return timeframe


def check_values(
    values: dict[str, np.ndarray],
    report: ValidationReport,
    bad_numbers: dict[str, np.ndarray],
    plausibility: PlausibilityConfig = DEFAULT_PLAUSIBILITY,
) -> None:
    """Per-row value checks on float64 columns. ``bad_numbers[col]`` marks cells that failed to parse as numbers."""
    rows = np.arange(1, len(next(iter(values.values()))) + 1) if values else np.array([], dtype=int)
    for col in OHLCV_COLUMNS:
        arr = values[col]
        bad = bad_numbers.get(col)
        if bad is not None:
            for i in np.flatnonzero(bad)[:1000]:
                report.add("error", "not_a_number", f"{col} is not a number", int(rows[i]), col)
        nan = np.isnan(arr) & ~(bad if bad is not None else False)
        for i in np.flatnonzero(nan)[:1000]:
            report.add("error", "nan", f"{col} is NaN/empty", int(rows[i]), col)
        for i in np.flatnonzero(np.isinf(arr))[:1000]:
            report.add("error", "inf", f"{col} is infinite ({arr[i]})", int(rows[i]), col)
    finite = {c: np.where(np.isfinite(values[c]), values[c], np.nan) for c in OHLCV_COLUMNS}
    with np.errstate(invalid="ignore"):
        for col in PRICE_COLUMNS:
            for i in np.flatnonzero(finite[col] <= 0)[:1000]:
                report.add("error", "non_positive_price", f"{col} = {finite[col][i]:g} is not positive", int(rows[i]), col)
        o, h, low, c = finite["open"], finite["high"], finite["low"], finite["close"]
        for i in np.flatnonzero(h < np.maximum(o, c))[:1000]:
            report.add("error", "high_below_open_close", f"high {h[i]:g} < max(open {o[i]:g}, close {c[i]:g})", int(rows[i]), "high")
        for i in np.flatnonzero(low > np.minimum(o, c))[:1000]:
            report.add("error", "low_above_open_close", f"low {low[i]:g} > min(open {o[i]:g}, close {c[i]:g})", int(rows[i]), "low")
        for i in np.flatnonzero(h < low)[:1000]:
            report.add("error", "high_below_low", f"high {h[i]:g} < low {low[i]:g}", int(rows[i]), "high")
        vol = finite["volume"]
        for i in np.flatnonzero(vol < 0)[:1000]:
            report.add("error", "negative_volume", f"volume {vol[i]:g} is negative", int(rows[i]), "volume")
        report.zero_volume_rows = int(np.sum(vol == 0))
    usable = np.ones(len(rows), dtype=bool)
    for col in PRICE_COLUMNS:
        usable &= np.isfinite(finite[col]) & (finite[col] > 0)
    if usable.any():
        # plausibility on the rows whose prices are usable (bad cells are already reported above)
        idx = np.flatnonzero(usable)
        stacked = np.stack([finite[c][idx] for c in OHLCV_COLUMNS], axis=1)
        for i, col, message in implausible_rows(stacked, plausibility)[:1000]:
            report.add("error", "implausible", message, int(rows[idx[i]]), col)


def validate_frame(frame: pd.DataFrame, timeframe: Timeframe, path: str) -> ValidationReport:
    """Run the loader's value and timestamp checks on a canonical frame (rows are 1-based in ``frame`` order)."""
    report = ValidationReport(path=path, n_rows=len(frame))
    values = {c: frame[c].to_numpy(dtype=np.float64) for c in OHLCV_COLUMNS}
    check_values(values, report, {})
    report.timeframe = check_timestamps(frame.index.as_unit("ns").asi8, report, timeframe)
    if len(frame):
        report.first, report.last = frame.index[0], frame.index[-1]
    return report
