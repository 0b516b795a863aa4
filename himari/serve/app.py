"""The FastAPI application: decisions over HTTP through the backtester's own decision engine.

Routes::

    GET  /health          liveness and model identity (no auth)
    GET  /                dashboard page (static shell, no data; it reads /v1/state with the key)
    POST /v1/decide       bars in the body, or symbols whose bars the server keeps -> Decision + latency
    POST /v1/bars         append closed bars to the server-kept history of a symbol
    GET  /v1/state        last decision per symbol, kept-bar summary, paper equity/positions when --paper-db is set
    GET  /metrics         Prometheus text
    GET  /openapi.json    the OpenAPI schema

Every route except ``/health`` and the page shell needs exactly one ``X-API-Key`` header (when keys are configured).
Bodies are parsed with bounded numbers (:func:`~himari.serve.schemas.parse_json_body`) and strict models; schema
errors are 422, data problems (:class:`~himari.errors.DataError`: unsorted, duplicate, gap, implausible price or
one-bar move, wrong symbol) are 422 naming the row, configuration errors 400. Error bodies quote input only
shortened. Parsing, validation and decisions run in a backend (:mod:`himari.serve.backend`), never on the event
loop: a decision backend child process (``backend="process"``, ``himari serve``'s default: no GIL or heap shared with
the loop) or a bounded pool of worker threads (``"thread"``, :mod:`himari.serve.pool`, ``create_app``'s default for
in-process clients). When the backend is full, or a request does not finish within ``request_timeout_s``, the answer
is 503 with ``Retry-After``; ``/health`` and ``/metrics`` are answered on the loop and stay fast under load. Request
metrics count the status each client was sent (``client_closed`` when the client left before the answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import Gauge
from pydantic import Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from himari import __version__
from himari.config import FrozenConfig
from himari.data.timeframe import Timeframe
from himari.data.validate import DEFAULT_PLAUSIBILITY, PlausibilityConfig
from himari.errors import ConfigError, DataError, HimariError
from himari.ops.metrics import Metrics
from himari.serve.auth import API_KEY_HEADER, ApiKeys
from himari.serve.backend import ProcessBackend, ThreadBackend
from himari.serve.decider import Decider, symbol_digest
from himari.serve.pool import Overloaded
from himari.serve.schemas import (
    MAX_BARS_PER_REQUEST,
    MAX_SYMBOLS,
    AccountIn,
    BarIn,
    BarsRequest,
    BarsResponse,
    BodyError,
    DecideRequest,
    DecideResponse,
    ErrorResponse,
    HealthResponse,
    parse_json_body,
    short,
)
from himari.trading.history import BarHistory, bars_from_rows

log = logging.getLogger("himari.serve")

PUBLIC_PATHS = frozenset({"/health", "/"})
# -- dashboard / API docs: page shells without data and plotly.js need no key -------------------------------------
from himari.serve.dashboard import DOCS_PATH, PLOTLY_PATH, dashboard_router, install_openapi  # noqa: E402

PUBLIC_PATHS = PUBLIC_PATHS | {DOCS_PATH, PLOTLY_PATH}
# ---------------------------------------------------------------------------------------------------------------------
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_ERROR_CHARS = 500  # an error message never grows with the request
PARSED_BODY_CACHE = 32  # validated bar histories kept per body digest (the same body again skips parsing)


class ServeConfig(FrozenConfig):
    """What the app needs besides the engine (typed and validated: an unknown or out-of-range field is a
    :class:`~himari.errors.ConfigError` naming it, before the server starts)."""

    symbols: tuple[str, ...] = Field(min_length=1)
    timeframe: str
    model_id: str
    model_version: str
    history_bars: int = Field(2048, ge=2)
    allow_gaps: bool = False
    paper_db: str | None = None
    market_cache: int = Field(8, ge=0, description="bar histories whose built market data is memoized (0 = off)")
    decision_cache: int = Field(1024, ge=0, description="(bars, account) pairs whose decision is memoized")
    workers: int = Field(0, ge=0, description="worker threads for parsing and decisions (0 = the number of cores)")
    max_pending: int = Field(0, ge=0, description="requests admitted to the pool (0 = 4 per worker); more -> 503")
    request_timeout_s: float = Field(10.0, gt=0.0, description="a request not answered by then -> 503 + Retry-After")
    body_timeout_s: float = Field(10.0, gt=0.0, description="a body not received by then -> 408")
    plausibility: PlausibilityConfig = DEFAULT_PLAUSIBILITY  # price range and one-bar move bounds for bars
    backend: Literal["thread", "process"] = Field(
        "thread", description="where decisions run: worker threads of the server, or a decision backend process"
    )


def default_account_factory(account: AccountIn, symbols: tuple[str, ...]) -> Any:
    """The engine's :class:`~himari.trading.engine.AccountSnapshot` from the request's account (symbol order)."""
    from himari.trading.engine import AccountSnapshot

    named = set(account.positions) | set(account.entry_prices) | set(account.time_in_position)
    unknown = sorted(named - set(symbols))
    if unknown:
        raise DataError(
            f"unknown symbol {unknown[0]!r} in account; this model trades {', '.join(symbols)}",
            "request.account",
        )
    return AccountSnapshot(
        equity=float(account.equity),
        peak_equity=float(account.peak_equity or account.equity),
        position=np.array([account.positions.get(s, 0.0) for s in symbols], dtype=np.float64),
        entry_price=np.array([account.entry_prices.get(s, 0.0) for s in symbols], dtype=np.float64),
        time_in_position=np.array([account.time_in_position.get(s, 0) for s in symbols], dtype=np.int64),
    )


class _AuthAndSizeMiddleware:
    """Pure ASGI middleware: API-key check (constant time, key never logged), body-size limit, request metrics."""

    def __init__(self, app: Any, keys: ApiKeys, metrics: Metrics, pool: ThreadBackend | ProcessBackend | None = None
                 ) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.pool = pool

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        status_holder: dict[str, int | str] = {"status": CLIENT_CLOSED}  # until a response starts

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = int(message["status"])
            try:
                await send(message)
            except OSError:
                status_holder["status"] = CLIENT_CLOSED  # the client left: count what it saw (nothing)
                raise

        headers: dict[str, bytes] = {}
        key_headers = 0
        for raw_name, value in scope.get("headers", []):
            name = raw_name.decode("latin-1").lower()
            headers[name] = value
            key_headers += name == API_KEY_HEADER.lower()
        if path not in PUBLIC_PATHS and self.keys.enabled:
            if key_headers > 1:
                await _send_json(send_wrapper, 400, {"error": f"send exactly one {API_KEY_HEADER} header"})
                self._observe(path, status_holder["status"], started)
                return
            presented = headers.get(API_KEY_HEADER.lower())
            if not self.keys.check(
                presented.decode("utf-8", errors="replace") if presented is not None else None
            ):
                await _send_json(send_wrapper, 401, {"error": f"missing or invalid {API_KEY_HEADER} header"})
                self._observe(path, status_holder["status"], started)
                return
        if self.pool is not None and path in POOLED_ROUTES and self.pool.full():
            # refused before the body is read: a full pool costs the event loop nothing per extra request
            self.metrics.rejected.labels(reason="queue_full").inc()
            await _send_json(
                send_wrapper, 503, {"error": f"server busy: {self.pool.pending} requests in progress; retry later"},
                extra_headers=[(b"retry-after", str(self.pool.retry_after_s()).encode())],
            )
            self._observe(path, status_holder["status"], started)
            return
        length = headers.get("content-length")
        if length is not None:
            try:
                too_large = int(length) > MAX_BODY_BYTES
            except ValueError:
                too_large = True
            if too_large:
                await _send_json(
                    send_wrapper, 413, {"error": f"request body larger than {MAX_BODY_BYTES} bytes"}
                )
                self._observe(path, status_holder["status"], started)
                return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            # bodies without Content-Length (chunked) are counted as they stream in
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    raise StarletteHTTPException(413, f"request body larger than {MAX_BODY_BYTES} bytes")
            return message

        try:
            await self.app(scope, limited_receive, send_wrapper)
        finally:
            self._observe(path, status_holder["status"], started)

    def _observe(self, path: str, status: int | str, started: float) -> None:
        route = path if path in _KNOWN_ROUTES else "other"
        elapsed = time.perf_counter() - started
        self.metrics.request_latency.labels(route=route, status=str(status)).observe(elapsed)
        self.metrics.requests.labels(route=route, status=str(status)).inc()


CLIENT_CLOSED = "client_closed"


_KNOWN_ROUTES = frozenset(
    {"/health", "/", "/v1/decide", "/v1/bars", "/v1/state", "/metrics", "/openapi.json"}
)


POOLED_ROUTES = frozenset({"/v1/decide", "/v1/bars"})


async def _send_json(
    send: Any, status: int, payload: dict[str, Any], extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = JSONResponse(payload).body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *(extra_headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _cap(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def _first_validation_message(errors: list[dict[str, Any]], total: int | None = None) -> str:
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    total = len(errors) if total is None else total
    more = f" (and {total - 1} more)" if total > 1 else ""
    return _cap(f"{loc}: {first.get('msg', 'invalid')}{more}")


MAX_ERROR_DETAILS = 10


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    """Location, message and type of the first errors (never the input; long keys and messages shortened)."""
    out = []
    for err in list(errors)[:MAX_ERROR_DETAILS]:
        out.append(
            {
                "loc": [p if isinstance(p, int) else _cap(str(p), 40) for p in err.get("loc", ())],
                "msg": _cap(str(err.get("msg", "")), 200),
                "type": str(err.get("type", "")),
            }
        )
    return out


_BAR_ROWS = TypeAdapter(list[BarIn])
VALIDATION_CHUNK_ROWS = 256  # rows validated per call: the GIL returns to the event loop between chunks


def _validate_rows(rows: list[Any], loc: tuple[Any, ...]) -> list[Any]:
    """Bar rows validated in chunks of ``VALIDATION_CHUNK_ROWS`` (pydantic holds the GIL for a whole call; 3000
    rows at once would hold it ~15 ms); locations keep the row index within the whole list."""
    out: list[Any] = []
    for lo in range(0, len(rows), VALIDATION_CHUNK_ROWS):
        try:
            out.extend(_BAR_ROWS.validate_python(rows[lo : lo + VALIDATION_CHUNK_ROWS]))
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
            raise _ShiftedErrors([{**e, "loc": (*loc, lo + e["loc"][0], *e["loc"][1:])} for e in errors]) from None
    return out


class _ShiftedErrors(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("validation errors")
        self.errors = errors


def _prevalidated(obj: Any) -> Any:
    """Bar lists of a decide or bars request replaced by validated rows (models accept them without revalidating);
    anything unexpected is left for the model to report."""
    if not isinstance(obj, dict):
        return obj
    bars = obj.get("bars")
    if isinstance(bars, list) and len(bars) <= MAX_BARS_PER_REQUEST:
        return {**obj, "bars": _validate_rows(bars, ("bars",))}
    if isinstance(bars, dict) and len(bars) <= MAX_SYMBOLS:
        rows = {
            k: _validate_rows(v, ("bars", k)) if isinstance(v, list) and len(v) <= MAX_BARS_PER_REQUEST else v
            for k, v in bars.items()
        }
        return {**obj, "bars": rows}
    return obj


def _validate(model: Any, body: bytes) -> Any:
    """Bounded JSON parse + strict model validation; problems as FastAPI's RequestValidationError (422)."""
    try:
        return model.model_validate(_prevalidated(parse_json_body(body)))
    except BodyError as exc:
        raise RequestValidationError([{"loc": ("body",), "msg": str(exc), "type": "json_invalid"}]) from None
    except (ValidationError, _ShiftedErrors) as exc:
        if isinstance(exc, _ShiftedErrors):
            errors = exc.errors
        else:
            errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in errors[:MAX_ERROR_DETAILS]]
            + ([{"loc": ("body",), "msg": f"{len(errors) - MAX_ERROR_DETAILS} more errors", "type": "more"}]
               if len(errors) > MAX_ERROR_DETAILS else [])
        ) from None


