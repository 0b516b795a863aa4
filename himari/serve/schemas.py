"""Request and response models of the API (pydantic v2), with the checks that make bad input a clear 4xx.

Bodies are parsed by :func:`parse_json_body`, which bounds every number *before* converting it (at most
``MAX_INT_DIGITS`` digits for integers, ``MAX_NUMBER_CHARS`` characters for decimals, no NaN/Infinity tokens): a
300k-digit number is refused in linear time instead of being converted in quadratic time. The models are strict: a
number must be a JSON number (``"42000"`` and ``true`` are refused), a flag a JSON boolean. Error messages quote
input only shortened (:func:`short`), so an error body never echoes a large request.

Per-field checks (schema level, answered with 422 by FastAPI): prices finite and > 0, volume finite and >= 0,
``high >= max(open, close)``, ``low <= min(open, close)``, timestamps as epoch milliseconds (ccxt's convention) or ISO
8601 (naive means UTC), bounded list lengths. Sequence checks (sorted, duplicates, off-grid, gaps) need the
timeframe and are done by :mod:`himari.trading.history`, which raises :class:`~himari.errors.DataError` naming the row.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_BARS_PER_REQUEST = 5000
MAX_SYMBOLS = 16
MIN_EPOCH_MS = 1_230_768_000_000  # 2009-01-01: anything earlier is a unit mistake (seconds sent as ms)
MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01
MAX_INT_DIGITS = 19  # int64 range: epoch ms, ns and counts all fit
MAX_NUMBER_CHARS = 40  # a float64 needs at most 17 significant digits plus sign, point and exponent
MAX_TIMESTAMP_CHARS = 40
SHORT_CHARS = 40


class BodyError(ValueError):
    """The request body is not acceptable JSON (answered with 422 and this message)."""


def short(value: object, limit: int = SHORT_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages never echo large input)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    text = repr(value) if not isinstance(value, int) or isinstance(value, bool) else _int_text(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _int_text(value: int) -> str:
    if value.bit_length() > 200:  # str() of a huge int is quadratic (and capped by Python): describe it instead
        return f"<integer of about {int(value.bit_length() * 0.30103)} digits>"
    return str(value)


def _bounded_int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise BodyError(f"a number with {digits} digits exceeds the limit of {MAX_INT_DIGITS} digits")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BodyError(f"a number written with {len(text)} characters exceeds the limit of {MAX_NUMBER_CHARS}")
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"number {text} is out of the float64 range")
    return value


def _no_constant(name: str) -> float:
    raise BodyError(f"{name} is not a JSON number; send finite numbers")


def parse_json_body(body: bytes) -> object:
    """JSON text -> Python objects, numbers bounded before conversion (linear time in the body length)."""
    if not body.strip():
        raise BodyError("request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"request body is not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float, parse_constant=_no_constant)
    except BodyError:
        raise
    except json.JSONDecodeError as exc:
        raise BodyError(f"request body is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise BodyError("request body nests too deeply") from None


def parse_timestamp_ns(value: int | float | str | datetime) -> int:
    """Epoch milliseconds (int) or ISO 8601 text / datetime (naive = UTC) -> int64 nanoseconds since the epoch."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be epoch milliseconds or ISO 8601 text, not a boolean")
    if isinstance(value, int):
        if not MIN_EPOCH_MS <= value <= MAX_EPOCH_MS:  # integer comparison: no float conversion of huge ints
            raise ValueError(
                f"timestamp {short(value)} is outside 2009..2100 as epoch milliseconds "
                "(seconds sent instead of milliseconds?)"
            )
        return value * 1_000_000
    if isinstance(value, float):
        if not (math.isfinite(value) and value == int(value) and MIN_EPOCH_MS <= value <= MAX_EPOCH_MS):
            raise ValueError(f"timestamp {short(value)} must be an integer number of epoch milliseconds in 2009..2100")
        return int(value) * 1_000_000
    if isinstance(value, str) and len(value) > MAX_TIMESTAMP_CHARS:
        raise ValueError(f"timestamp {short(value)} is longer than {MAX_TIMESTAMP_CHARS} characters")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"timestamp {short(value)} is not ISO 8601 or epoch milliseconds") from None
    if ts is pd.NaT or pd.isna(ts):
        raise ValueError(f"timestamp {short(value)} is not a valid time")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    ns = int(ts.value)
    if not MIN_EPOCH_MS * 1_000_000 <= ns <= MAX_EPOCH_MS * 1_000_000:
        raise ValueError(f"timestamp {short(value)} is outside 2009..2100")
    return ns


