"""Soak on loopback (bounded in count and time, stops by itself): 50 and 200 concurrent clients with new data per
request and hostile bodies mixed in. Every request gets an answer (200, 422 for the hostile ones, or 503 with
Retry-After when the pool is full): no 5xx, no dropped connection, and the server's metrics count exactly what the
clients saw. The decisions run in the decision backend process (``himari serve``'s default); /health is probed
throughout and answered every time. Latency is reported by ``himari bench serve --scenario soak``, never asserted
here."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from himari.serve.app import ServeConfig, create_app
from himari.serve.auth import ApiKeys
from himari.serve.soak import soak
from tests.paper.fakes import FakeEngine
from tests.serve.test_app import KEY, account_factory, make_rows


class SlowEngine(FakeEngine):
    """A fake engine that spends CPU time on each decision (like building features), holding the GIL."""

    def decide(self, bars_by_symbol, account=None):
        deadline = time.perf_counter() + 0.004
        while time.perf_counter() < deadline:
            pass
        return super().decide(bars_by_symbol, account)


def _bodies() -> callable:
    rows = make_rows(200)
    head = json.dumps({"bars": {"BTCUSDT": rows[:-1]}})[:-3]
    last = dict(rows[-1])
    hostile = [
        b'{"bars": {"BTCUSDT": [{"timestamp": ' + b"9" * 5000 + b"}]}}",
        b"{" * 5000,
        json.dumps({"bars": {"BTCUSDT": [{**last, "close": "42000"}]}}).encode(),
        b"\xff\xfe",
    ]

    def body(i: int) -> bytes:
        if i % 7 == 3:
            return hostile[(i // 7) % len(hostile)]
        last["volume"] = 10.0 + i * 1e-3  # new data: a new digest, no memo answers it
        return (head + ", " + json.dumps(last) + "]}}").encode()

    return body


@pytest.mark.parametrize("clients", [50, 200])
def test_soak_every_request_answered_no_5xx(clients: int) -> None:
    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="m", model_version="1", history_bars=256,
                         workers=2, max_pending=16, request_timeout_s=20.0, backend="process")
    app = create_app(SlowEngine(("BTCUSDT",)), config, ApiKeys((KEY.encode(),)), account_factory=account_factory)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", backlog=4096))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        result = asyncio.run(soak("127.0.0.1", port, "/v1/decide", _bodies(), KEY, clients=clients,
                                  max_requests=3 * clients, duration_s=60.0))
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"X-API-Key": KEY}).text
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert app.state.backend.exitcode == 0  # the server's shutdown stopped its decision backend
    assert result.requests == 3 * clients
    assert result.dropped == 0 and result.server_errors == 0 and result.missing_retry_after == 0
    assert set(result.statuses) <= {200, 422, 503}, result.statuses
    hostile = sum(1 for i in range(3 * clients) if i % 7 == 3)
    assert result.statuses[200] > 0 and 0 < result.statuses[422] <= hostile  # hostile ones: 422, or 503 when busy
    assert result.health_failures == 0 and len(result.health_latencies_s) > 0
    served = {s: float(n) for s, n in re.findall(r'himari_http_requests_total\{route="/v1/decide",status="(\d+)"\} '
                                                 r"([\d.e+]+)", metrics)}
    assert served == {str(s): float(n) for s, n in result.statuses.items()}  # the server counts what clients saw
