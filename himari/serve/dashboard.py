"""The dashboard's data and the API docs, as a router the app includes.

Routes::

    GET /v1/dashboard          everything the dashboard page draws (needs X-API-Key like every /v1 route):
                               per paper stream the equity, drawdown and a buy-and-hold baseline over the same
                               bars, the regime and risk-gate states of every decision, the open position and the
                               recent fills; a champion-vs-shadow comparison; the server's kept bars
    GET /docs                  the API reference page (a shell without data: it reads /openapi.json with the key)
    GET /static/plotly.min.js  plotly.js for the dashboard (from the ``plotly`` package; no CDN, cacheable)

:func:`install_openapi` declares the ``X-API-Key`` header as the ``ApiKeyAuth`` security scheme in
``/openapi.json`` (required everywhere except ``/health`` and the page shells), so generated clients send it.
The schema and the docs are behind the key like the rest of the API; a server started with
``--allow-open-loopback`` (no keys, loopback only) serves them openly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import HTMLResponse, Response

from himari.regime.palette import REGIME_COLOUR_BY_NAME, UNKNOWN_REGIME_COLOUR
from himari.serve.auth import API_KEY_HEADER

PLOTLY_PATH = "/static/plotly.min.js"
DOCS_PATH = "/docs"
SECURITY_SCHEME = "ApiKeyAuth"
MAX_POINTS = 10_000
RECENT_FILLS = 20


@functools.cache
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs()).encode("utf-8")


def _iso(ts_ns: int) -> str:
    import pandas as pd

    return f"{pd.Timestamp(int(ts_ns), tz='UTC'):%Y-%m-%dT%H:%M:%SZ}"


def _finite(values: np.ndarray, digits: int = 6) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.round(np.asarray(values, dtype=np.float64), digits)]


def _first(value: Any) -> Any:
    """The first symbol's entry of a per-symbol field (list, dict or scalar)."""
    if isinstance(value, list | tuple):
        return value[0] if value else None
    if isinstance(value, dict):
        return next(iter(value.values()), None)
    return value


def _number(value: Any) -> float | None:
    try:
        x = float(_first(value))
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def stream_summary(store: Any, stream: str, symbol: str, points: int) -> dict[str, Any]:
    """One paper stream for the dashboard: equity, drawdown and buy-and-hold of ``symbol`` over the same bars
    (``close_t / close_first``), the regime / binding gate / gate scales / target of each decision, the open
    position and the last fills."""
    ts, equity, drawdown = store.equity_curve(stream, limit=points)
    bar_ts, ohlcv = store.bar_history(symbol, max(points, 1) + 1)
    baseline: list[float | None] = []
    if len(ts) and len(bar_ts):
        idx = np.clip(np.searchsorted(bar_ts, ts, side="right") - 1, 0, len(bar_ts) - 1)
        close = ohlcv[idx, 3]
        baseline = _finite(close / close[0] * equity[0]) if close[0] > 0 else []
    decisions = store.decisions(stream, limit=points)
    gate_names: list[str] = []
    for d in decisions:
        for gate in d.get("gates") or []:
            name = str(gate.get("name"))
            if name not in gate_names:
                gate_names.append(name)
    gate_scales: dict[str, list[float | None]] = {name: [] for name in gate_names}
    regimes, binding, targets, actions, decision_times = [], [], [], [], []
    for d in decisions:
        decision_times.append(d.get("timestamp"))
        regimes.append(_first(d.get("regime")))
        actions.append(_first(d.get("actions")))
        targets.append(_number(d.get("target_position")))
        bound = _first(d.get("binding_gate"))
        binding.append(bound if bound else None)
        scales = {str(g.get("name")): _number(g.get("scale")) for g in d.get("gates") or []}
        for name in gate_names:
            gate_scales[name].append(scales.get(name))
    fills = store.fills(stream)[-RECENT_FILLS:]
    for fill in fills:
        fill["timestamp"] = _iso(fill.pop("ts_ns"))
    return {
        "timestamps": [_iso(t) for t in ts],
        "equity": _finite(equity),
        "drawdown": _finite(drawdown),
        "buy_and_hold": baseline,
        "decision_timestamps": decision_times,
        "regime": regimes,
        "action": actions,
        "target_position": targets,
        "binding_gate": binding,
        "gate_scales": gate_scales,
        "positions": store.last_positions(stream),
        "fills": fills[::-1],  # newest first
        "last_decision": decisions[-1] if decisions else None,
    }


