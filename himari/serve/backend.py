"""Where the API's decision work runs: worker threads of the server process, or a decision backend child process.

The front (uvicorn's event loop: accept, auth, admission, reading bodies, ``/health``, ``/metrics``, writing
answers) hands each ``/v1/decide`` and ``/v1/bars`` job to a backend as ``(operation, raw body bytes)`` and awaits
the reply. Two backends with one interface (:class:`ThreadBackend`, :class:`ProcessBackend`):

- ``thread``: a :class:`~himari.serve.pool.WorkerPool` of the server process (the in-process test clients use it);
- ``process`` (``himari serve``'s default): one child process, forked when the app is built, owns all mutable
  decision state (kept bars, the decider's market and decision memos, the engine's streams, the parsed-body memo)
  and runs the same worker pool inside it, so decisions, their order and the caches are exactly as with threads.
  The front never shares a GIL or a heap with decision work: pydantic validating 3000 rows or a garbage
  collection of the backend cannot delay ``/health``. The child runs at a lower scheduling priority
  (``BACKEND_NICE``) so the event loop is scheduled first on a busy machine.

Jobs travel over a :func:`multiprocessing.Pipe`; a sender thread and a receiver thread in the front do the blocking
pipe I/O, so the loop only enqueues a job and awaits a future. The reply is the job's return value or the error it
raised (class, message, validation errors), raised again in the front, so clients get the same status codes and
bodies as with threads. Admission (``max_pending``, 503 + ``Retry-After``) and the request timeout are the front's:
a job counts as pending until the backend has answered it, and a job still queued in the backend when its deadline
passes is not started (``time.monotonic`` is one system-wide clock on Linux).

A backend that dies (killed, out of memory) does not hang the front: every job in flight is answered 503 +
``Retry-After`` (reason ``backend_crash``) and a fresh backend is forked at once (``himari_backend_restarts_total``,
``/health`` ``backend_restarts``). The fresh backend starts from the engine as loaded: bars kept by ``/v1/bars``
are gone, a client pushes them again. The child exits when its pipe closes (the front stopped, however it
stopped), so it is never left orphaned.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from himari.serve.pool import Overloaded, WorkerPool, default_workers, queue_full

log = logging.getLogger("himari.serve")

BACKEND_NICE = 5  # the decision backend yields the CPU to the event loop (0 = same priority, 19 = lowest)
QUERY_TIMEOUT_S = 5.0  # state and metric reads from the backend (answered by its reader, never queued)
_GC_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Work(Protocol):
    """What a backend runs: admitted jobs (``bars``, ``decide``) and quick reads (``kept``)."""

    def bars(self, body: bytes) -> Any: ...

    def decide(self, body: bytes) -> Any: ...

    def kept(self, points: int) -> Any: ...


JOB_OPS = frozenset({"bars", "decide"})
QUERY_OPS = frozenset({"kept", "metrics"})


class ThreadBackend:
    """Jobs on worker threads of this process (today's in-process behaviour)."""

    kind = "thread"
    restarts = 0

    def __init__(self, work: Work, workers: int, max_pending: int, timeout_s: float) -> None:
        self.work = work
        self.pool = WorkerPool(workers, max_pending, timeout_s)
        self.workers, self.max_pending = self.pool.workers, self.pool.max_pending

    @property
    def pending(self) -> int:
        return self.pool.pending

    def full(self) -> bool:
        return self.pool.full()

    def retry_after_s(self) -> int:
        return self.pool.retry_after_s()

    async def call(self, op: str, arg: Any) -> Any:
        return await self.pool.run(getattr(self.work, op), arg)

    async def query(self, op: str, arg: Any) -> Any:
        return None if op == "metrics" else getattr(self.work, op)(arg)  # this process's gc is the app's own

    def close(self) -> None:
        self.pool.shutdown()


class _Generation:
    """One backend child and the front's ends of its pipe: the jobs it owes an answer."""

    def __init__(self, process: Any, conn: Any) -> None:
        self.process = process
        self.conn = conn
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.jobs: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], bool]] = {}
        self.dead = False
        self.started_at = time.monotonic()