class DecisionWork:
    """Everything a decision request reads or changes: the bars kept by ``/v1/bars``, the decider's market and
    decision memos, the parsed-body memo. It lives where the decision work runs (this process for the ``thread``
    backend, the backend child for ``process``); its methods are the backend's operations (see
    :mod:`himari.serve.backend`) and return plain data."""

    def __init__(
        self, engine: Any, config: ServeConfig, make_account: Callable[[AccountIn, tuple[str, ...]], Any]
    ) -> None:
        self.config = config
        self.timeframe = Timeframe.parse(config.timeframe)
        self.make_account = make_account
        self.histories = {s: self.new_history(s) for s in config.symbols}
        self.histories_lock = threading.Lock()  # /v1/bars writes and kept-bar reads come from worker threads
        self.decider = Decider(
            engine, config.symbols, cache_size=config.market_cache, decision_cache_size=config.decision_cache
        )
        # body digest -> (account, bars, digests, last timestamps): array-backed, not the 3000 parsed rows (fewer
        # objects for the garbage collector to traverse)
        self.parsed_bodies: OrderedDict[
            bytes, tuple[AccountIn | None, dict[str, Any], dict[str, bytes], dict[str, int]]
        ] = OrderedDict()
        self.parsed_lock = threading.Lock()

    def new_history(self, symbol: str) -> BarHistory:
        config = self.config
        return BarHistory(
            symbol, self.timeframe, config.history_bars, allow_gaps=config.allow_gaps, plausibility=config.plausibility
        )

    def known_symbol(self, symbol: str, where: str) -> str:
        if symbol not in self.histories:
            raise DataError(
                f"unknown symbol {short(symbol)}; this model trades {', '.join(self.config.symbols)}", where
            )
        return symbol

    def bars(self, body: bytes) -> dict[str, Any]:
        """``POST /v1/bars``: append (or reset) a symbol's kept bars; the answer's body."""
        request: BarsRequest = _validate(BarsRequest, body)
        symbol = self.known_symbol(request.symbol, "request.symbol")
        ts = np.fromiter((r.timestamp_ns for r in request.bars), dtype=np.int64, count=len(request.bars))
        ohlcv = np.array([(r.open, r.high, r.low, r.close, r.volume) for r in request.bars], dtype=np.float64)
        with self.histories_lock:
            history = self.histories[symbol]
            if request.reset:
                fresh = self.new_history(symbol)
                appended, skipped = fresh.extend(ts, ohlcv)
                self.histories[symbol] = fresh
                history = fresh
            else:
                appended, skipped = history.extend(ts, ohlcv, skip_known=True)
            first, last, n_bars = history.first_timestamp_ns, history.last_timestamp_ns, len(history)
        return {
            "symbol": symbol,
            "n_bars": n_bars,
            "first": None if first is None else _iso(first),
            "last": None if last is None else _iso(last),
            "appended": appended,
            "skipped_known": skipped,
        }

    def decide(self, body: bytes) -> tuple[dict[str, Any], str, float, dict[str, int], AccountIn | None]:
        """``POST /v1/decide``: (decision payload, cache source, seconds in the engine, last bar times, account)."""
        config = self.config
        # the same body again (many clients polling with one bar history): reuse its validated bars, skip parsing
        body_key = hashlib.blake2b(body, digest_size=20).digest()  # hashlib releases the GIL on large inputs
        with self.parsed_lock:
            seen = self.parsed_bodies.get(body_key)
            if seen is not None:
                self.parsed_bodies.move_to_end(body_key)
        if seen is not None:
            return self.finish(*seen)
        request: DecideRequest = _validate(DecideRequest, body)
        if request.bars is not None:
            unknown = [s for s in request.bars if s not in self.histories]
            if unknown:
                self.known_symbol(unknown[0], "request.bars")
            missing = [s for s in config.symbols if s not in request.bars]
            if missing:
                raise DataError(
                    f"bars for {', '.join(missing)} are missing; this model needs {', '.join(config.symbols)}",
                    "request.bars",
                )
            bars_by_symbol = {
                s: bars_from_rows(
                    s, self.timeframe, request.bars[s], allow_gaps=config.allow_gaps,
                    plausibility=config.plausibility,
                )
                for s in config.symbols
            }
            digests = {s: symbol_digest(b) for s, b in bars_by_symbol.items()}
            last_ts_ns = {s: int(b.index[-1].value) for s, b in bars_by_symbol.items()}
            if config.decision_cache > 0:
                with self.parsed_lock:
                    self.parsed_bodies[body_key] = (request.account, bars_by_symbol, digests, last_ts_ns)
                    if len(self.parsed_bodies) > PARSED_BODY_CACHE:
                        self.parsed_bodies.popitem(last=False)
        else:
            assert request.symbols is not None
            for s in request.symbols:
                self.known_symbol(s, "request.symbols")
            missing = [s for s in config.symbols if s not in request.symbols]
            if missing:
                raise DataError(
                    f"symbols {', '.join(missing)} are missing; this model needs {', '.join(config.symbols)}",
                    "request.symbols",
                )
            with self.histories_lock:
                bars_by_symbol = {s: self.histories[s].bars() for s in config.symbols}
                digests = {s: self.histories[s].digest() for s in config.symbols}
                last_ts_ns = {s: int(self.histories[s].last_timestamp_ns or 0) for s in config.symbols}
        return self.finish(request.account, bars_by_symbol, digests, last_ts_ns)

    def finish(
        self,
        account_in: AccountIn | None,
        bars_by_symbol: dict[str, Any],
        digests: dict[str, bytes],
        last_ts_ns: dict[str, int],
    ) -> tuple[dict[str, Any], str, float, dict[str, int], AccountIn | None]:
        account = self.make_account(account_in, self.config.symbols) if account_in is not None else None
        started = time.perf_counter()
        _, cache, payload = self.decider.decide(bars_by_symbol, account, digests)
        latency_s = time.perf_counter() - started
        payload["model_version"] = self.config.model_version  # one identity: /health, /metrics and every decision
        return payload, cache, latency_s, last_ts_ns, account_in

    def kept(self, points: int) -> dict[str, dict[str, Any]]:
        """Kept bars per symbol: count, last timestamp and (``points`` > 0) the last ``points`` timestamps and OHLCV
        rows (copies)."""
        out: dict[str, dict[str, Any]] = {}
        with self.histories_lock:
            for s, history in self.histories.items():
                entry: dict[str, Any] = {"n_bars": len(history), "last_ts_ns": history.last_timestamp_ns}
                if points > 0 and len(history):
                    ts, ohlcv = history.arrays()
                    entry["timestamps_ns"] = np.array(ts[-points:])
                    entry["ohlcv"] = np.array(ohlcv[-points:])
                out[s] = entry
        return out


