"""Progress of long work: a rich progress bar on a terminal, log lines (logger ``himari.progress``, INFO, at most
one every ``LOG_INTERVAL_S`` seconds) when stderr is not a terminal, nothing when disabled (``enabled=False`` or
``HIMARI_NO_PROGRESS`` set). The CLI shows INFO logs on stderr (``-q`` hides them); a library user sees them only
after configuring logging."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

LOG_INTERVAL_S = 10.0
log = logging.getLogger("himari.progress")

console = Console(stderr=True)


def progress_enabled() -> bool:
    if os.environ.get("HIMARI_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool | None = None) -> Iterator[ProgressHandle]:
    """``with progress_bar("training", total=steps) as bar: bar.advance(n, info="sps=...")``."""
    if enabled is False or os.environ.get("HIMARI_NO_PROGRESS"):
        yield ProgressHandle(None, None)
        return
    if not sys.stderr.isatty():
        handle = LogProgress(description, total)
        yield handle  # type: ignore[misc]
        handle.finish()
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, info="")
        yield ProgressHandle(progress, task)


class ProgressHandle:
    def __init__(self, progress: Progress | None, task: object) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1.0, info: str | None = None) -> None:
        if self._progress is None:
            return
        if info is None:
            self._progress.advance(self._task, amount)  # type: ignore[arg-type]
        else:
            self._progress.update(self._task, advance=amount, info=info)  # type: ignore[arg-type]


class LogProgress:
    """Progress as log lines: started, then at most one line per ``LOG_INTERVAL_S`` (share done, elapsed, estimated
    time left, the latest ``info``), then done. Wall-clock time here only paces messages."""

    def __init__(self, description: str, total: float | None, interval_s: float = LOG_INTERVAL_S) -> None:
        self.description, self.total, self.interval_s = description, total, interval_s
        self.done = 0.0
        self.info = ""
        self.started = self.last = time.monotonic()
        log.info("%s: started%s", description, f" ({total:,.0f} to do)" if total else "")

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        text = f"{self.description}: {self.done:,.0f}"
        if self.total:
            share = self.done / self.total
            text += f"/{self.total:,.0f} ({share * 100:.0f}%)"
            if 0 < share < 1:
                text += f", ~{elapsed * (1 - share) / share:.0f} s left"
        text += f", {elapsed:.0f} s elapsed"
        return text + (f", {self.info}" if self.info else "")

    def advance(self, amount: float = 1.0, info: str | None = None) -> None:
        self.done += amount
        if info is not None:
            self.info = info
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            log.info(self.line())

    def finish(self) -> None:
        log.info("%s (done)", self.line())


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    with progress_bar(description, total) as bar:
        for item in items:
            yield item
            bar.advance(1)
