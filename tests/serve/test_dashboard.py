"""The dashboard's data, the OpenAPI docs with the X-API-Key scheme, and both pages in a real headless Chromium
against a live uvicorn server with a paper-trading database."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from himari.paper.runner import run_paper_command
from himari.paper.store import PaperStore
from himari.regime.palette import REGIME_COLOUR_BY_NAME
from himari.serve.app import ServeConfig, create_app
from himari.serve.auth import ApiKeys
from tests.paper.factory import fake_session_factory
from tests.paper.fakes import FakeEngine
from tests.serve.test_app import KEY, make_rows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def paper_db(tmp_path: Path, replay_csv: Path) -> Path:
    db = tmp_path / "paper.sqlite"
    run_paper_command("m", [f"replay:{replay_csv}"], db, shadow="m-contrarian", session_factory=fake_session_factory,
                      max_bars=120)
    return db


def _app(paper_db: Path, backend: str = "thread"):
    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="0",
                         paper_db=str(paper_db), backend=backend)
    return create_app(FakeEngine(("BTCUSDT",)), config, ApiKeys((KEY.encode(),)))


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_state_endpoint_reports_paper_equity_and_positions(paper_db: Path, backend: str) -> None:
    with TestClient(_app(paper_db, backend)) as client:
        _check_state(client, paper_db)


def _check_state(client: TestClient, paper_db: Path) -> None:
    state = client.get("/v1/state", headers={"X-API-Key": KEY}).json()
    with PaperStore(paper_db, readonly=True) as store:
        _, equity, _ = store.equity_curve("champion")
        positions = store.last_positions("champion")
    champion = state["paper"]["streams"]["champion"]
    assert champion["equity"][-1] == pytest.approx(equity[-1]) and len(champion["equity"]) == 120
    assert champion["positions"] == positions and set(state["paper"]["streams"]) == {"champion", "shadow"}
    metrics = client.get("/metrics", headers={"X-API-Key": KEY}).text
    assert 'himari_equity{stream="paper:champion"}' in metrics


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_dashboard_data_matches_the_paper_database(paper_db: Path, backend: str) -> None:
    with TestClient(_app(paper_db, backend)) as client:
        _check_dashboard(client, paper_db)


def _check_dashboard(client: TestClient, paper_db: Path) -> None:
    assert client.get("/v1/dashboard").status_code == 401
    dash = client.get("/v1/dashboard", headers={"X-API-Key": KEY}, params={"points": 50}).json()
    assert list(dash["streams"]) == ["champion", "shadow"] and dash["model"]["model_id"] == "fake-mlp"
    assert dash["regime_colours"]["LOW_VOL"] == REGIME_COLOUR_BY_NAME["LOW_VOL"]  # the report's palette
    champion = dash["streams"]["champion"]
    with PaperStore(paper_db, readonly=True) as store:
        ts, equity, drawdown = store.equity_curve("champion", limit=50)
        bar_ts, ohlcv = store.bar_history("BTCUSDT", 200)
        decisions = store.decisions("champion", limit=50)
        fills = store.fills("champion")
    np.testing.assert_allclose(champion["equity"], equity, rtol=1e-6)
    np.testing.assert_allclose(champion["drawdown"], drawdown, atol=1e-6)
    close = ohlcv[np.searchsorted(bar_ts, ts), 3]  # buy-and-hold over the same bars, from the same start equity
    np.testing.assert_allclose(champion["buy_and_hold"], close / close[0] * equity[0], rtol=1e-5)
    assert champion["regime"] == [d["regime"][0] for d in decisions]
    assert set(champion["gate_scales"]) == {g["name"] for d in decisions for g in d["gates"]}
    assert [f["order_id"] for f in champion["fills"]] == [f["order_id"] for f in fills[-20:]][::-1]
    shadow = dash["streams"]["shadow"]
    rows = {row["stream"]: row for row in dash["comparison"]}
    same = np.mean([a == b for a, b in zip(champion["action"], shadow["action"], strict=True)])
    assert rows["shadow"]["agreement_with_first"] == pytest.approx(same)
    assert rows["champion"]["total_return"] == pytest.approx(equity[-1] / equity[0] - 1)
    assert dash["market"]["BTCUSDT"]["source"] == "paper bars"


def test_openapi_declares_the_api_key_scheme_and_is_behind_the_key(paper_db: Path) -> None:
    client = TestClient(_app(paper_db))
    assert client.get("/openapi.json").status_code == 401
    schema = client.get("/openapi.json", headers={"X-API-Key": KEY}).json()
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "An API key from the server's key file or HIMARI_API_KEYS."}
    assert schema["security"] == [{"ApiKeyAuth": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/v1/decide"]["post"]  # inherits the global requirement
    assert "/v1/dashboard" in schema["paths"]
    docs = client.get("/docs")  # the page shell is public, it holds no data
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    script = client.get("/static/plotly.min.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    open_config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="0")
    open_app = create_app(FakeEngine(("BTCUSDT",)), open_config, ApiKeys(()))  # --allow-open-loopback: no keys
    assert TestClient(open_app).get("/openapi.json").status_code == 200


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_dashboard_renders_in_headless_chromium(tmp_path: Path, paper_db: Path) -> None:
    app = _app(paper_db)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        # one live decision so the page has an API decision too
        TestClient(app).post("/v1/decide", json={"bars": {"BTCUSDT": make_rows()}}, headers={"X-API-Key": KEY})
        chromium = shutil.which(CHROMIUM) or CHROMIUM
        profile = tmp_path / "chromium-profile"

        def dump(url: str) -> str:
            out = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
                 "--virtual-time-budget=4000", "--dump-dom", url],
                capture_output=True, text=True, timeout=90,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            return out.stdout

        dom = dump(f"http://127.0.0.1:{port}/#key={KEY}")
        assert 'data-loaded="1"' in dom, dom[-3000:]
        assert "fake-mlp 0" in dom  # model line, filled from /v1/state
        assert re.search(r'<td class="(LONG|SHORT|HOLD)">(LONG|SHORT|HOLD)</td>', dom)
        assert re.search(r'<td class="regime">(LOW_VOL|TRENDING|HIGH_VOL|CRISIS)</td>', dom)
        with PaperStore(paper_db, readonly=True) as store:
            _, equity, _ = store.equity_curve("champion")
        assert f'<div class="v" id="equity">{equity[-1]:.2f}</div>' in dom
        assert 'data-stream="champion"' in dom and 'data-stream="shadow"' in dom
        for chart in ("chart-equity", "chart-regimes"):  # plotly.js (served by the app) drew both charts
            assert "main-svg" in dom.split(f'id="{chart}"')[1][:3000], chart
        assert re.search(r'<table id="comparison">.*?<td>shadow</td>', dom, flags=re.S)
        assert re.search(r'<table id="fills">.*?<td class="(buy|sell)">(buy|sell)</td>', dom, flags=re.S)
        # without the key the page asks for one instead of showing data
        locked = dump(f"http://127.0.0.1:{port}/")
        assert "API key needed" in locked and "main-svg" not in locked
        docs = dump(f"http://127.0.0.1:{port}/docs#key={KEY}")
        assert 'data-loaded="1"' in docs and 'data-path="/v1/decide"' in docs and "X-API-Key" in docs
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_dashboard_without_paper_db_shows_the_kept_bars() -> None:
    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="0")
    client = TestClient(create_app(FakeEngine(("BTCUSDT",)), config, ApiKeys((KEY.encode(),))))
    rows = make_rows(30)
    assert client.post("/v1/bars", json={"symbol": "BTCUSDT", "bars": rows}, headers={"X-API-Key": KEY}).status_code == 200
    dash = client.get("/v1/dashboard", headers={"X-API-Key": KEY}, params={"points": 20}).json()
    assert dash["streams"] == {} and dash["comparison"] == [] and dash["paper_db"] is None
    market = dash["market"]["BTCUSDT"]
    assert market["source"] == "kept bars" and len(market["close"]) == 20
    assert market["close"][-1] == pytest.approx(rows[-1]["close"])