def create_app(
    engine: Any,
    config: ServeConfig,
    keys: ApiKeys,
    account_factory: Callable[[AccountIn, tuple[str, ...]], Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The API around a loaded decision engine (``engine.decide(bars_by_symbol, account) -> Decision``).

    ``config.backend`` says where decisions run: ``thread`` (worker threads of this process) or ``process`` (a
    decision backend child forked here, before the server starts; stopped when the app shuts down).
    """
    metrics = Metrics()
    metrics.watch_gc()  # GC pauses hold the GIL: /metrics shows how long (himari_gc_pause_max_seconds)
    metrics.set_model(config.model_id, config.model_version)
    timeframe = Timeframe.parse(config.timeframe)
    last_decisions: dict[str, Any] = {}
    started_at = time.monotonic()
    make_account = account_factory or default_account_factory
    backend: ThreadBackend | ProcessBackend
    if config.backend == "process":
        backend = ProcessBackend(lambda: DecisionWork(engine, config, make_account), config.workers,
                                 config.max_pending, config.request_timeout_s)
    else:
        backend = ThreadBackend(DecisionWork(engine, config, make_account), config.workers, config.max_pending,
                                config.request_timeout_s)
    metrics.pool_workers.set(backend.workers)
    metrics.pool_capacity.set(backend.max_pending)
    metrics.pool_pending.set_function(lambda: backend.pending)
    restarts = Gauge("himari_backend_restarts", "Decision backend processes restarted after a crash",
                     registry=metrics.registry)
    restarts.set_function(lambda: backend.restarts)
    paper_store = None
    if config.paper_db is not None:
        from himari.paper.store import PaperStore

        paper_store = PaperStore(config.paper_db, readonly=True)
    dashboard_html = resources.files("himari.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    app = FastAPI(
        title="HIMARI decision API",
        version=config.model_version,
        description="Regime-aware trading decisions from a trained HIMARI bundle. Auth: X-API-Key header.",
        docs_url=None,
        redoc_url=None,
        on_shutdown=[backend.close],
    )
    app.state.metrics = metrics
    app.state.backend = backend

    async def read_body(request: Request) -> bytes:
        try:
            return await asyncio.wait_for(request.body(), config.body_timeout_s)
        except TimeoutError:
            raise StarletteHTTPException(408, f"request body not received within {config.body_timeout_s:g} s") from None

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _jsonable_errors(exc.errors())
        metrics.errors.labels(kind="validation").inc()
        return JSONResponse(
            status_code=422, content={"error": _first_validation_message(errors, len(exc.errors())), "detail": errors}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code, content={"error": _cap(str(exc.detail))}, headers=exc.headers
        )

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        metrics.rejected.labels(reason=exc.reason).inc()
        return JSONResponse(
            status_code=503, content={"error": str(exc)}, headers={"Retry-After": str(exc.retry_after_s)}
        )

    @app.exception_handler(DataError)
    async def _data_error(_: Request, exc: DataError) -> JSONResponse:
        metrics.errors.labels(kind="data").inc()
        return JSONResponse(status_code=422, content={"error": _cap(str(exc))})

    @app.exception_handler(HimariError)
    async def _himari_error(_: Request, exc: HimariError) -> JSONResponse:
        metrics.errors.labels(kind=type(exc).__name__).inc()
        status = 400 if isinstance(exc, ConfigError) else 422
        return JSONResponse(status_code=status, content={"error": _cap(str(exc))})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - defence in depth
        metrics.errors.labels(kind="internal").inc()
        log.exception("unexpected error while serving a request")
        return JSONResponse(status_code=500, content={"error": f"internal error ({type(exc).__name__})"})

    @app.get("/health", response_model=HealthResponse)
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model_id": config.model_id,
            "model_version": config.model_version,
            "symbols": list(config.symbols),
            "uptime_s": time.monotonic() - started_at,
            "backend": backend.kind,
            "backend_restarts": backend.restarts,
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(dashboard_html)

    @app.get("/metrics", include_in_schema=True)
    async def prometheus_metrics() -> Response:
        if paper_store is not None:
            for stream in paper_store.streams():
                _, equity, drawdown = paper_store.equity_curve(stream, limit=1)
                if len(equity):
                    metrics.observe_account(f"paper:{stream}", float(equity[-1]), float(drawdown[-1]))
        body, content_type = metrics.render()
        try:
            backend_body = await backend.query("metrics", None)  # the backend's own gc pauses (process backend)
        except Overloaded:  # restarting: its figures are back on the next scrape
            backend_body = None
        return Response(content=body + (backend_body or b""), media_type=content_type)

    @app.post(
        "/v1/bars",
        response_model=BarsResponse,
        responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        openapi_extra=_request_body("BarsRequest"),
    )
    async def post_bars(request: Request) -> dict[str, Any]:
        return await backend.call("bars", await read_body(request))

    @app.post(
        "/v1/decide",
        response_model=None,
        responses={
            200: {"model": DecideResponse},
            401: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
        openapi_extra=_request_body("DecideRequest"),
    )
    async def decide(request: Request) -> JSONResponse:
        payload, cache, latency_s, last_ts_ns, account = await backend.call("decide", await read_body(request))
        payload["latency_ms"] = latency_s * 1e3
        payload["cache"] = cache
        metrics.cache.labels(result=cache).inc()
        step_s = timeframe.seconds
        last_close_s = {s: ts / 1e9 + step_s for s, ts in last_ts_ns.items()}
        metrics.observe_decision(payload, latency_s, last_close_s, now_s=clock(), repeated=cache == "decision")
        if account is not None:
            peak = account.peak_equity or account.equity
            metrics.observe_account("api", account.equity, 1.0 - account.equity / peak)
        for s in config.symbols:
            last_decisions[s] = payload
        return JSONResponse(payload)

    async def kept_bars(points: int) -> dict[str, dict[str, Any]]:
        return await backend.query("kept", points)

    @app.get("/v1/state")
    async def state() -> dict[str, Any]:
        kept = await kept_bars(0)
        out: dict[str, Any] = {
            "model_id": config.model_id,
            "model_version": config.model_version,
            "symbols": list(config.symbols),
            "timeframe": config.timeframe,
            "last_decision": last_decisions.get(config.symbols[0]) if config.symbols else None,
            "kept_bars": {
                s: {"n_bars": k["n_bars"], "last": None if k["last_ts_ns"] is None else _iso(k["last_ts_ns"])}
                for s, k in kept.items()
            },
            "paper": None,
        }
        if paper_store is not None:
            out["paper"] = _paper_summary(paper_store)
        return out

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (DecideRequest, BarsRequest):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # -- dashboard data (/v1/dashboard), docs page (/docs), plotly.js; X-API-Key scheme in openapi.json ------------
    app.include_router(dashboard_router(config, kept_bars, paper_store))
    install_openapi(app, PUBLIC_PATHS)
    # -----------------------------------------------------------------------------------------------------------
    app.add_middleware(_AuthAndSizeMiddleware, keys=keys, metrics=metrics, pool=backend)
    return app


def _request_body(model_name: str) -> dict[str, Any]:
    """OpenAPI request body of a route that reads its body itself (bounded parse in the worker pool)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model_name}"}}},
        }
    }


