"""numba's ``njit`` with HIMARI's settings: compiled kernels cached on disk where a cache folder is writable.

Kernels are compiled on first use (a few seconds) and cached next to their module, else in the user's cache folder, or
where ``NUMBA_CACHE_DIR`` points; where none is writable (a read-only container) they are compiled once per process.
They run on the calling thread (no numba threading layer, so they never compete with torch's threads).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from numba import njit as _njit


def _disk_cache_writable() -> bool:
    """Whether numba can cache compiled kernels somewhere (else ``cache=True`` fails at the first compile)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True
    here = Path(__file__).resolve().parent.parent
    candidates = (here / "__pycache__", here, Path.home() / ".cache" / "numba", Path.home() / ".cache", Path.home())
    return any(d.is_dir() and os.access(d, os.W_OK) for d in candidates)


CACHE = _disk_cache_writable()


def njit(**options: object) -> Any:
    """numba.njit with the disk cache where possible."""
    options["cache"] = CACHE and bool(options.get("cache", True))
    return _njit(**options)
