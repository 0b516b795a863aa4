"""The FastAPI application: decisions over HTTP through the backtester's own decision engine.

Routes::

    GET  /health          liveness and model identity (no auth)
    GET  /                dashboard page (static shell, no data; it reads /v1/state with the key)
    POST /v1/decide       bars in the body, or symbols whose bars the server keeps -> Decision + latency
    POST /v1/bars         append closed bars to the server-kept history of a symbol
    GET  /v1/state        last decision per symbol, kept-bar summary, paper equity/positions when --paper-db is set
    GET  /metrics         Prometheus text
    GET  /openapi.json    the OpenAPI schema

Every route except ``/health`` and the page shell needs ``X-API-Key`` (when keys are configured). Schema errors are
422 (FastAPI), data problems (:class:`~himari.errors.DataError`: unsorted, duplicate, gap, wrong symbol, stale) are
422 naming the row, configuration errors 400; the engine runs inline on the event loop (one decision at a time, no
thread hop), so per-request work is the model forward pass plus features on a bounded history.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from himari.data.timeframe import Timeframe
from himari.errors import ConfigError, DataError, HimariError
from himari.serve.auth import API_KEY_HEADER, ApiKeys
from himari.serve.decider import Decider
from himari.serve.history import BarHistory, bars_from_rows
from himari.serve.metrics import Metrics
from himari.serve.schemas import (
    AccountIn,
    BarsRequest,
    BarsResponse,
    DecideRequest,
    DecideResponse,
    ErrorResponse,
    HealthResponse,
)

log = logging.getLogger("himari.serve")

PUBLIC_PATHS = frozenset({"/health", "/"})
# -- issue 20 (dashboard / API docs): page shells without data and plotly.js need no key ----------------------------
from himari.serve.dashboard import DOCS_PATH, PLOTLY_PATH, dashboard_router, install_openapi  # noqa: E402

PUBLIC_PATHS = PUBLIC_PATHS | {DOCS_PATH, PLOTLY_PATH}
# -- end issue 20 ---------------------------------------------------------------------------------------------------
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What the app needs besides the engine."""

    symbols: tuple[str, ...]
    timeframe: str
    model_id: str
    model_version: str
    history_bars: int = 2048
    allow_gaps: bool = False
    paper_db: str | None = None
    market_cache: int = (
        8  # bar histories whose built market data is memoized (0 = off: engine.decide each time)
    )
    decision_cache: int = 1024  # (bars, account) pairs whose decision is memoized


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

    def __init__(self, app: Any, keys: ApiKeys, metrics: Metrics) -> None:
        self.app = app
        self.keys = keys
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        status_holder = {"status": 500}

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = int(message["status"])
            await send(message)

        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if path not in PUBLIC_PATHS and self.keys.enabled:
            presented = headers.get(API_KEY_HEADER.lower())
            if not self.keys.check(
                presented.decode("utf-8", errors="replace") if presented is not None else None
            ):
                await _send_json(send_wrapper, 401, {"error": f"missing or invalid {API_KEY_HEADER} header"})
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

        await self.app(scope, limited_receive, send_wrapper)
        self._observe(path, status_holder["status"], started)

    def _observe(self, path: str, status: int, started: float) -> None:
        route = path if path in _KNOWN_ROUTES else "other"
        elapsed = time.perf_counter() - started
        self.metrics.request_latency.labels(route=route, status=str(status)).observe(elapsed)
        self.metrics.requests.labels(route=route, status=str(status)).inc()


_KNOWN_ROUTES = frozenset(
    {"/health", "/", "/v1/decide", "/v1/bars", "/v1/state", "/metrics", "/openapi.json"}
)