class ProcessBackend:
    """Jobs in a decision backend child process (see the module docstring)."""

    kind = "process"

    def __init__(self, make_work: Callable[[], Work], workers: int, max_pending: int, timeout_s: float) -> None:
        self.make_work = make_work
        self.workers = int(workers) if workers > 0 else default_workers()
        self.max_pending = int(max_pending) if max_pending > 0 else 4 * self.workers
        self.timeout_s = float(timeout_s)
        self.pending = 0
        self.restarts = 0
        self._mean_job_s = 0.05  # EWMA of the backend's job durations, for Retry-After
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        self._quick_deaths = 0  # backends in a row that died within a second: restarts back off
        self._gen = self._start()

    # -- admission (the middleware refuses before reading a body) -------------------------------------------------
    def full(self) -> bool:
        return self.pending >= self.max_pending

    def retry_after_s(self) -> int:
        return int(min(60, max(1, math.ceil(self.pending * self._mean_job_s / self.workers))))

    # -- jobs ------------------------------------------------------------------------------------------------------
    async def call(self, op: str, arg: Any) -> Any:
        """``work.<op>(arg)`` in the backend: admitted and time-bounded like :meth:`WorkerPool.run`."""
        with self._lock:
            if self.pending >= self.max_pending:
                raise queue_full(self.pending, self.max_pending, self.retry_after_s())
            gen, job_id, future = self._register(admitted=True)
        kind, value = await self._await(gen, job_id, future, op, arg, self.timeout_s,
                                        time.monotonic() + self.timeout_s)
        return _unwrap(kind, value, self)

    async def query(self, op: str, arg: Any) -> Any:
        """A quick read (kept bars, the backend's metrics), answered by the backend's reader thread."""
        with self._lock:
            gen, job_id, future = self._register(admitted=False)
        kind, value = await self._await(gen, job_id, future, op, arg, QUERY_TIMEOUT_S, math.inf)
        return _unwrap(kind, value, self)

    def _register(self, admitted: bool) -> tuple[_Generation, int, asyncio.Future[Any]]:
        gen = self._gen
        if gen.dead or self._closed:
            raise Overloaded("decision backend is restarting; retry later", 1, "backend_crash")
        job_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        gen.jobs[job_id] = (loop, future, admitted)
        if admitted:
            self.pending += 1
        return gen, job_id, future

    async def _await(self, gen: _Generation, job_id: int, future: asyncio.Future[Any], op: str, arg: Any,
                     timeout_s: float, deadline: float) -> tuple[str, Any]:
        gen.outbox.put((job_id, op, arg, deadline))  # the child it was registered with (a fresh one owes nothing)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            # the job stays pending until the backend answers it (as a worker thread that cannot be interrupted)
            return "expired", None

    # -- the child and the pipe threads ------------------------------------------------------------------------------
    def _start(self) -> _Generation:
        ctx = multiprocessing.get_context("fork")
        front_conn, backend_conn = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_backend_main, args=(backend_conn, front_conn, self.make_work, self.workers),
            name="himari-decision-backend", daemon=True,
        )
        process.start()
        backend_conn.close()  # the child's end: EOF reaches the front when the child dies
        gen = _Generation(process, front_conn)
        threading.Thread(target=self._send_loop, args=(gen,), name="himari-backend-send", daemon=True).start()
        threading.Thread(target=self._receive_loop, args=(gen,), name="himari-backend-recv", daemon=True).start()
        return gen

    def _send_loop(self, gen: _Generation) -> None:
        while True:
            item = gen.outbox.get()
            if item is None:
                return
            try:
                gen.conn.send(item)
            except (OSError, ValueError):  # the child is gone: the receiver answers the jobs
                return

    def _receive_loop(self, gen: _Generation) -> None:
        while True:
            try:
                job_id, kind, value, job_s = gen.conn.recv()
            except (EOFError, OSError, ValueError):
                break
            with self._lock:
                entry = gen.jobs.pop(job_id, None)
                if entry is not None and entry[2]:
                    self.pending -= 1
                    if job_s is not None:
                        self._mean_job_s = 0.9 * self._mean_job_s + 0.1 * job_s
            if entry is not None:
                try:
                    entry[0].call_soon_threadsafe(_resolve, entry[1], (kind, value))
                except RuntimeError:  # that loop is closed: nobody awaits the answer
                    pass
        with self._lock:
            gen.dead = True
            owed = list(gen.jobs.values())
            gen.jobs.clear()
            self.pending -= sum(1 for _, _, admitted in owed if admitted)
            closed = self._closed
        gen.outbox.put(None)
        for loop, future, _ in owed:
            try:
                loop.call_soon_threadsafe(_resolve, future, ("closed" if closed else "crashed", None))
            except RuntimeError:  # that loop is closed: nobody awaits the answer
                pass
        gen.process.join(timeout=5)
        if closed:
            return
        log.error("decision backend exited (code %s); starting a fresh one", gen.process.exitcode)
        self._quick_deaths = self._quick_deaths + 1 if time.monotonic() - gen.started_at < 1.0 else 0
        if self._quick_deaths:  # one that cannot even start is not forked in a tight loop (requests get 503)
            time.sleep(min(5.0, 0.1 * 2 ** self._quick_deaths))
        if self._closed:
            return
        fresh = self._start()
        with self._lock:
            self.restarts += 1
            self._gen = fresh
            closed = self._closed
        if closed:  # closed while the fresh one started: it is not left behind
            self._stop(fresh)

    def close(self) -> None:
        """Stop the backend: ask it to stop (it exits at once, jobs still running are dropped), then wait,
        terminate, kill."""
        with self._lock:
            self._closed = True
            gen = self._gen
        self._stop(gen)

    @staticmethod
    def _stop(gen: _Generation) -> None:
        # a stop message, not a closed pipe: closing the front's end while the receiver thread is blocked reading
        # it would not reach the child (the blocked read keeps the file open)
        gen.outbox.put((-1, "stop", None, 0.0))
        gen.outbox.put(None)
        gen.process.join(timeout=5)
        if gen.process.is_alive():
            gen.process.terminate()
            gen.process.join(timeout=5)
        if gen.process.is_alive():
            gen.process.kill()
            gen.process.join(timeout=5)
        try:
            gen.conn.close()
        except OSError:
            pass

    @property
    def pid(self) -> int | None:
        return self._gen.process.pid

    @property
    def exitcode(self) -> int | None:
        """The current backend child's exit code (None while it runs; 0 after a clean :meth:`close`)."""
        return self._gen.process.exitcode


