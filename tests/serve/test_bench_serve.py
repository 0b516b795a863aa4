"""The load generator of `himari bench serve`: wrk output parsing and the open-loop asyncio generator."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import uvicorn

from himari.bench.serve import _open_loop, parse_wrk_output
from himari.serve.app import ServeConfig, create_app
from himari.serve.auth import ApiKeys
from tests.paper.fakes import FakeEngine
from tests.serve.test_app import KEY, make_rows

WRK_SAMPLE = """Running 10s test @ http://127.0.0.1:39861/v1/decide
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   105.59ms  170.95ms   1.98s    96.10%
    Req/Sec   325.51    179.64     0.88k    71.59%
  Latency Distribution
     50%  971.00us
     75%  102.28ms
     90%  145.82ms
     99%    1.11s
  6027 requests in 10.08s, 8.70MB read
  Socket errors: connect 0, read 0, write 0, timeout 10
  Non-2xx or 3xx responses: 3
Requests/sec:    598.02
Transfer/sec:      0.86MB
"""


def test_parse_wrk_output() -> None:
    figures = parse_wrk_output(WRK_SAMPLE)
    assert figures["p50_ms"] == 0.971 and figures["p90_ms"] == 145.82 and figures["p99_ms"] == 1110.0
    assert figures["requests_per_s"] == 598.02 and figures["non_2xx"] == 3 and figures["timeouts"] == 10


def test_open_loop_generator_against_a_live_server() -> None:
    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="m", model_version="0")
    app = create_app(FakeEngine(("BTCUSDT",)), config, ApiKeys((KEY.encode(),)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        body = json.dumps({"bars": {"BTCUSDT": make_rows(30)}}).encode()
        figures = asyncio.run(_open_loop("127.0.0.1", port, "/v1/decide", body, KEY, connections=4, rate=40.0,
                                         duration_s=1.0))
        bad_key = asyncio.run(_open_loop("127.0.0.1", port, "/v1/decide", body, "wrong-key-0123456789", 2, 20.0, 0.2))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert 35 <= figures["requests"] <= 45 and figures["non_2xx"] == 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert bad_key["non_2xx"] == bad_key["requests"] > 0