def _iso(ts_ns: int) -> str:
    import pandas as pd

    return f"{pd.Timestamp(int(ts_ns), tz='UTC'):%Y-%m-%dT%H:%M:%SZ}"


def _paper_summary(store: Any, points: int = 500) -> dict[str, Any]:
    streams: dict[str, Any] = {}
    for stream in store.streams():
        ts, equity, drawdown = store.equity_curve(stream, limit=points)
        last_decisions = store.decisions(stream, limit=1)
        streams[stream] = {
            "timestamps": [_iso(t) for t in ts],
            "equity": equity.tolist(),
            "drawdown": drawdown.tolist(),
            "positions": store.last_positions(stream),
            "last_decision": last_decisions[-1] if last_decisions else None,
        }
    return {"db": store.path.name, "streams": streams}  # the file name only: no server paths in answers


def serve_config_from_bundle(
    bundle: Any, history_bars: int, allow_gaps: bool, paper_db: str | Path | None
) -> ServeConfig:
    meta: Mapping[str, Any] = getattr(bundle, "meta", {}) or {}
    return ServeConfig.parse(dict(
        symbols=tuple(bundle.symbols),
        timeframe=str(bundle.timeframe),
        model_id=str(bundle.model_id),
        # the bundle's own version, else the himari version that decisions carry: /health equals every decision
        model_version=str(meta.get("model_version", meta.get("version", __version__))),
        history_bars=history_bars,
        allow_gaps=allow_gaps,
        paper_db=None if paper_db is None else str(paper_db),
    ))