def _resolve(future: asyncio.Future[Any], reply: tuple[str, Any]) -> None:
    if not future.done():  # a request that timed out has stopped waiting
        future.set_result(reply)


def _unwrap(kind: str, value: Any, backend: ProcessBackend) -> Any:
    if kind == "ok":
        return value
    if kind in ("expired", "crashed", "closed"):
        if kind == "closed":
            raise Overloaded("server is shutting down", 5, "shutdown")
        if kind == "crashed":
            raise Overloaded("decision backend stopped unexpectedly and is restarting; retry later", 1,
                             "backend_crash")
        raise Overloaded(
            f"request did not finish within {backend.timeout_s:g} s (server busy); retry later",
            backend.retry_after_s(),
            "timeout",
        )
    raise _rebuild_error(value)


# -- the child ---------------------------------------------------------------------------------------------------------
def _error_reply(exc: BaseException) -> tuple[str, Any]:
    """An exception as plain data: validation errors as their list, anything else as class and message."""
    if isinstance(exc, RequestValidationError):
        return "validation", list(exc.errors())
    cls = type(exc)
    return "error", (cls.__module__, cls.__qualname__, str(exc), getattr(exc, "status_code", None),
                     getattr(exc, "detail", None), getattr(exc, "headers", None))


def _rebuild_error(value: Any) -> BaseException:
    """The front's copy of a backend error: the same class (so the same handler, status and body)."""
    if isinstance(value, list):
        return RequestValidationError(value)
    module, qualname, message, status_code, detail, headers = value
    import importlib

    from starlette.exceptions import HTTPException

    try:
        cls = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        cls = None
    if isinstance(cls, type) and issubclass(cls, HTTPException) and status_code is not None:
        return cls(status_code, detail, headers)
    if isinstance(cls, type) and issubclass(cls, Exception):
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        return exc
    return type(qualname, (Exception,), {})(message)


