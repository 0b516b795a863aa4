"""``himari bench serve``: decision latency of the API under concurrent load, on loopback.

The benchmark starts ``himari serve`` in a subprocess (API key on, access log off), feeds it the last
``--history-bars`` bars of each symbol (``POST /v1/bars``) and loads ``POST /v1/decide`` with one of two
generators:

- ``wrk`` (closed loop; ``apt-get install -y wrk``): ``--connections`` connections each send the next request as soon
  as the previous answer arrives. Latency percentiles from wrk's ``--latency`` report; at saturation they measure
  queueing (about connections / throughput), so this mode gives the throughput ceiling.
- ``python`` (open loop, coordinated-omission safe): ``--connections`` asyncio keep-alive connections (raw HTTP/1.1)
  send at a fixed total
  ``--rate``; each latency is measured from the request's *scheduled* send time, so a stalled server is charged for
  the requests it delayed.

Scenarios (``--scenario``): ``hot`` asks about the kept bars with no account (every client polling the current
decision: answered from the decision memo after the first request); ``decide`` disables the decision memo
(``--decision-cache 0``), so every request runs observation -> policy forward -> sizing -> all risk gates on the
memoized market data; ``soak-new`` and ``soak-same`` run :func:`himari.serve.soak.soak`: ``--connections``
closed-loop clients each POST the last ``--history-bars`` bars in the body, new data on every request (the last
bar's volume changes: no memo answers it) or one identical body, while a probe (a process of its own) times
``GET /health`` every 20 ms;
503 answers are honoured (the client waits ``Retry-After``, at most 2 s). It reports answers by status, dropped
connections, decision p50/p99 and /health p50/p99/max during the load.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import numpy as np

from himari.errors import ConfigError

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_wrk_output(text: str) -> dict[str, float]:
    """p50/p75/p90/p99 (ms), requests/s and non-2xx count from ``wrk --latency`` output."""
    out: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, flags=re.M):
        out[f"p{pct}_ms"] = float(value) * _UNITS_MS[unit]
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps:
        out["requests_per_s"] = float(rps.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    errors = re.search(r"Socket errors:.*?timeout (\d+)", text)
    out["timeouts"] = float(errors.group(1)) if errors else 0.0
    if "p99_ms" not in out:
        raise ConfigError(f"could not parse wrk output:\n{text[-2000:]}")
    return out


def _lua_script(body: str, key: str) -> str:
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    return (
        'wrk.method = "POST"\n'
        f'wrk.body = "{escaped}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["X-API-Key"] = "{key}"\n'
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with Content-Length; return the status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    if length:
        await reader.readexactly(length)
    return status


async def _open_loop(host: str, port: int, path: str, body: bytes, key: str, connections: int, rate: float,
                     duration_s: float) -> dict[str, float]:
    """Open-loop load: ``connections`` keep-alive connections, each sending every ``connections / rate`` seconds.

    Raw HTTP/1.1 over asyncio streams (a few tens of microseconds per request on the client side, so the generator
    does not become the bottleneck the way a full HTTP client library would). Latency is measured from the
    scheduled send time (coordinated omission safe).
    """
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    interval = connections / rate  # each connection's period
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    start = clock() + 0.5

    async def worker(i: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        k = 0
        try:
            while True:
                scheduled = start + (i / connections) * interval + k * interval
                if scheduled - start > duration_s:
                    return
                delay = scheduled - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(clock() - scheduled)
                if status != 200:
                    errors += 1
                k += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = clock() - start
    lat_ms = np.array(latencies) * 1e3
    return {
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p90_ms": float(np.percentile(lat_ms, 90)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "max_ms": float(lat_ms.max()),
        "requests_per_s": len(lat_ms) / elapsed,
        "non_2xx": float(errors),
        "requests": float(len(lat_ms)),
    }


def run_serve_bench(
    run: str,
    scenario: str,
    tool: str,
    connections: int,
    duration_s: float,
    rate: float,
    history_bars: int,
    wrk_threads: int = 2,
    workers: int = 0,
) -> dict[str, Any]:
    """Start the server, seed bars, run the load, stop the server; return the figures."""
    import httpx

    from himari.data.loaders import load_bars
    from himari.trading.bundle import find_bundle_dir
    from himari.utils.io import read_json

    meta = read_json(find_bundle_dir(run) / "bundle.json")
    symbols = list(meta["symbols"])
    if tool == "wrk" and scenario in ("hot", "decide") and shutil.which("wrk") is None:
        raise ConfigError("wrk is not installed (apt-get install -y wrk), or use --tool python")
    key = secrets.token_hex(16)
    port = _free_port()
    env = {**os.environ, "HIMARI_API_KEY": key}
    cmd = [
        sys.executable,
        "-m",
        "himari",
        "serve",
        "--run",
        str(run),
        "--port",
        str(port),
        "--history-bars",
        str(history_bars),
        "--log-level",
        "warning",
        "--no-access-log",
        "--workers",
        str(workers),
    ]
    if scenario == "decide":
        cmd += ["--decision-cache", "0"]
    if scenario.startswith("soak"):
        return _run_soak(run, cmd, key, port, symbols, scenario, connections, duration_s, history_bars)
    if scenario == "new-bar":
        return _run_new_bar(cmd, key, port, symbols, history_bars, new_bars=max(10, int(duration_s * 10)))
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise ConfigError(f"himari serve exited: {server.stdout.read() if server.stdout else ''}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ConfigError("himari serve did not become healthy within 180 s")
            time.sleep(0.25)
        headers = {"X-API-Key": key}
        for symbol in symbols:
            bars = load_bars(symbol)
            bars = bars.with_frame(bars.frame.iloc[-history_bars:])
            ms = bars.timestamps_ns // 1_000_000
            rows = [
                {"timestamp": int(t), "open": o, "high": h, "low": lo, "close": c, "volume": v}
                for t, o, h, lo, c, v in zip(
                    ms.tolist(), bars.open, bars.high, bars.low, bars.close, bars.volume, strict=True
                )
            ]
            resp = httpx.post(
                f"{base}/v1/bars",
                json={"symbol": symbol, "bars": rows, "reset": True},
                headers=headers,
                timeout=60,
            )
            if resp.status_code != 200:
                raise ConfigError(f"seeding bars for {symbol} failed: {resp.text}")
        body = json.dumps({"symbols": symbols})
        warm = httpx.post(
            f"{base}/v1/decide",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
            timeout=120,
        )
        if warm.status_code != 200:
            raise ConfigError(f"warm-up decision failed: {warm.text}")
        for _ in range(20):
            httpx.post(
                f"{base}/v1/decide", content=body, headers={**headers, "Content-Type": "application/json"}
            )
        if tool == "wrk":
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
                handle.write(_lua_script(body, key))
                script = handle.name
            try:
                wrk = subprocess.run(
                    [
                        "wrk",
                        f"-t{wrk_threads}",
                        f"-c{connections}",
                        f"-d{duration_s:g}s",
                        "--latency",
                        "-s",
                        script,
                        f"{base}/v1/decide",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=duration_s + 60,
                )
            finally:
                Path(script).unlink(missing_ok=True)
            figures: dict[str, Any] = parse_wrk_output(wrk.stdout)
            figures["raw"] = wrk.stdout
        else:
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
            figures = asyncio.run(
                _open_loop("127.0.0.1", port, "/v1/decide", body.encode(), key, connections, rate, duration_s)
            )
        metrics = httpx.get(f"{base}/metrics", headers=headers).text
        server_side = [
            line for line in metrics.splitlines() if line.startswith("himari_decision_latency_seconds_")
        ]
        figures["server_decision_latency"] = server_side
    finally:
        _stop_server(server)
    figures.update(
        {
            "scenario": scenario,
            "tool": tool,
            "connections": connections,
            "duration_s": duration_s,
            "rate": rate if tool == "python" else None,
            "history_bars": history_bars,
            "symbols": symbols,
            "cpu_count": os.cpu_count(),
        }
    )
    return figures


def _run_new_bar(cmd: list[str], key: str, port: int, symbols: list[str], history_bars: int,
                 new_bars: int) -> dict[str, Any]:
    """``new-bar``: the server keeps ``history_bars`` bars per symbol; one client pushes each next bar
    (``POST /v1/bars``) and asks for the decision (``POST /v1/decide {"symbols": ...}``), one bar after another:
    the latency a live feed sees per new bar (features streamed bar by bar, then the decision)."""
    import httpx

    from himari.data.loaders import load_bars

    base = f"http://127.0.0.1:{port}"
    rows: dict[str, list[dict[str, Any]]] = {}
    for symbol in symbols:
        bars = load_bars(symbol)
        bars = bars.with_frame(bars.frame.iloc[-(history_bars + new_bars):])
        ms = (bars.timestamps_ns // 1_000_000).tolist()
        rows[symbol] = [{"timestamp": int(t), "open": o, "high": h, "low": lo, "close": c, "volume": v}
                        for t, o, h, lo, c, v in zip(ms, bars.open, bars.high, bars.low, bars.close, bars.volume,
                                                     strict=True)]
    server = _start(cmd, {**os.environ, "HIMARI_API_KEY": key}, base)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    decide_body = json.dumps({"symbols": symbols})
    pair_ms, decide_ms, sources = [], [], Counter()
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            for symbol in symbols:
                seed = client.post("/v1/bars", content=json.dumps({"symbol": symbol, "bars": rows[symbol][:history_bars],
                                                                   "reset": True}))
                if seed.status_code != 200:
                    raise ConfigError(f"seeding bars for {symbol} failed: {seed.text[:300]}")
            warm = client.post("/v1/decide", content=decide_body)  # the first decision builds the streams
            if warm.status_code != 200:
                raise ConfigError(f"warm-up decision failed: {warm.text[:300]}")
            for i in range(history_bars, history_bars + new_bars):
                t0 = time.perf_counter()
                for symbol in symbols:
                    pushed = client.post("/v1/bars", content=json.dumps({"symbol": symbol,
                                                                         "bars": [rows[symbol][i]]}))
                    if pushed.status_code != 200:
                        raise ConfigError(f"pushing a bar failed: {pushed.text[:300]}")
                t1 = time.perf_counter()
                answer = client.post("/v1/decide", content=decide_body)
                t2 = time.perf_counter()
                if answer.status_code != 200:
                    raise ConfigError(f"decision failed: {answer.text[:300]}")
                sources[answer.json().get("cache", "?")] += 1
                pair_ms.append((t2 - t0) * 1e3)
                decide_ms.append((t2 - t1) * 1e3)
    finally:
        _stop_server(server)
    pair, dec = np.asarray(pair_ms), np.asarray(decide_ms)
    return {"scenario": "new-bar", "tool": "python", "connections": 1, "history_bars": history_bars,
            "symbols": symbols, "new_bars": new_bars, "cache": dict(sources),
            "p50_ms": float(np.percentile(pair, 50)), "p99_ms": float(np.percentile(pair, 99)),
            "max_ms": float(pair.max()), "decide_p50_ms": float(np.percentile(dec, 50)),
            "decide_p99_ms": float(np.percentile(dec, 99)), "cpu_count": os.cpu_count()}


def _start(cmd: list[str], env: dict[str, str], base: str) -> subprocess.Popen[str]:
    import httpx

    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while True:
        if server.poll() is not None:
            raise ConfigError(f"himari serve exited: {server.stdout.read() if server.stdout else ''}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise ConfigError("himari serve did not become healthy within 180 s")
        time.sleep(0.25)


def _run_soak(run: str, cmd: list[str], key: str, port: int, symbols: list[str], scenario: str, connections: int,
              duration_s: float, history_bars: int) -> dict[str, Any]:
    """``soak-new`` / ``soak-same``: many clients posting bar histories (see the module docstring)."""
    import httpx

    from himari.data.loaders import load_bars
    from himari.serve.soak import soak

    base = f"http://127.0.0.1:{port}"
    parts = []
    lasts = []
    for symbol in symbols:
        bars = load_bars(symbol)
        bars = bars.with_frame(bars.frame.iloc[-history_bars:])
        ms = (bars.timestamps_ns // 1_000_000).tolist()
        rows = [{"timestamp": int(t), "open": o, "high": h, "low": lo, "close": c, "volume": v}
                for t, o, h, lo, c, v in zip(ms, bars.open, bars.high, bars.low, bars.close, bars.volume, strict=True)]
        parts.append(json.dumps(symbol) + ": " + json.dumps(rows[:-1])[:-1])
        lasts.append(rows[-1])

    def body(i: int) -> bytes:
        chunks = []
        for part, last in zip(parts, lasts, strict=True):
            row = dict(last, volume=last["volume"] + (i * 1e-3 if scenario == "soak-new" else 0.0))
            chunks.append(part + ", " + json.dumps(row) + "]")
        return ("{\"bars\": {" + ", ".join(chunks) + "}}").encode()

    server = _start(cmd, {**os.environ, "HIMARI_API_KEY": key}, base)
    try:
        warm = httpx.post(f"{base}/v1/decide", content=body(10**6), timeout=120,
                          headers={"X-API-Key": key, "Content-Type": "application/json"})
        if warm.status_code != 200:
            raise ConfigError(f"warm-up decision failed: {warm.text[:300]}")
        result = asyncio.run(soak("127.0.0.1", port, "/v1/decide", body, key, clients=connections,
                                  max_requests=1_000_000, duration_s=duration_s, probe_process=True))
        metrics = httpx.get(f"{base}/metrics", headers={"X-API-Key": key}).text
    finally:
        _stop_server(server)
    figures: dict[str, Any] = dict(result.figures())
    figures["requests_per_s"] = figures["ok_200"] / max(result.elapsed_s, 1e-9)
    figures["server_counted"] = [line for line in metrics.splitlines()
                                 if line.startswith('himari_http_requests_total{route="/v1/decide"')]
    for line in metrics.splitlines():  # the server's longest GC pause per generation (the GIL is held meanwhile)
        if line.startswith("himari_gc_pause_max_seconds{"):
            generation = line.split('generation="')[1].split('"')[0]
            figures[f"gc_max_pause_gen{generation}_ms"] = float(line.rsplit(" ", 1)[1]) * 1e3
    figures.update({"scenario": scenario, "tool": "python", "connections": connections, "duration_s": duration_s,
                    "history_bars": history_bars, "symbols": symbols, "cpu_count": os.cpu_count(),
                    "body_bytes": len(body(0))})
    return figures


@click.command("serve")
@click.option(
    "--run", "run", required=True, help="Run directory with a bundle (e.g. a quick pipeline or train run)."
)
@click.option("--scenario", type=click.Choice(["hot", "decide", "soak-new", "soak-same", "new-bar"]), default="hot",
              show_default=True, help="new-bar: one client pushes 10 x --duration new bars one at a time, each "
              "followed by a decision on the kept history.")
@click.option("--tool", type=click.Choice(["wrk", "python"]), default="wrk", show_default=True)
@click.option("--connections", default=50, show_default=True, type=int)
@click.option("--duration", default=10.0, show_default=True, type=float, help="Seconds of load.")
@click.option(
    "--rate", default=200.0, show_default=True, type=float, help="python tool: total requests/s (open loop)."
)
@click.option("--history-bars", default=1000, show_default=True, type=int)
@click.option("--workers", default=0, show_default=True, type=int, help="Server worker threads (0 = cores).")
@click.option("--json", "as_json", is_flag=True)
def serve_bench(
    run: str,
    scenario: str,
    tool: str,
    connections: int,
    duration: float,
    rate: float,
    history_bars: int,
    workers: int,
    as_json: bool,
) -> None:
    """Latency of POST /v1/decide at N concurrent clients on loopback (see himari/bench/serve.py)."""
    figures = run_serve_bench(run, scenario, tool, connections, duration, rate, history_bars, workers=workers)
    raw = figures.pop("raw", None)
    if as_json:
        click.echo(json.dumps(figures, sort_keys=True))
        return
    if scenario == "new-bar":
        f = figures
        click.echo(
            f"serve new-bar: {history_bars} bars kept, {f['new_bars']} new bars pushed one at a time "
            f"(POST /v1/bars, then POST /v1/decide): p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, "
            f"max {f['max_ms']:.1f} ms; the decide request alone p50 {f['decide_p50_ms']:.1f} ms, "
            f"p99 {f['decide_p99_ms']:.1f} ms"
        )
        return
    if scenario.startswith("soak"):
        f = figures
        click.echo(
            f"serve {scenario}: {connections} clients, {duration:g} s, {f['body_bytes'] / 1e3:.0f} kB bodies "
            f"({history_bars} bars): {f['requests']:.0f} requests: {f['ok_200']:.0f} x 200, {f['busy_503']:.0f} x 503 "
            f"(Retry-After missing {f['missing_retry_after']:.0f}), other 5xx {f['server_5xx_other']:.0f}, "
            f"dropped {f['dropped']:.0f}; 200s p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms, "
            f"{f['requests_per_s']:.1f} decisions/s; /health during load p50 {f['health_p50_ms']:.1f} ms, "
            f"p99 {f['health_p99_ms']:.1f} ms, max {f['health_max_ms']:.1f} ms ({f['health_failures']:.0f} failed); "
            f"event loop process's longest GC pause {_pause(f, 'gc_max_pause_gen2_ms')} (full), "
            f"{_pause(f, 'gc_max_pause_gen1_ms')} (gen 1)"
        )
        return
    if raw:
        click.echo(raw.rstrip())
    click.echo(
        f"serve {scenario} via {tool}: {connections} connections"
        + (f" at {rate:g} req/s" if tool == "python" else " (closed loop)")
        + f": p50 {figures['p50_ms']:.2f} ms, p90 {figures.get('p90_ms', float('nan')):.2f} ms, "
        f"p99 {figures['p99_ms']:.2f} ms, {figures['requests_per_s']:.0f} req/s, non-2xx {figures['non_2xx']:.0f}"
    )


def register_bench(group: click.Group) -> None:
    group.add_command(serve_bench)


def _pause(figures: dict, key: str) -> str:
    """A GC pause figure for the one-line summary ("none" when no collection of that generation happened)."""
    import math

    value = figures.get(key, math.nan)
    return "none" if not math.isfinite(value) else f"{value:.1f} ms"


def _stop_server(server: subprocess.Popen) -> None:
    """Stop the benchmarked ``himari serve`` (SIGTERM, then SIGKILL after 20 s)."""
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()

