"""The decision backend process: the same answers as worker threads (status codes, bodies, kept bars, metrics),
admission and timeouts counted by the front, a killed backend answered 503 + Retry-After and restarted, and the
backend's own metrics on the front's /metrics."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from himari.serve.app import ServeConfig, create_app
from himari.serve.auth import ApiKeys
from tests.paper.fakes import FakeEngine
from tests.serve.test_app import AUTH, KEY, account_factory, make_rows

CONFIG = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="7", history_bars=64)
FORK = multiprocessing.get_context("fork")
HEADERS = {**AUTH, "content-type": "application/json"}


class _FileFlag:
    """A flag that survives fork and kill (a file), unlike a multiprocessing Event whose waiter may die holding it."""

    def __init__(self, path) -> None:
        self.path = path

    def set(self) -> None:
        self.path.touch()

    def is_set(self) -> bool:
        return self.path.exists()

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.is_set()


class GatedEngine(FakeEngine):
    """Decides only when released; the flags are files, so the test controls the forked backend."""

    def __init__(self, tmp_path) -> None:
        super().__init__(("BTCUSDT",))
        self.release = _FileFlag(tmp_path / "release")
        self.entered = _FileFlag(tmp_path / "entered")

    def decide(self, bars_by_symbol, account=None):
        self.entered.set()
        self.release.wait(10)
        return super().decide(bars_by_symbol, account)


def _app(backend: str, engine=None, **overrides):
    config = CONFIG.replace(backend=backend, **overrides)
    return create_app(engine or FakeEngine(("BTCUSDT",)), config, ApiKeys((KEY.encode(),)),
                      account_factory=account_factory, clock=lambda: 2e9)


def _session(client: TestClient) -> list[tuple[int, object]]:
    """A mixed session: decisions (new, memoized, kept bars), bars, every kind of bad input, state, dashboard."""
    rows = make_rows(48)
    account = {"equity": 9_000.0, "peak_equity": 10_000.0, "positions": {"BTCUSDT": 0.5}}
    gap = [r for i, r in enumerate(rows) if i != 20]
    bodies = [
        ("/v1/decide", json.dumps({"bars": {"BTCUSDT": rows}, "account": account})),
        ("/v1/decide", json.dumps({"bars": {"BTCUSDT": rows}, "account": account})),  # memoized
        ("/v1/decide", json.dumps({"symbols": ["BTCUSDT"]})),  # nothing kept yet: 422
        ("/v1/bars", json.dumps({"symbol": "BTCUSDT", "bars": rows[:40]})),
        ("/v1/bars", json.dumps({"symbol": "BTCUSDT", "bars": rows[30:]})),  # overlap skipped
        ("/v1/decide", json.dumps({"symbols": ["BTCUSDT"], "account": account})),
        ("/v1/decide", "{" * 5000),  # bounded parse: 422
        ("/v1/decide", json.dumps({"bars": {"BTCUSDT": [{**rows[0], "close": "42000"}]}})),  # strict type: 422
        ("/v1/decide", json.dumps({"bars": {"BTCUSDT": gap}})),  # gap: DataError 422 naming the row
        ("/v1/decide", json.dumps({"bars": {"ETHUSDT": rows}})),  # unknown symbol
        ("/v1/bars", json.dumps({"symbol": "ETHUSDT", "bars": rows})),
        ("/v1/decide", json.dumps({"bars": {"BTCUSDT": rows}, "account": {"equity": -1}})),
    ]
    out: list[tuple[int, object]] = []
    for path, body in bodies:
        resp = client.post(path, content=body, headers=HEADERS)
        payload = resp.json()
        if isinstance(payload, dict):
            payload.pop("latency_ms", None)
        out.append((resp.status_code, payload))
    state = client.get("/v1/state", headers=AUTH).json()
    state["last_decision"].pop("latency_ms")
    out.append((200, state))
    dashboard = client.get("/v1/dashboard", params={"points": 5}, headers=AUTH).json()
    out.append((200, dashboard["market"]))
    metrics = client.get("/metrics", headers=AUTH).text
    counted = sorted(line for line in metrics.splitlines()
                     if line.startswith(("himari_http_requests_total{", "himari_errors_total{",
                                         "himari_decision_cache_total{", "himari_decisions_total{")))
    out.append((200, counted))
    return out


def test_process_backend_answers_exactly_as_worker_threads() -> None:
    with TestClient(_app("thread")) as threads, TestClient(_app("process")) as process:
        assert process.get("/health").json()["backend"] == "process"
        assert threads.get("/health").json()["backend"] == "thread"
        expected, served = _session(threads), _session(process)
        assert [s for s, _ in expected] == [200, 200, 422, 200, 200, 200, 422, 422, 422, 422, 422, 422, 200, 200, 200]
        assert served == expected
        metrics = process.get("/metrics", headers=AUTH).text
    assert process.app.state.backend.exitcode == 0  # stopped by the app's shutdown, cleanly (not terminated)
    assert "# TYPE himari_backend_gc_pause_max_seconds gauge" in metrics  # the backend's own GC pauses
    assert metrics.count("# TYPE himari_gc_pause_max_seconds gauge") == 1  # and the front's, once
    assert "himari_backend_restarts 0.0" in metrics


def test_a_killed_backend_answers_503_and_is_restarted(tmp_path) -> None:
    engine = GatedEngine(tmp_path)
    app = _app("process", engine, workers=1, max_pending=2, request_timeout_s=20.0)
    backend = app.state.backend
    body = json.dumps({"bars": {"BTCUSDT": make_rows()}})

    async def scenario() -> dict[str, object]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post("/v1/decide", content=body, headers=HEADERS))
            while not engine.entered.is_set():
                await asyncio.sleep(0.01)
            second = asyncio.create_task(client.post("/v1/decide", content=body, headers=HEADERS))
            await asyncio.sleep(0.05)
            refused = await client.post("/v1/decide", content=body, headers=HEADERS)  # 1 running + 1 waiting
            health = await client.get("/health")  # the backend is busy, the front answers
            old_pid = backend.pid
            os.kill(old_pid, signal.SIGKILL)
            crashed = [await first, await second]
            deadline = time.monotonic() + 30
            while (await client.get("/health")).json()["backend_restarts"] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            engine.release.set()
            after = await client.post("/v1/decide", content=body, headers=HEADERS)
            metrics = (await client.get("/metrics", headers=AUTH)).text
            return {"refused": refused, "health": health, "crashed": crashed, "after": after, "metrics": metrics,
                    "old_pid": old_pid}

    try:
        got = asyncio.run(scenario())
    finally:
        backend.close()
    assert got["refused"].status_code == 503 and "busy" in got["refused"].json()["error"]
    assert got["health"].status_code == 200
    for resp in got["crashed"]:
        assert resp.status_code == 503 and int(resp.headers["Retry-After"]) >= 1
        assert "restarting" in resp.json()["error"]
    assert got["after"].status_code == 200 and backend.pid != got["old_pid"]
    metrics = got["metrics"]
    assert 'himari_http_rejected_total{reason="backend_crash"} 2.0' in metrics
    assert 'himari_http_rejected_total{reason="queue_full"} 1.0' in metrics
    assert 'himari_http_requests_total{route="/v1/decide",status="503"} 3.0' in metrics
    assert 'himari_http_requests_total{route="/v1/decide",status="200"} 1.0' in metrics
    assert "himari_backend_restarts 1.0" in metrics
    assert "himari_worker_pool_pending 0.0" in metrics  # the crashed jobs were released
    assert not is_alive(got["old_pid"]) and not is_alive(backend.pid)  # closed: no child left


def test_a_request_not_done_in_time_is_503_and_the_late_answer_frees_its_slot(tmp_path) -> None:
    engine = GatedEngine(tmp_path)
    with TestClient(_app("process", engine, workers=1, max_pending=1, request_timeout_s=0.3)) as client:
        resp = client.post("/v1/decide", json={"bars": {"BTCUSDT": make_rows()}}, headers=AUTH)
        assert resp.status_code == 503 and "did not finish within 0.3 s" in resp.json()["error"]
        assert "Retry-After" in resp.headers
        busy = client.post("/v1/decide", json={"bars": {"BTCUSDT": make_rows()}}, headers=AUTH)
        assert busy.status_code == 503 and "busy" in busy.json()["error"]  # still running in the backend
        engine.release.set()
        deadline = time.monotonic() + 10
        while client.app.state.backend.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.post("/v1/decide", json={"bars": {"BTCUSDT": make_rows()}}, headers=AUTH).status_code == 200
        metrics = client.get("/metrics", headers=AUTH).text
    assert 'himari_http_rejected_total{reason="timeout"} 1.0' in metrics
    assert 'himari_http_rejected_total{reason="queue_full"} 1.0' in metrics


def is_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_server_stops_its_backend(sig: int) -> None:
    """A server run in a child of its own (as ``himari serve`` runs) leaves no backend behind, however stopped."""
    ready = FORK.Event()
    server = FORK.Process(target=_serve_fake, args=(ready,))
    server.start()
    try:
        assert ready.wait(60)
        deadline = time.monotonic() + 10
        while not children_of(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        backends = children_of(server.pid)
        assert len(backends) == 1
        os.kill(server.pid, sig)
        server.join(30)
        assert server.exitcode is not None
        deadline = time.monotonic() + 10
        while is_alive(backends[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_alive(backends[0])
    finally:
        if server.is_alive():
            server.kill()
            server.join(10)


def _serve_fake(ready) -> None:
    import socket

    import uvicorn

    app = _app("process")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    original = server.startup

    async def startup(sockets=None):
        await original(sockets)
        ready.set()

    server.startup = startup
    server.run()


def test_backend_config_is_validated() -> None:
    from himari.errors import ConfigError

    with pytest.raises(ConfigError, match="backend"):
        ServeConfig.parse({**CONFIG.model_dump(), "backend": "fork"})
    assert CONFIG.backend == "thread"  # create_app's default: in-process test clients stay cheap
