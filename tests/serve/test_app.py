"""The API: auth on every route but health, decisions from body bars and kept bars, metrics, and bad input -> 4xx."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from himari.errors import ConfigError
from himari.serve.app import ServeConfig, create_app
from himari.serve.auth import ApiKeys, check_startup_auth, load_api_keys
from tests.paper.fakes import FakeAccountSnapshot, FakeEngine

KEY = "test-key-0123456789abcdef"
HOUR_MS = 3_600_000
T0_MS = 1_700_000_000_000 // HOUR_MS * HOUR_MS


def make_rows(n: int = 48, seed: int = 0, t0_ms: int = T0_MS) -> list[dict]:
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[30_000.0], close[:-1]])
    rows = []
    for i in range(n):
        o, c = float(open_[i]), float(close[i])
        rows.append({"timestamp": t0_ms + i * HOUR_MS, "open": o, "high": max(o, c) * 1.002,
                     "low": min(o, c) * 0.998, "close": c, "volume": 10.0 + i})
    return rows


def account_factory(account, symbols):
    return FakeAccountSnapshot(account.equity, account.peak_equity or account.equity, dict(account.positions))


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine(("BTCUSDT",))


@pytest.fixture()
def client(engine: FakeEngine) -> TestClient:
    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="0", history_bars=64)
    app = create_app(engine, config, ApiKeys((KEY.encode(),)), account_factory=account_factory, clock=lambda: 2e9)
    return TestClient(app)


AUTH = {"X-API-Key": KEY}


def test_health_needs_no_key_and_everything_else_does(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/health").json()["model_id"] == "fake-mlp"
    for method, path in [("get", "/metrics"), ("get", "/openapi.json"), ("get", "/v1/state"),
                         ("post", "/v1/decide"), ("post", "/v1/bars"), ("get", "/no-such-route")]:
        assert getattr(client, method)(path).status_code == 401, path
        assert getattr(client, method)(path, headers={"X-API-Key": KEY + "x"}).status_code == 401, path
        assert getattr(client, method)(path, headers={"X-API-Key": ""}).status_code == 401, path
    assert client.get("/metrics", headers=AUTH).status_code == 200
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert "/v1/decide" in schema["paths"] and "/v1/bars" in schema["paths"]


def test_dashboard_shell_is_public_but_holds_no_data(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/state" in page.text and "fake-mlp" not in page.text


def test_decide_with_bars_in_body(client: TestClient, engine: FakeEngine) -> None:
    rows = make_rows()
    resp = client.post("/v1/decide", json={"bars": {"BTCUSDT": rows}}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["actions"][0] in ("HOLD", "LONG", "SHORT") and body["symbols"] == ["BTCUSDT"]
    assert body["model_id"] == "fake-mlp" and body["latency_ms"] >= 0
    assert body["timestamp"].startswith("2023-11-")
    # the engine saw exactly the request's bars, last row = the just-closed bar
    closes = np.array([r["close"] for r in rows])
    expected = np.clip((closes[-1] / closes[-12:].mean() - 1) * 20, -1, 1)
    expected = 0.0 if abs(expected) < 0.05 else expected
    assert body["target_position"][0] == pytest.approx(expected)
    assert engine.calls == 1


def test_decide_with_account_applies_gates(client: TestClient) -> None:
    payload = {"bars": {"BTCUSDT": make_rows()}, "account": {"equity": 900.0, "peak_equity": 1000.0}}
    body = client.post("/v1/decide", json=payload, headers=AUTH).json()
    assert body["gates"][0]["name"] == "drawdown_brake" and body["gates"][0]["scale"] == pytest.approx(0.4)
    metrics = client.get("/metrics", headers=AUTH).text
    assert 'himari_risk_gate_activations_total{gate="drawdown_brake"} 1.0' in metrics
    value = next(line for line in metrics.splitlines() if line.startswith('himari_drawdown{stream="api"}'))
    assert float(value.rsplit(" ", 1)[1]) == pytest.approx(0.1)


def test_kept_bars_then_decide_by_symbol(client: TestClient) -> None:
    rows = make_rows(80)
    r1 = client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": rows[:40]}, headers=AUTH)
    assert r1.status_code == 200 and r1.json()["n_bars"] == 40
    # re-sending known bars is idempotent; new ones append; history stays bounded (64)
    r2 = client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": rows[30:80]}, headers=AUTH)
    assert r2.json() == {"symbol": "BTCUSDT", "n_bars": 64, "first": r2.json()["first"], "last": r2.json()["last"],
                         "appended": 40, "skipped_known": 10}
    by_symbol = client.post("/v1/decide", json={"symbols": ["BTCUSDT"]}, headers=AUTH).json()
    by_body = client.post("/v1/decide", json={"bars": {"BTCUSDT": rows[16:80]}}, headers=AUTH).json()
    by_symbol.pop("latency_ms"), by_body.pop("latency_ms")
    assert by_symbol == by_body
    state = client.get("/v1/state", headers=AUTH).json()
    assert state["kept_bars"]["BTCUSDT"]["n_bars"] == 64 and state["last_decision"]["symbols"] == ["BTCUSDT"]


def test_metrics_count_decisions_latency_and_staleness(client: TestClient) -> None:
    for seed in range(3):
        assert client.post("/v1/decide", json={"bars": {"BTCUSDT": make_rows(seed=seed)}}, headers=AUTH).status_code == 200
    text = client.get("/metrics", headers=AUTH).text
    assert "himari_decision_latency_seconds_count 3.0" in text
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("himari_decisions_total{"))
    assert counted == 3.0
    last_close_s = (T0_MS + 48 * HOUR_MS) / 1e3
    stale = next(line for line in text.splitlines() if line.startswith('himari_data_staleness_seconds{symbol="BTCUSDT"}'))
    assert float(stale.rsplit(" ", 1)[1]) == pytest.approx(2e9 - last_close_s)
    assert 'himari_model_info{model_id="fake-mlp",model_version="0"} 1.0' in text
    assert 'himari_regime_probability{regime=' in text


def _bad(rows_patch):
    rows = make_rows(30)
    rows_patch(rows)
    return {"bars": {"BTCUSDT": rows}}


BAD_BODIES = {
    "negative price": (_bad(lambda r: r[5].update(open=-1.0)), "bars.BTCUSDT.5.open"),
    "zero close": (_bad(lambda r: r[3].update(close=0.0)), "bars.BTCUSDT.3.close"),
    "high below close": (_bad(lambda r: r[7].update(high=r[7]["close"] * 0.5)), "high"),
    "low above open": (_bad(lambda r: r[7].update(low=r[7]["open"] * 2)), "low"),
    "negative volume": (_bad(lambda r: r[2].update(volume=-5)), "volume"),
    "string price": (_bad(lambda r: r[2].update(close="abc")), "close"),
    "missing field": (_bad(lambda r: r[4].pop("volume")), "volume"),
    "extra field": (_bad(lambda r: r[4].update(vwap=1.0)), "vwap"),
    "seconds as timestamp": (_bad(lambda r: r[0].update(timestamp=1_700_000_000)), "milliseconds"),
    "garbage timestamp": (_bad(lambda r: r[0].update(timestamp="yesterday")), "timestamp"),
    "bool timestamp": (_bad(lambda r: r[0].update(timestamp=True)), "timestamp"),
    "unsorted": (_bad(lambda r: r.__setitem__(slice(10, 12), [r[11], r[10]])), "row 11: timestamp"),
    "duplicate": (_bad(lambda r: r.__setitem__(11, copy.deepcopy(r[10]))), "row 11"),
    "gap": (_bad(lambda r: r.__delitem__(12)), "gap: 1 bar(s) missing"),
    "off grid": (_bad(lambda r: r[0].update(timestamp=r[0]["timestamp"] + 60_000)), "not aligned"),
    "unknown symbol": ({"bars": {"BTCUSDT": make_rows(), "DOGEUSDT": make_rows()}}, "DOGEUSDT"),
    "missing symbol": ({"bars": {}}, "missing"),
    "empty bars": ({"bars": {"BTCUSDT": []}}, "no bars"),
    "both sources": ({"bars": {"BTCUSDT": make_rows()}, "symbols": ["BTCUSDT"]}, "exactly one"),
    "neither source": ({}, "exactly one"),
    "bars not a dict": ({"bars": [1, 2, 3]}, "bars"),
    "symbols not kept": ({"symbols": ["BTCUSDT"]}, "no bars held"),
    "account negative equity": ({"bars": {"BTCUSDT": make_rows()}, "account": {"equity": -1}}, "equity"),
    "account peak below equity": ({"bars": {"BTCUSDT": make_rows()}, "account": {"equity": 10, "peak_equity": 5}},
                                  "peak_equity"),
    "account absurd position": ({"bars": {"BTCUSDT": make_rows()},
                                 "account": {"equity": 10, "positions": {"BTCUSDT": 50}}}, "outside"),
    "nan via string": (_bad(lambda r: r[1].update(high="NaN")), "high"),
    "infinite": (_bad(lambda r: r[1].update(high="Infinity")), "high"),
    "too many bars": ({"bars": {"BTCUSDT": make_rows(5001)}}, "limit"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_decide_inputs_are_clear_4xx(client: TestClient, name: str) -> None:
    body, expected = BAD_BODIES[name]
    resp = client.post("/v1/decide", json=body, headers=AUTH)
    assert resp.status_code == 422, (name, resp.status_code, resp.text)
    assert expected in resp.json()["error"] or expected in str(resp.json().get("detail")), resp.json()


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b"[]", b"null", b'{"bars": null, "symbols": null}', "{\"bars\": {\"BTCUSDT\": [{\"timestamp\": \"\u00ff\"}]}}".encode()],
)
def test_malformed_bodies_are_422(client: TestClient, raw: bytes) -> None:
    resp = client.post("/v1/decide", content=raw, headers={**AUTH, "content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]


def test_bad_bars_posts(client: TestClient) -> None:
    rows = make_rows(10)
    assert client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": rows}, headers=AUTH).status_code == 200
    gap = client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": make_rows(3, t0_ms=T0_MS + 12 * HOUR_MS)}, headers=AUTH)
    assert gap.status_code == 422 and "gap: 2 bar(s) missing" in gap.json()["error"]
    changed = copy.deepcopy(rows[5])
    changed["close"] *= 1.01
    changed["high"] = max(changed["high"], changed["close"])
    rewrite = client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": [changed]}, headers=AUTH)
    assert rewrite.status_code == 422 and "differs" in rewrite.json()["error"]
    assert client.post("/v1/bars", json={"symbol": "ETHUSDT", "bars": rows}, headers=AUTH).status_code == 422
    assert client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": []}, headers=AUTH).status_code == 422
    reset = client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": make_rows(3, t0_ms=T0_MS + 40 * HOUR_MS),
                                          "reset": True}, headers=AUTH)
    assert reset.status_code == 200 and reset.json()["n_bars"] == 3


def test_oversized_body_is_413(client: TestClient) -> None:
    resp = client.post("/v1/decide", content=b" " * (9 * 1024 * 1024), headers={**AUTH, "content-type": "application/json"})
    assert resp.status_code == 413

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * (1024 * 1024)

    chunked = client.post("/v1/decide", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert chunked.status_code == 413 and "larger than" in chunked.json()["error"]
    assert client.get("/no-such-route", headers=AUTH).json() == {"error": "Not Found"}
    assert client.get("/v1/decide", headers=AUTH).status_code == 405


def test_api_key_loading_and_startup_rules(tmp_path, caplog) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# rotation\n" + KEY + "\n\nsecond-key-abcdefghijkl\n")
    keys = load_api_keys(key_file, environ={})
    assert keys.check(KEY) and keys.check("second-key-abcdefghijkl") and not keys.check(KEY[:-1])
    assert KEY not in repr(keys) and KEY not in str(keys)
    env_keys = load_api_keys(None, environ={"HIMARI_API_KEY": KEY})
    assert env_keys.check(KEY) and not env_keys.check(None)
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_api_keys(None, environ={"HIMARI_API_KEY": "short"})
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no key"):
        load_api_keys(tmp_path / "empty", environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_api_keys(tmp_path / "missing", environ={})
    none = load_api_keys(None, environ={})
    with pytest.raises(ConfigError, match="no API key configured"):
        check_startup_auth(none, "127.0.0.1", allow_open_loopback=False)
    with pytest.raises(ConfigError, match="not loopback"):
        check_startup_auth(none, "0.0.0.0", allow_open_loopback=True)
    check_startup_auth(none, "127.0.0.1", allow_open_loopback=True)
    check_startup_auth(none, "::1", allow_open_loopback=True)
    check_startup_auth(keys, "0.0.0.0", allow_open_loopback=False)
    assert KEY not in caplog.text


def test_open_loopback_mode_serves_without_key(engine: FakeEngine, caplog) -> None:
    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="m", model_version="0")
    client = TestClient(create_app(engine, config, ApiKeys(()), account_factory=account_factory))
    with caplog.at_level(logging.DEBUG):
        assert client.post("/v1/decide", json={"bars": {"BTCUSDT": make_rows()}}).status_code == 200


def test_fuzzed_bodies_never_give_500(engine: FakeEngine) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="0", history_bars=64)
    fuzz_client = TestClient(create_app(engine, config, ApiKeys((KEY.encode(),)), account_factory=account_factory))
    base = make_rows(20)
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**15, 10**15), st.floats(allow_nan=True),
                        st.text(max_size=8), st.lists(st.integers(), max_size=2))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(row=st.integers(0, 19), field=st.sampled_from(["timestamp", "open", "high", "low", "close", "volume", "x"]),
           value=scalars, drop=st.booleans(), path=st.sampled_from(["/v1/decide", "/v1/bars"]))
    def check(row: int, field: str, value: object, drop: bool, path: str) -> None:
        rows = copy.deepcopy(base)
        if drop:
            rows[row].pop(field, None)
        else:
            rows[row][field] = value
        body = {"bars": {"BTCUSDT": rows}} if path == "/v1/decide" else {"symbol": "BTCUSDT", "bars": rows, "reset": True}
        # json.dumps writes NaN / Infinity tokens as many clients do (httpx's json= refuses to encode them)
        resp = fuzz_client.post(path, content=json.dumps(body), headers={**AUTH, "content-type": "application/json"})
        assert resp.status_code in (200, 422), resp.text
        if resp.status_code == 422:
            assert resp.json()["error"]

    check()


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_numbers_are_422(engine: FakeEngine, token: str) -> None:
    """Python's json module (and many clients) write NaN/Infinity tokens; they are bad input, not a crash."""
    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="0", history_bars=64)
    client = TestClient(create_app(engine, config, ApiKeys((KEY.encode(),)), account_factory=account_factory))
    for field in ("close", "timestamp"):
        rows = make_rows(20)
        rows[5][field] = 1.0
        body = json.dumps({"bars": {"BTCUSDT": rows}}).replace('"' + field + '": 1.0', f'"{field}": {token}')
        assert f'"{field}": {token}' in body
        resp = client.post("/v1/decide", content=body, headers={**AUTH, "content-type": "application/json"})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]