class BarIn(BaseModel):
    """One closed OHLCV bar; ``timestamp`` is the bar's open time (UTC)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)

    timestamp: int | str = Field(description="bar open time: epoch milliseconds or ISO 8601 (naive = UTC)")
    open: float = Field(gt=0, lt=1e12)
    high: float = Field(gt=0, lt=1e12)
    low: float = Field(gt=0, lt=1e12)
    close: float = Field(gt=0, lt=1e12)
    volume: float = Field(ge=0, lt=1e18)

    @field_validator("timestamp")
    @classmethod
    def _check_timestamp(cls, value: int | str) -> int | str:
        parse_timestamp_ns(value)
        return value

    @model_validator(mode="after")
    def _check_ohlc(self) -> BarIn:
        if self.high < max(self.open, self.close):
            raise ValueError(f"high {self.high:g} < max(open {self.open:g}, close {self.close:g})")
        if self.low > min(self.open, self.close):
            raise ValueError(f"low {self.low:g} > min(open {self.open:g}, close {self.close:g})")
        return self

    @property
    def timestamp_ns(self) -> int:
        return parse_timestamp_ns(self.timestamp)


class AccountIn(BaseModel):
    """The caller's account, used by the risk gates (drawdown brake, leverage, current position)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)

    equity: float = Field(gt=0, lt=1e15, description="current account equity (quote currency)")
    peak_equity: float | None = Field(default=None, gt=0, lt=1e15, description="running peak equity")
    positions: dict[str, float] = Field(
        default_factory=dict, max_length=MAX_SYMBOLS, description="signed position per symbol as a fraction of equity (missing = flat)"
    )
    entry_prices: dict[str, float] = Field(
        default_factory=dict, max_length=MAX_SYMBOLS, description="entry price of the open position per symbol (missing = unknown/flat)"
    )
    time_in_position: dict[str, int] = Field(
        default_factory=dict, max_length=MAX_SYMBOLS, description="bars since the position's sign last changed, per symbol"
    )

    @field_validator("positions")
    @classmethod
    def _check_positions(cls, value: dict[str, float]) -> dict[str, float]:
        for symbol, position in value.items():
            if not -10.0 <= position <= 10.0:
                raise ValueError(
                    f"position {position:g} for {short(symbol)} is outside [-10, 10] (fraction of equity)"
                )
        return value

    @field_validator("entry_prices")
    @classmethod
    def _check_entry_prices(cls, value: dict[str, float]) -> dict[str, float]:
        for symbol, price in value.items():
            if not 0.0 < price < 1e12:
                raise ValueError(f"entry price {price:g} for {short(symbol)} must be positive")
        return value

    @field_validator("time_in_position")
    @classmethod
    def _check_time(cls, value: dict[str, int]) -> dict[str, int]:
        for symbol, bars in value.items():
            if not 0 <= bars <= 10_000_000:
                raise ValueError(f"time_in_position {short(bars)} for {short(symbol)} must be >= 0 bars")
        return value

    @model_validator(mode="after")
    def _check_peak(self) -> AccountIn:
        if self.peak_equity is not None and self.peak_equity < self.equity:
            raise ValueError(f"peak_equity {self.peak_equity:g} is below equity {self.equity:g}")
        return self


class DecideRequest(BaseModel):
    """Either ``bars`` (recent closed bars per symbol, oldest first; the last row is the just-closed bar t) or
    ``symbols`` (decide on the bars the server keeps, fed through ``POST /v1/bars``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    bars: dict[str, list[BarIn]] | None = Field(default=None, max_length=MAX_SYMBOLS)
    symbols: list[str] | None = Field(default=None, min_length=1, max_length=MAX_SYMBOLS)
    account: AccountIn | None = None

    @field_validator("bars")
    @classmethod
    def _check_bars(cls, value: dict[str, list[BarIn]] | None) -> dict[str, list[BarIn]] | None:
        if value is None:
            return value
        for symbol, rows in value.items():
            if not rows:
                raise ValueError(f"{short(symbol)}: no bars")
            if len(rows) > MAX_BARS_PER_REQUEST:
                raise ValueError(
                    f"{short(symbol)}: {len(rows)} bars exceed the limit of {MAX_BARS_PER_REQUEST} per request"
                )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DecideRequest:
        if (self.bars is None) == (self.symbols is None):
            raise ValueError("give exactly one of 'bars' (bars in the request) or 'symbols' (bars kept by the server)")
        return self


class BarsRequest(BaseModel):
    """Append closed bars to the server-kept history of ``symbol`` (``reset`` replaces the history)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    symbol: str = Field(min_length=1, max_length=40)
    bars: list[BarIn] = Field(min_length=1, max_length=MAX_BARS_PER_REQUEST)
    reset: bool = False


class BarsResponse(BaseModel):
    symbol: str
    n_bars: int
    first: str | None
    last: str | None
    appended: int
    skipped_known: int


class GateOut(BaseModel):
    name: str
    scale: float
    reason: str


class DecideResponse(BaseModel):
    """``Decision.to_dict()`` of the decision engine plus serving fields (documented shape for the OpenAPI)."""

    model_config = ConfigDict(extra="allow")

    timestamp: str
    symbols: list[str]
    actions: Any = Field(description="HOLD/LONG/SHORT per symbol")
    proposal: Any = Field(description="the policy's proposal before sizing and risk")
    target_position: Any = Field(description="final target position per symbol (fraction of equity)")
    regime: Any = Field(description="regime name per symbol")
    regime_posterior: Any = Field(description="P(regime_t | data <= t) per symbol")
    confidence: Any
    gates: list[GateOut]
    model_id: str
    model_version: str
    latency_ms: float = Field(description="server-side decision time (ms)")
    cache: str = Field(description="decision | market | none: what was memoized for this answer")


class HealthResponse(BaseModel):
    status: str
    model_id: str
    model_version: str
    symbols: list[str]
    uptime_s: float
    backend: str = "thread"  # where decisions run: "thread" (server's worker threads) or "process" (a child)
    backend_restarts: int = 0  # decision backend processes restarted after a crash


class ErrorResponse(BaseModel):
    error: str
    detail: Any = None