async def _send_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = JSONResponse(payload).body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _first_validation_message(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {first.get('msg', 'invalid')}{more}"


def _jsonable_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        out.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def create_app(
    engine: Any,
    config: ServeConfig,
    keys: ApiKeys,
    account_factory: Callable[[AccountIn, tuple[str, ...]], Any] | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The API around a loaded decision engine (``engine.decide(bars_by_symbol, account) -> Decision``)."""
    metrics = Metrics()
    metrics.set_model(config.model_id, config.model_version)
    timeframe = Timeframe.parse(config.timeframe)
    histories = {
        s: BarHistory(s, timeframe, config.history_bars, allow_gaps=config.allow_gaps) for s in config.symbols
    }
    last_decisions: dict[str, Any] = {}
    started_at = time.monotonic()
    make_account = account_factory or default_account_factory
    decider = Decider(
        engine, config.symbols, cache_size=config.market_cache, decision_cache_size=config.decision_cache
    )
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
    )
    app.state.metrics = metrics
    app.state.histories = histories

    def known_symbol(symbol: str, where: str) -> str:
        if symbol not in histories:
            raise DataError(
                f"unknown symbol {symbol!r}; this model trades {', '.join(config.symbols)}", where
            )
        return symbol

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _jsonable_errors(exc.errors())
        metrics.errors.labels(kind="validation").inc()
        return JSONResponse(
            status_code=422, content={"error": _first_validation_message(errors), "detail": errors}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": str(exc.detail)}, headers=exc.headers)

    @app.exception_handler(DataError)
    async def _data_error(_: Request, exc: DataError) -> JSONResponse:
        metrics.errors.labels(kind="data").inc()
        return JSONResponse(status_code=422, content={"error": str(exc)})

    @app.exception_handler(HimariError)
    async def _himari_error(_: Request, exc: HimariError) -> JSONResponse:
        metrics.errors.labels(kind=type(exc).__name__).inc()
        status = 400 if isinstance(exc, ConfigError) else 422
        return JSONResponse(status_code=status, content={"error": str(exc)})

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
        return Response(content=body, media_type=content_type)

    @app.post(
        "/v1/bars",
        response_model=BarsResponse,
        responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
    )
    async def post_bars(request: BarsRequest) -> dict[str, Any]:
        symbol = known_symbol(request.symbol, "request.symbol")
        history = histories[symbol]
        ts = np.fromiter((r.timestamp_ns for r in request.bars), dtype=np.int64, count=len(request.bars))
        ohlcv = np.array([(r.open, r.high, r.low, r.close, r.volume) for r in request.bars], dtype=np.float64)
        if request.reset:
            fresh = BarHistory(symbol, timeframe, config.history_bars, allow_gaps=config.allow_gaps)
            appended, skipped = fresh.extend(ts, ohlcv)
            histories[symbol] = fresh
            history = fresh
        else:
            appended, skipped = history.extend(ts, ohlcv, skip_known=True)
        first, last = history.first_timestamp_ns, history.last_timestamp_ns
        return {
            "symbol": symbol,
            "n_bars": len(history),
            "first": None if first is None else _iso(first),
            "last": None if last is None else _iso(last),
            "appended": appended,
            "skipped_known": skipped,
        }

    @app.post(
        "/v1/decide",
        response_model=None,
        responses={
            200: {"model": DecideResponse},
            401: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
    )
    async def decide(request: DecideRequest) -> JSONResponse:
        if request.bars is not None:
            unknown = [s for s in request.bars if s not in histories]
            if unknown:
                known_symbol(unknown[0], f"request.bars[{unknown[0]}]")
            missing = [s for s in config.symbols if s not in request.bars]
            if missing:
                raise DataError(
                    f"bars for {', '.join(missing)} are missing; this model needs {', '.join(config.symbols)}",
                    "request.bars",
                )
            bars_by_symbol = {
                s: bars_from_rows(s, timeframe, request.bars[s], allow_gaps=config.allow_gaps) for s in config.symbols
            }
            digests = None
            last_ts_ns = {s: int(b.index[-1].value) for s, b in bars_by_symbol.items()}
        else:
            assert request.symbols is not None
            for s in request.symbols:
                known_symbol(s, "request.symbols")
            missing = [s for s in config.symbols if s not in request.symbols]
            if missing:
                raise DataError(f"symbols {', '.join(missing)} are missing; this model needs {', '.join(config.symbols)}", "request.symbols")
            bars_by_symbol = {s: histories[s].bars() for s in config.symbols}
            digests = {s: histories[s].digest() for s in config.symbols}
            last_ts_ns = {s: int(histories[s].last_timestamp_ns or 0) for s in config.symbols}
        account = make_account(request.account, config.symbols) if request.account is not None else None
        started = time.perf_counter()
        _, cache, payload = decider.decide(bars_by_symbol, account, digests)
        latency_s = time.perf_counter() - started
        payload["latency_ms"] = latency_s * 1e3
        payload["cache"] = cache
        metrics.cache.labels(result=cache).inc()
        step_s = timeframe.seconds
        last_close_s = {s: ts / 1e9 + step_s for s, ts in last_ts_ns.items()}
        metrics.observe_decision(payload, latency_s, last_close_s, now_s=clock(), repeated=cache == "decision")
        if request.account is not None:
            peak = request.account.peak_equity or request.account.equity
            metrics.observe_account("api", request.account.equity, 1.0 - request.account.equity / peak)
        for s in config.symbols:
            last_decisions[s] = payload
        return JSONResponse(payload)

    @app.get("/v1/state")
    async def state() -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_id": config.model_id,
            "model_version": config.model_version,
            "symbols": list(config.symbols),
            "timeframe": config.timeframe,
            "last_decision": last_decisions.get(config.symbols[0]) if config.symbols else None,
            "kept_bars": {
                s: {
                    "n_bars": len(h),
                    "last": None if h.last_timestamp_ns is None else _iso(h.last_timestamp_ns),
                }
                for s, h in histories.items()
            },
            "paper": None,
        }
        if paper_store is not None:
            out["paper"] = _paper_summary(paper_store)
        return out

    # -- issue 20: dashboard data (/v1/dashboard), docs page (/docs), plotly.js; X-API-Key scheme in openapi.json --
    app.include_router(dashboard_router(config, histories, paper_store))
    install_openapi(app, PUBLIC_PATHS)
    # -- end issue 20 ---------------------------------------------------------------------------------------------
    app.add_middleware(_AuthAndSizeMiddleware, keys=keys, metrics=metrics)
    return app


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
    return {"db": str(store.path), "streams": streams}


def serve_config_from_bundle(
    bundle: Any, history_bars: int, allow_gaps: bool, paper_db: str | Path | None
) -> ServeConfig:
    meta: Mapping[str, Any] = getattr(bundle, "meta", {}) or {}
    return ServeConfig(
        symbols=tuple(bundle.symbols),
        timeframe=str(bundle.timeframe),
        model_id=str(bundle.model_id),
        model_version=str(meta.get("model_version", meta.get("version", "unversioned"))),
        history_bars=history_bars,
        allow_gaps=allow_gaps,
        paper_db=None if paper_db is None else str(paper_db),
    )