def compare_streams(streams: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stream: total return and buy-and-hold return over its bars, max drawdown, bars, fills, and the share of
    decisions whose action matches the first stream's (champion) at the same time."""
    names = list(streams)
    reference = streams[names[0]] if names else None
    rows = []
    for name, s in streams.items():
        equity = [v for v in s["equity"] if v is not None]
        bh = [v for v in s["buy_and_hold"] if v is not None]
        drawdowns = [v for v in s["drawdown"] if v is not None]
        row: dict[str, Any] = {
            "stream": name,
            "bars": len(equity),
            "total_return": equity[-1] / equity[0] - 1 if len(equity) > 1 and equity[0] else None,
            "buy_and_hold_return": bh[-1] / bh[0] - 1 if len(bh) > 1 and bh[0] else None,
            "max_drawdown": max(drawdowns) if drawdowns else None,
            "fills_shown": len(s["fills"]),
            "agreement_with_first": None,
        }
        if reference is not None and name != names[0]:
            ref = dict(zip(reference["decision_timestamps"], reference["action"], strict=True))
            pairs = [(a, ref[t]) for t, a in zip(s["decision_timestamps"], s["action"], strict=True) if t in ref]
            row["agreement_with_first"] = sum(a == b for a, b in pairs) / len(pairs) if pairs else None
        rows.append(row)
    return rows


def dashboard_router(
    config: Any, kept_bars: Callable[[int], Awaitable[dict[str, dict[str, Any]]]], paper_store: Any | None
) -> APIRouter:
    """The dashboard data route, the docs page and the plotly.js route for an app built by ``create_app``
    (``await kept_bars(points)``: each symbol's kept-bar count and last ``points`` timestamps and OHLCV rows, read
    from wherever the decision backend keeps them)."""
    router = APIRouter()
    docs_html = resources.files("himari.serve").joinpath("static/docs.html").read_text(encoding="utf-8")

    @router.get("/v1/dashboard", tags=["dashboard"])
    async def dashboard_data(points: int = Query(1000, ge=2, le=MAX_POINTS)) -> dict[str, Any]:
        """Series for the dashboard: paper streams (equity, drawdown, buy-and-hold, regimes, gates, position,
        fills), their comparison and the server's kept bars (last ``points`` of each)."""
        symbol = config.symbols[0] if config.symbols else ""
        market: dict[str, Any] = {}
        for s, kept in (await kept_bars(points)).items():
            if kept["n_bars"]:
                ts, ohlcv = kept["timestamps_ns"], kept["ohlcv"]
                market[s] = {"source": "kept bars", "timestamps": [_iso(t) for t in ts[-points:]],
                             "close": _finite(ohlcv[-points:, 3])}
        streams: dict[str, Any] = {}
        if paper_store is not None:
            names = paper_store.streams()
            names.sort(key=lambda n: (n != "champion", n))  # champion first
            for stream in names:
                streams[stream] = stream_summary(paper_store, stream, symbol, points)
            for s in config.symbols:
                if s not in market:
                    ts, ohlcv = paper_store.bar_history(s, points)
                    if len(ts):
                        market[s] = {"source": "paper bars", "timestamps": [_iso(t) for t in ts],
                                     "close": _finite(ohlcv[:, 3])}
        return {
            "model": {"model_id": config.model_id, "model_version": config.model_version,
                      "symbols": list(config.symbols), "timeframe": config.timeframe},
            "regime_colours": {**REGIME_COLOUR_BY_NAME, "UNKNOWN": UNKNOWN_REGIME_COLOUR},
            "market": market,
            "streams": streams,
            "comparison": compare_streams(streams),
            "paper_db": None if paper_store is None else str(paper_store.path),
        }

    @router.get(DOCS_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return HTMLResponse(docs_html)

    @router.get(PLOTLY_PATH, include_in_schema=False)
    async def plotly_script() -> Response:
        return Response(_plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    return router


def install_openapi(app: FastAPI, public_paths: frozenset[str]) -> None:
    """Declare the ``X-API-Key`` security scheme in the app's OpenAPI schema: required by default, removed from the
    operations under ``public_paths``."""
    base = app.openapi  # the app's own schema (with its request models), extended here

    def openapi() -> dict[str, Any]:
        schema = base()
        if SECURITY_SCHEME not in schema.get("components", {}).get("securitySchemes", {}):
            schema.setdefault("components", {})["securitySchemes"] = {
                SECURITY_SCHEME: {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                                  "description": "An API key from the server's key file or HIMARI_API_KEYS."},
            }
            schema["security"] = [{SECURITY_SCHEME: []}]
            for path, operations in schema.get("paths", {}).items():
                if path in public_paths:
                    for operation in operations.values():
                        operation["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
