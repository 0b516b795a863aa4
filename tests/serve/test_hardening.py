"""Hostile input and overload: bounded number parsing, short error bodies, strict types, plausibility, one API key
header, 503 + Retry-After from the bounded worker pool (never a dropped request or a 5xx otherwise)."""

from __future__ import annotations

import asyncio
import copy
import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from himari.serve.app import ServeConfig, create_app
from himari.serve.auth import ApiKeys
from himari.serve.schemas import parse_json_body
from tests.paper.fakes import FakeEngine
from tests.serve.test_app import AUTH, KEY, account_factory, make_rows

CONFIG = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="7", history_bars=64)


def _app(engine=None, **overrides):

    config = CONFIG.replace(**overrides)
    return create_app(engine or FakeEngine(("BTCUSDT",)), config, ApiKeys((KEY.encode(),)),
                      account_factory=account_factory)


@pytest.fixture()
def client() -> TestClient:
    return TestClient(_app())


def _post(client: TestClient, path: str, raw: str | bytes):
    return client.post(path, content=raw, headers={**AUTH, "content-type": "application/json"})


def _rows_json(rows: list[dict], field: str, row: int, token: str) -> str:
    rows = copy.deepcopy(rows)
    rows[row][field] = "@@"
    return json.dumps({"bars": {"BTCUSDT": rows}}).replace('"@@"', token)


@pytest.mark.parametrize("path", ["/v1/decide", "/v1/bars"])
@pytest.mark.parametrize("token", ["1" + "0" * 399, "-" + "9" * 400, "1." + "0" * 5000, "1e999", "9" * 300_000])
def test_huge_numbers_are_422_with_a_short_answer(client: TestClient, path: str, token: str) -> None:
    body = _rows_json(make_rows(20), "timestamp", 3, token)
    if path == "/v1/bars":
        body = body.replace('{"bars": {"BTCUSDT": ', '{"symbol": "BTCUSDT", "bars": ')[:-1]
    resp = _post(client, path, body)
    assert resp.status_code == 422, resp.text[:300]
    assert len(resp.content) < 2000
    assert "limit" in resp.json()["error"] or "float64 range" in resp.json()["error"], resp.json()


def test_three_huge_numbers_in_a_megabyte_are_refused_without_echo(client: TestClient) -> None:
    body = '{"bars": {"BTCUSDT": [' + ",".join(["3" * 300_000] * 3) + "]}}"
    resp = _post(client, "/v1/decide", body)
    assert resp.status_code == 422 and len(resp.content) < 2000
    long_text = _rows_json(make_rows(20), "timestamp", 0, json.dumps("x" * 1_000_000))
    resp = _post(client, "/v1/decide", long_text)
    assert resp.status_code == 422 and len(resp.content) < 2000 and "1000000 characters" in resp.text
    key = json.dumps({"bars": {"B" * 500_000: make_rows(20)}})
    resp = _post(client, "/v1/decide", key)
    assert resp.status_code == 422 and len(resp.content) < 2000
    nested = "[" * 100_000 + "]" * 100_000
    resp = _post(client, "/v1/decide", nested)
    assert resp.status_code == 422 and len(resp.content) < 2000


def test_parse_json_body_bounds() -> None:
    assert parse_json_body(b'{"a": 1700000000000, "b": 1.5e-3, "c": [true, null]}') == {
        "a": 1700000000000, "b": 1.5e-3, "c": [True, None]}
    for raw in (b"", b"\xff", b"NaN", b"[Infinity]", b"1" * 20, b"{"):
        with pytest.raises(ValueError):
            parse_json_body(raw)


BAD = {
    "price 1e-300": (lambda r: r[5].update(open=1e-300, high=r[5]["high"], low=1e-300), "below the plausible minimum"),
    "1000x jump": (lambda r: [x.update(open=x["open"] * 1000, high=x["high"] * 1000, low=x["low"] * 1000,
                                       close=x["close"] * 1000) for x in r[10:]], "row 10: close: close"),
    "string number": (lambda r: r[4].update(close="42000"), "valid number"),
    "boolean number": (lambda r: r[4].update(volume=True), "valid number"),
    "boolean timestamp": (lambda r: r[4].update(timestamp=True), "timestamp"),
}


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("path", ["/v1/decide", "/v1/bars"])
def test_doubtful_bars_are_refused(client: TestClient, name: str, path: str) -> None:
    patch, expected = BAD[name]
    rows = make_rows(30)
    patch(rows)
    body = {"bars": {"BTCUSDT": rows}} if path == "/v1/decide" else {"symbol": "BTCUSDT", "bars": rows}
    resp = client.post(path, json=body, headers=AUTH)
    assert resp.status_code == 422, (name, resp.text)
    assert expected in resp.json()["error"], resp.json()
    assert client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": make_rows(30)}, headers=AUTH).status_code == 200
    if path == "/v1/bars":  # and a flag must be a JSON boolean
        resp = client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": make_rows(3), "reset": 1}, headers=AUTH)
        assert resp.status_code == 422 and "reset" in resp.json()["error"]


