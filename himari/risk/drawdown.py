"""Gate 4, drawdown brake: thresholds 3 / 6 / 10 % of drawdown cut the position by 30 / 60 / 95 % (defaults).

Drawdown ``d = 1 - equity / peak_equity``; scale = ``1 - cut_k`` for the largest threshold_k <= d (1 below the first
threshold). The scale depends only on the current drawdown, so it recovers as equity recovers, and it is a
non-increasing step function of d.

A brake that cuts 95 % can hold a strategy so close to flat that equity never gets back to its peak. By default the
reference peak therefore decays towards equity with a half-life (30 days, :func:`decayed_peak`): after a drawdown
the brake releases step by step while no new losses occur, and tightens again if they do.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def decayed_peak(previous_peak: Any, equity: Any, elapsed_bars: Any, halflife_bars: float) -> Any:
    """Reference peak after ``elapsed_bars``: ``max(equity, equity + (peak - equity) · 2^(-elapsed/halflife))``
    (floats or arrays, elementwise).

    The gap between the old peak and equity halves every ``halflife_bars``; a new equity high resets the peak.
    """
    decayed = equity + (previous_peak - equity) * 2.0 ** (-np.asarray(elapsed_bars, dtype=np.float64) / halflife_bars)
    return np.maximum(decayed, equity)
