"""The dashboard page in a real headless Chromium, against a live uvicorn server with a paper-trading database."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from himari.paper.runner import run_paper_command
from himari.paper.store import PaperStore
from himari.serve.app import ServeConfig, create_app
from himari.serve.auth import ApiKeys
from tests.paper.factory import fake_session_factory
from tests.paper.fakes import FakeEngine
from tests.serve.test_app import KEY, make_rows

CHROMIUM = "/usr/bin/chromium"


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


def _app(paper_db: Path):
    config = ServeConfig(symbols=("BTCUSDT",), timeframe="1h", model_id="fake-mlp", model_version="0",
                         paper_db=str(paper_db))
    return create_app(FakeEngine(("BTCUSDT",)), config, ApiKeys((KEY.encode(),)))


def test_state_endpoint_reports_paper_equity_and_positions(paper_db: Path) -> None:
    client = TestClient(_app(paper_db))
    state = client.get("/v1/state", headers={"X-API-Key": KEY}).json()
    with PaperStore(paper_db, readonly=True) as store:
        _, equity, _ = store.equity_curve("champion")
        positions = store.last_positions("champion")
    champion = state["paper"]["streams"]["champion"]
    assert champion["equity"][-1] == pytest.approx(equity[-1]) and len(champion["equity"]) == 120
    assert champion["positions"] == positions and set(state["paper"]["streams"]) == {"champion", "shadow"}
    metrics = client.get("/metrics", headers={"X-API-Key": KEY}).text
    assert 'himari_equity{stream="paper:champion"}' in metrics


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
        assert dom.count("<polyline") == 2 and 'data-stream="champion"' in dom and 'data-stream="shadow"' in dom
        # without the key the page asks for one instead of showing data
        locked = dump(f"http://127.0.0.1:{port}/")
        assert "API key needed" in locked and "<polyline" not in locked
    finally:
        server.should_exit = True
        thread.join(timeout=10)
