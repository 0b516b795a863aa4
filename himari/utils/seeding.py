"""Explicit random number generators. No code in HIMARI touches global random state."""

from __future__ import annotations

import numpy as np


def make_rng(seed: int | np.random.SeedSequence) -> np.random.Generator:
    """A NumPy generator (PCG64) from an explicit seed."""
    return np.random.default_rng(seed)


def child_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent integer seeds derived from ``seed`` (for windows, workers, ensemble members)."""
    seq = np.random.SeedSequence(seed)
    return [int(s.generate_state(1, dtype=np.uint32)[0]) for s in seq.spawn(n)]