def test_one_api_key_header_no_server_paths_one_model_version(tmp_path) -> None:
    from himari.paper.store import PaperStore

    db = tmp_path / "secret-dir" / "paper.sqlite"
    PaperStore(db).close()
    client = TestClient(_app(paper_db=str(db)))
    two = client.get("/v1/state", headers=[("X-API-Key", "wrong-key-0123456789"), ("X-API-Key", KEY)])
    assert two.status_code == 400 and "exactly one" in two.json()["error"]
    assert client.get("/v1/state", headers=[("X-API-Key", KEY), ("X-API-Key", KEY)]).status_code == 400
    state = client.get("/v1/state", headers=AUTH)
    assert state.status_code == 200 and str(tmp_path) not in state.text and state.json()["paper"]["db"] == "paper.sqlite"
    decision = client.post("/v1/decide", json={"bars": {"BTCUSDT": make_rows()}}, headers=AUTH).json()
    assert decision["model_version"] == client.get("/health").json()["model_version"] == "7"


class BlockingEngine(FakeEngine):
    """Decides only when released: holds a worker so the test controls the pool's occupancy."""

    def __init__(self) -> None:
        super().__init__(("BTCUSDT",))
        self.release = threading.Event()
        self.entered = threading.Event()

    def decide(self, bars_by_symbol, account=None):
        self.entered.set()
        self.release.wait(10)
        return super().decide(bars_by_symbol, account)


def test_full_pool_answers_503_with_retry_after_and_health_stays_up() -> None:
    engine = BlockingEngine()
    app = _app(engine, workers=1, max_pending=2, request_timeout_s=5.0)
    body = json.dumps({"bars": {"BTCUSDT": make_rows()}})
    headers = {**AUTH, "content-type": "application/json"}

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post("/v1/decide", content=body, headers=headers))
            while not engine.entered.is_set():
                await asyncio.sleep(0.01)
            second = asyncio.create_task(client.post("/v1/decide", content=body, headers=headers))
            await asyncio.sleep(0.05)
            refused = await client.post("/v1/decide", content=body, headers=headers)  # 1 running + 1 waiting
            health = await client.get("/health")  # answered while the worker is busy: decisions are off the loop
            engine.release.set()
            done = [await first, await second, refused]
            metrics = (await client.get("/metrics", headers=AUTH)).text
            return done, health, metrics

    (first, second, refused), health, metrics = asyncio.run(scenario())
    assert first.status_code == 200 and second.status_code == 200
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "busy" in refused.json()["error"]
    assert health.status_code == 200
    assert 'himari_http_requests_total{route="/v1/decide",status="503"} 1.0' in metrics
    assert 'himari_http_requests_total{route="/v1/decide",status="200"} 2.0' in metrics
    assert 'himari_http_rejected_total{reason="queue_full"} 1.0' in metrics


def test_a_request_not_done_in_time_is_503_and_its_late_result_is_dropped() -> None:
    engine = BlockingEngine()
    client = TestClient(_app(engine, workers=1, request_timeout_s=0.2))
    resp = client.post("/v1/decide", json={"bars": {"BTCUSDT": make_rows()}}, headers=AUTH)
    assert resp.status_code == 503 and "did not finish within 0.2 s" in resp.json()["error"]
    assert "Retry-After" in resp.headers
    engine.release.set()
    assert client.post("/v1/decide", json={"bars": {"BTCUSDT": make_rows()}}, headers=AUTH).status_code == 200
    assert 'himari_http_rejected_total{reason="timeout"} 1.0' in client.get("/metrics", headers=AUTH).text


def test_random_bytes_and_structures_never_give_5xx() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client = TestClient(_app())
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=20))
    trees = st.recursive(leaves, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                         max_leaves=20)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=st.one_of(st.binary(max_size=200), trees.map(lambda t: json.dumps(t).encode())),
           path=st.sampled_from(["/v1/decide", "/v1/bars"]))
    def check(raw: bytes, path: str) -> None:
        resp = _post(client, path, raw)
        assert resp.status_code in (200, 422), resp.text
        assert len(resp.content) < 4000

    check()


def test_the_same_body_again_is_answered_without_parsing_it_again(monkeypatch) -> None:
    import himari.serve.app as app_module

    calls = []
    real = app_module._validate
    monkeypatch.setattr(app_module, "_validate", lambda model, body: calls.append(len(body)) or real(model, body))
    engine = FakeEngine(("BTCUSDT",))
    client = TestClient(_app(engine))
    body = json.dumps({"bars": {"BTCUSDT": make_rows()}})
    first = _post(client, "/v1/decide", body)
    again = _post(client, "/v1/decide", body)
    assert first.status_code == again.status_code == 200 and len(calls) == 1
    other = _post(client, "/v1/decide", body.replace('"volume": 10.0', '"volume": 10.5'))  # new data: parsed
    assert other.status_code == 200 and len(calls) == 2
    assert {k: v for k, v in again.json().items() if k not in ("latency_ms", "cache")} == {
        k: v for k, v in first.json().items() if k not in ("latency_ms", "cache")}
