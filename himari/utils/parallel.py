"""``fork_map``: independent, seeded jobs (a window's configurations, a configuration's seeds) in forked processes.

The parent's function and items are inherited by the forked workers (nothing is pickled on the way in; the results
come back pickled: policies, bundles, training results of our own processes). Each worker runs one torch thread. A
call made inside a worker runs sequentially (no nested pools). Jobs must be seeded on their own so that the results
equal a sequential run (tested for walk-forward configurations and seeds).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_TASK: dict[str, Any] = {}
_IN_WORKER = False


def _start_worker() -> None:
    global _IN_WORKER
    _IN_WORKER = True
    from himari.utils.threads import configure_torch_threads

    configure_torch_threads()


def _run(index: int) -> Any:
    return _TASK["fn"](_TASK["items"][index])


def _prepare_parent() -> None:
    """Work every forked child would otherwise repeat, done once in the parent: torch's first optimizer construction
    imports ``torch._dynamo`` (~1.2 s), and a child's import dies with it, so each map of trainings paid it again."""
    if "torch" in sys.modules and "torch._dynamo" not in sys.modules:
        import torch._dynamo  # noqa: F401


def fork_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]``, in up to ``workers`` forked processes when more than one is asked for."""
    todo = list(items)
    if workers <= 1 or len(todo) <= 1 or _IN_WORKER or "fork" not in mp.get_all_start_methods():
        return [fn(x) for x in todo]
    if _TASK:
        raise RuntimeError("fork_map: a map is already running in this process")
    _prepare_parent()
    _TASK.update(fn=fn, items=todo)
    try:
        with mp.get_context("fork").Pool(min(workers, len(todo)), initializer=_start_worker) as pool:
            return pool.map(_run, range(len(todo)), chunksize=1)
    finally:
        _TASK.clear()
