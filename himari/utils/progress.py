"""Progress display for long work (rich), silent when output is not a terminal or when disabled."""

from __future__ import annotations

import os
import sys
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

console = Console(stderr=True)


def progress_enabled() -> bool:
    if os.environ.get("HIMARI_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool | None = None) -> Iterator[ProgressHandle]:
    """``with progress_bar("training", total=steps) as bar: bar.advance(n, info="sps=...")``."""
    show = progress_enabled() if enabled is None else enabled
    if not show:
        yield ProgressHandle(None, None)
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


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    with progress_bar(description, total) as bar:
        for item in items:
            yield item
            bar.advance(1)
