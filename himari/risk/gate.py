"""The result every risk gate returns: a per-asset scale in [0, 1] and a reason a person can read."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class GateResult(NamedTuple):
    name: str
    scale: np.ndarray  # (A,) in [0, 1]; the final position is proposal · min over gates
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "scale": self.scale.tolist(), "reason": self.reason}


def scale_to_limit(exposure: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
    """``min(1, limit / exposure)`` per element: 1 where exposure <= limit (or is 0), 0 where exposure is NaN."""
    e = np.asarray(exposure, dtype=np.float64)
    s = np.ones_like(e)
    np.divide(limit, e, out=s, where=e > limit)  # broadcasts an array of limits
    return np.where(np.isnan(e), 0.0, s)