class _BackendGc:
    """The backend's garbage-collector pauses, on its own registry (shown on the front's ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pause = Histogram("himari_backend_gc_pause", "Decision backend's garbage-collector pauses",
                               ["generation"], buckets=_GC_BUCKETS_S, unit="seconds", registry=self.registry)
        self.pause_max = Gauge("himari_backend_gc_pause_max_seconds",
                               "Decision backend's longest garbage-collector pause", ["generation"],
                               registry=self.registry)
        self._max = [0.0, 0.0, 0.0]
        self._started = threading.local()
        gc.callbacks.clear()  # the front's hooks came with the fork: this process records its own pauses
        gc.callbacks.append(self._hook)

    def _hook(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started.t = time.perf_counter()
            return
        started = getattr(self._started, "t", None)
        if started is None:
            return
        pause = time.perf_counter() - started
        generation = int(info.get("generation", 2))
        self.pause.labels(generation=str(generation)).observe(pause)
        if pause > self._max[generation]:
            self._max[generation] = pause
            self.pause_max.labels(generation=str(generation)).set(pause)


def _backend_main(conn: Any, front_conn: Any, make_work: Callable[[], Work], workers: int) -> None:
    """The child: read jobs, run them on ``workers`` threads, answer each with (id, kind, value, seconds)."""
    front_conn.close()  # only the front holds its end: the pipe reaches EOF when the front goes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the front decides when we stop
    try:
        os.nice(BACKEND_NICE)
    except OSError:
        pass
    gc_metrics = _BackendGc()
    work = make_work()
    send_lock = threading.Lock()
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="himari-backend-worker")

    def answer(job_id: int, kind: str, value: Any, job_s: float | None) -> None:
        try:
            with send_lock:
                conn.send((job_id, kind, value, job_s))
        except (OSError, ValueError):  # the front is gone
            pass
        except Exception as exc:  # a value that cannot be sent: say so instead of leaving the request waiting
            with send_lock:
                conn.send((job_id, *_error_reply(exc), job_s))

    def run(job_id: int, op: str, arg: Any, deadline: float) -> None:
        started = time.monotonic()
        if started > deadline:
            answer(job_id, "expired", None, None)
            return
        try:
            value = getattr(work, op)(arg)
        except BaseException as exc:
            answer(job_id, *_error_reply(exc), time.monotonic() - started)
            return
        answer(job_id, "ok", value, time.monotonic() - started)

    while True:
        try:
            job_id, op, arg, deadline = conn.recv()
        except (EOFError, OSError):
            break
        if op == "stop":
            break
        if op == "metrics":
            answer(job_id, "ok", generate_latest(gc_metrics.registry), None)
        elif op in QUERY_OPS:
            try:
                answer(job_id, "ok", getattr(work, op)(arg), None)
            except Exception as exc:
                answer(job_id, *_error_reply(exc), None)
        elif op in JOB_OPS:
            executor.submit(run, job_id, op, arg, deadline)
        else:
            answer(job_id, "error", ("builtins", "ValueError", f"unknown backend operation {op!r}", None, None,
                                     None), None)
    executor.shutdown(wait=False, cancel_futures=True)
    os._exit(0)  # no atexit handlers inherited from the front (its servers, its files) run in the child
