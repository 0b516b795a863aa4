"""A bounded soak load for the API on loopback: many clients, new data per request, hostile bodies, a /health probe.

:func:`soak` opens ``clients`` keep-alive connections to a server on a loopback address and has each send requests
back to back (closed loop) until ``max_requests`` requests were sent in all or ``duration_s`` passed; it always
stops by itself. Request ``i`` carries body ``bodies(i)`` (e.g. the same bar history with a different last volume:
new data, so neither the decision nor the market memo answers it). A client answered 503 waits the server's
``Retry-After`` (capped at ``max_retry_wait_s``) before its next request, as a well-behaved client does. A separate
connection polls ``GET /health`` every ``health_interval_s`` and records its latency; with ``probe_process`` it
runs in a process of its own (blocking socket), so the load generator's own event loop does not inflate the figure.

The result counts what the clients saw: statuses, 503s without ``Retry-After``, dropped connections (reset, closed
or timed out before an answer; the client reconnects), and latency percentiles. Used by ``tests/serve/test_soak.py``
(small, no timing asserted) and ``himari bench serve --scenario soak`` (the 50- and 200-client figures).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from himari.errors import ConfigError
from himari.serve.auth import is_loopback


@dataclass
class SoakResult:
    statuses: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    missing_retry_after: int = 0
    latencies_s: list[float] = field(default_factory=list)  # per request answered 200 (a decision)
    health_latencies_s: list[float] = field(default_factory=list)
    health_failures: int = 0
    elapsed_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + self.dropped

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)

    def figures(self) -> dict[str, float]:
        def pct(values: list[float], q: float) -> float:
            return float(np.percentile(np.asarray(values) * 1e3, q)) if values else float("nan")

        return {
            "requests": float(self.requests),
            "ok_200": float(self.statuses.get(200, 0)),
            "busy_503": float(self.statuses.get(503, 0)),
            "client_4xx": float(sum(n for s, n in self.statuses.items() if 400 <= s < 500)),
            "server_5xx_other": float(self.server_errors),
            "dropped": float(self.dropped),
            "missing_retry_after": float(self.missing_retry_after),
            "p50_ms": pct(self.latencies_s, 50),
            "p99_ms": pct(self.latencies_s, 99),
            "health_p50_ms": pct(self.health_latencies_s, 50),
            "health_p99_ms": pct(self.health_latencies_s, 99),
            "health_max_ms": float(max(self.health_latencies_s) * 1e3) if self.health_latencies_s else float("nan"),
            "health_failures": float(self.health_failures),
            "elapsed_s": self.elapsed_s,
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0") or 0)
    if length:
        await reader.readexactly(length)
    return status, headers


def _request(method: str, path: str, host: str, port: int, key: str | None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    if key:
        lines.append(f"X-API-Key: {key}")
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _probe_process(host: str, port: int, interval_s: float, stop: Any, out: Any) -> None:
    """Blocking /health poller for a separate process: puts (latencies_s, failures) on ``out`` when ``stop`` is set."""
    import socket

    request = _request("GET", "/health", host, port, None)
    latencies: list[float] = []
    failures = 0
    sock = None
    while not stop.is_set():
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=60)
            began = time.perf_counter()
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("closed")
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("closed")
                rest += chunk
            latencies.append(time.perf_counter() - began)
            if head.split(b" ", 2)[1] != b"200":
                failures += 1
        except OSError:
            failures += 1
            sock = None
        time.sleep(interval_s)
    out.put((latencies, failures))


async def soak(
    host: str,
    port: int,
    path: str,
    bodies: Callable[[int], bytes],
    key: str | None,
    clients: int,
    max_requests: int,
    duration_s: float,
    answer_timeout_s: float = 60.0,
    health_interval_s: float = 0.02,
    max_retry_wait_s: float = 2.0,
    probe_process: bool = False,
) -> SoakResult:
    """Run the load (see the module docstring); loopback hosts only."""
    if not is_loopback(host):
        raise ConfigError(f"soak runs on loopback only, not {host!r}")
    result = SoakResult()
    clock = time.perf_counter
    start = clock()
    stop_at = start + duration_s
    sent = 0
    load_done = asyncio.Event()

    async def client() -> None:
        nonlocal sent
        reader = writer = None
        try:
            while sent < max_requests and clock() < stop_at:
                i = sent
                sent += 1
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), answer_timeout_s)
                    began = clock()
                    writer.write(_request("POST", path, host, port, key, bodies(i)))
                    assert reader is not None
                    status, headers = await asyncio.wait_for(_read_response(reader), answer_timeout_s)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    result.dropped += 1
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                result.statuses[status] += 1
                if status == 200:
                    result.latencies_s.append(clock() - began)
                if status == 503:
                    retry = headers.get(b"retry-after")
                    if retry is None:
                        result.missing_retry_after += 1
                    wait = min(float(retry or 1), max_retry_wait_s, max(0.0, stop_at - clock()))
                    await asyncio.sleep(wait)
                if headers.get(b"connection", b"").lower() == b"close":
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    async def health() -> None:
        reader = writer = None
        while not load_done.is_set():
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                began = clock()
                writer.write(_request("GET", "/health", host, port, None))
                assert reader is not None
                status, _ = await asyncio.wait_for(_read_response(reader), answer_timeout_s)
                result.health_latencies_s.append(clock() - began)
                if status != 200:
                    result.health_failures += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                result.health_failures += 1
                reader = writer = None
            await asyncio.sleep(health_interval_s)
        if writer is not None:
            writer.close()

    if probe_process:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=_probe_process, args=(host, port, health_interval_s, stop, out), daemon=True)
        proc.start()
        await asyncio.gather(*(client() for _ in range(clients)))
        stop.set()
        result.health_latencies_s, result.health_failures = await asyncio.to_thread(out.get, True, 120)
        proc.join(timeout=30)
    else:
        probe = asyncio.create_task(health())
        await asyncio.gather(*(client() for _ in range(clients)))
        load_done.set()
        await probe
    result.elapsed_s = clock() - start
    return result
