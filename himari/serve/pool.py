"""CPU-bound request work off the event loop: a bounded worker pool that answers 503 + ``Retry-After`` when full.

The event loop only accepts connections, reads bodies and writes answers; parsing, validation, feature building and
the decision run in a :class:`~concurrent.futures.ThreadPoolExecutor` of ``workers`` threads (default: the number
of cores). At most ``max_pending`` jobs are admitted (running plus waiting); one more is refused at once with
:class:`Overloaded` (503 + ``Retry-After``) instead of queueing until clients time out and drop the connection. A job
that has not finished within ``timeout_s`` is answered with 503 as well; a job still waiting for a worker when its
deadline passes is not started at all. So ``/health`` and ``/metrics`` stay responsive under any load, and every
client gets an answer.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Overloaded(Exception):
    """The server cannot take the request now: answered 503 with ``Retry-After: retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int, reason: str) -> None:
        super().__init__(message)
        self.retry_after_s = int(retry_after_s)
        self.reason = reason


def queue_full(pending: int, max_pending: int, retry_after_s: int) -> Overloaded:
    """The 503 for a request refused because ``max_pending`` requests are already admitted."""
    return Overloaded(f"server busy: {pending} requests in progress (limit {max_pending}); retry later",
                      retry_after_s, "queue_full")


class _Expired(Exception):
    pass


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class WorkerPool:
    """``await pool.run(fn, *args)``: ``fn(*args)`` on a worker thread, admission-bounded and time-bounded."""

    def __init__(self, workers: int = 0, max_pending: int = 0, timeout_s: float = 10.0) -> None:
        self.workers = int(workers) if workers > 0 else default_workers()
        self.max_pending = int(max_pending) if max_pending > 0 else 4 * self.workers
        self.timeout_s = float(timeout_s)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="himari-worker")
        self._lock = threading.Lock()
        self.pending = 0
        self._mean_job_s = 0.05  # EWMA of job durations, for Retry-After

    def full(self) -> bool:
        """No room for one more request now (the middleware refuses before reading the body)."""
        return self.pending >= self.max_pending

    def retry_after_s(self) -> int:
        """Seconds until the admitted work is likely done: pending jobs x mean job time / workers (1..60)."""
        return int(min(60, max(1, math.ceil(self.pending * self._mean_job_s / self.workers))))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self.pending >= self.max_pending:
                raise queue_full(self.pending, self.max_pending, self.retry_after_s())
            self.pending += 1
        deadline = time.monotonic() + self.timeout_s

        def job() -> T:
            started = time.monotonic()
            if started > deadline:
                raise _Expired
            try:
                return fn(*args)
            finally:
                self._mean_job_s = 0.9 * self._mean_job_s + 0.1 * (time.monotonic() - started)

        try:
            future: Future[T] = self._executor.submit(job)
        except RuntimeError:  # executor shut down
            self._release(None)
            raise Overloaded("server is shutting down", 5, "shutdown") from None
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except (TimeoutError, _Expired):
            raise Overloaded(
                f"request did not finish within {self.timeout_s:g} s (server busy); retry later",
                self.retry_after_s(),
                "timeout",
            ) from None

    def _release(self, future: Future[Any] | None) -> None:
        with self._lock:
            self.pending -= 1
        if future is not None and not future.cancelled():
            future.exception()  # retrieved: a job finishing after its request timed out logs nothing

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
