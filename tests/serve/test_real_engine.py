"""The API on a real bundle: served decisions equal DecisionEngine.decide, kept bars work, `himari serve` runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from himari.cli.main import cli
from himari.data.loaders import load_bars
from himari.serve.app import create_app, serve_config_from_bundle
from himari.serve.auth import ApiKeys
from himari.trading.bundle import load_bundle
from himari.trading.engine import AccountSnapshot, DecisionEngine
from tests.serve.test_backend import children_of, is_alive

KEY = "real-engine-key-0123456789"
AUTH = {"X-API-Key": KEY}
HISTORY = 400


def _rows(bars) -> list[dict]:
    ms = bars.timestamps_ns // 1_000_000
    return [{"timestamp": int(t), "open": o, "high": h, "low": lo, "close": c, "volume": v}
            for t, o, h, lo, c, v in zip(ms.tolist(), bars.open, bars.high, bars.low, bars.close, bars.volume,
                                         strict=True)]


def _strip(d: dict) -> dict:
    # model_version: the API answers with the bundle's version (as /health does); the engine with himari's
    return {k: v for k, v in d.items() if k not in ("latency_ms", "cache", "model_version")}


@pytest.fixture(scope="module")
def recent():
    return load_bars("BTCUSDT").between("2022-03-10", "2022-04-01").head(HISTORY)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_served_decisions_equal_the_engine(mlp_run: Path, recent, backend: str) -> None:
    bundle = load_bundle(mlp_run)
    config = serve_config_from_bundle(bundle, HISTORY, allow_gaps=False, paper_db=None).replace(backend=backend)
    with TestClient(create_app(DecisionEngine(bundle, history_bars=HISTORY), config,
                               ApiKeys((KEY.encode(),)))) as client:
        _check_served_decisions(client, mlp_run, recent)


def _check_served_decisions(client: TestClient, mlp_run: Path, recent) -> None:
    reference = DecisionEngine(load_bundle(mlp_run), history_bars=HISTORY)
    account = {"equity": 9_000.0, "peak_equity": 10_000.0, "positions": {"BTCUSDT": 0.5},
               "entry_prices": {"BTCUSDT": float(recent.close[-10])}, "time_in_position": {"BTCUSDT": 9}}
    served = client.post("/v1/decide", json={"bars": {"BTCUSDT": _rows(recent)}, "account": account}, headers=AUTH)
    assert served.status_code == 200, served.text
    expected = reference.decide({"BTCUSDT": recent}, AccountSnapshot(
        9_000.0, 10_000.0, np.array([0.5]), np.array([float(recent.close[-10])]), np.array([9])))
    body = served.json()
    assert _strip(body) == _strip(expected.to_dict())
    assert body["model_version"] == client.get("/health").json()["model_version"] == "seed0"
    assert body["cache"] == "none" and len(body["gates"]) >= 8
    assert all({"name", "scale", "reason"} <= set(g) for g in body["gates"])
    # the same bars kept by the server: the market is memoized, the decision path is the same
    posted = client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": _rows(recent)}, headers=AUTH)
    assert posted.json()["n_bars"] == HISTORY
    again = client.post("/v1/decide", json={"symbols": ["BTCUSDT"], "account": account}, headers=AUTH).json()
    assert again["cache"] == "decision" and _strip(again) == _strip(body)  # same bar, same account: same answer
    other = client.post("/v1/decide", json={"symbols": ["BTCUSDT"], "account": {**account, "equity": 9_500.0}},
                        headers=AUTH).json()
    assert other["cache"] == "market" and other["regime_posterior"] == body["regime_posterior"]
    # a new bar invalidates the memo
    nxt = load_bars("BTCUSDT").between(recent.index[-1], "2022-04-02").head(2).head(2)
    client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": _rows(nxt)}, headers=AUTH)
    newer = client.post("/v1/decide", json={"symbols": ["BTCUSDT"]}, headers=AUTH).json()
    assert newer["cache"] == "none" and newer["timestamp"] > body["timestamp"]
    metrics = client.get("/metrics", headers=AUTH).text
    assert 'himari_decision_cache_total{result="decision"} 1.0' in metrics
    assert 'himari_decision_cache_total{result="market"} 1.0' in metrics


def test_too_little_history_is_a_clear_422(mlp_run: Path, recent) -> None:
    bundle = load_bundle(mlp_run)
    config = serve_config_from_bundle(bundle, HISTORY, allow_gaps=False, paper_db=None)
    client = TestClient(create_app(DecisionEngine(bundle, history_bars=HISTORY), config, ApiKeys((KEY.encode(),))))
    resp = client.post("/v1/decide", json={"bars": {"BTCUSDT": _rows(recent.head(5))}}, headers=AUTH)
    assert resp.status_code == 422 and "at least" in resp.json()["error"]
    bad_account = client.post("/v1/decide", json={"bars": {"BTCUSDT": _rows(recent)},
                                                  "account": {"equity": 1.0, "positions": {"ETHUSDT": 0.1}}}, headers=AUTH)
    assert bad_account.status_code == 422 and "ETHUSDT" in bad_account.json()["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_himari_serve_command(tmp_path: Path, mlp_run: Path, recent) -> None:
    port = _free_port()
    base = [sys.executable, "-m", "himari", "serve", "--run", str(mlp_run), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "HIMARI_API_KEY"}
    runner = CliRunner()
    refused = runner.invoke(cli, base[3:], env={"HIMARI_API_KEY": ""})
    assert refused.exit_code == 2 and "no API key configured" in refused.output
    open_remote = runner.invoke(cli, [*base[3:], "--host", "0.0.0.0", "--allow-open-loopback"], env={"HIMARI_API_KEY": ""})
    assert open_remote.exit_code == 2 and "not loopback" in open_remote.output
    key_file = tmp_path / "keys"
    key_file.write_text(KEY + "\n")
    proc = subprocess.Popen([*base, "--api-key-file", str(key_file), "--history-bars", str(HISTORY),
                             "--access-log", "--log-level", "info"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("server did not start")
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["backend"] == "process"  # the default
        backends = children_of(proc.pid)
        assert len(backends) == 1  # the decision backend
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/decide", json={"bars": {"BTCUSDT": _rows(recent)}},
                          headers=AUTH, timeout=60)
        assert resp.status_code == 200 and resp.json()["model_id"] == "mlp-test"
        assert "/v1/decide" in httpx.get(f"http://127.0.0.1:{port}/openapi.json", headers=AUTH).json()["paths"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "POST /v1/decide" in out  # access log on
    assert not any(is_alive(pid) for pid in backends)  # no orphaned backend after Ctrl-C
    assert KEY not in out  # the key is never logged


def test_self_check_decides_on_a_synthetic_market(mlp_run) -> None:
    from himari.errors import ConfigError, DataError
    from himari.serve.decider import self_check

    engine = DecisionEngine(load_bundle(mlp_run), history_bars=600)
    self_check(engine, ("BTCUSDT",), "1h", 600)  # a sound bundle passes

    class Broken:
        def decide(self, bars, account):
            raise DataError("features are NaN")

    with pytest.raises(ConfigError, match="cannot decide on a synthetic market: features are NaN"):
        self_check(Broken(), ("BTCUSDT",), "1h", 50)

    class NonFinite:
        def decide(self, bars, account):
            class D:
                def to_dict(self):
                    return {"target_position": [float("nan")]}

            return D()

    with pytest.raises(ConfigError, match="non-finite target"):
        self_check(NonFinite(), ("BTCUSDT",), "1h", 50)
