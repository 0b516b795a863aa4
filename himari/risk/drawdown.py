"""Gate 4, drawdown brake: thresholds 3 / 6 / 10 % of drawdown cut the position by 30 / 60 / 95 % (defaults).

Drawdown ``d = 1 - equity / peak_equity``; scale = ``1 - cut_k`` for the largest threshold_k <= d (1 below the first
threshold). The scale depends only on the current drawdown, so it recovers as equity recovers, and it is a
non-increasing step function of d.

A brake that cuts 95 % can hold a strategy so close to flat that equity never gets back to its peak. By default the
reference peak therefore decays towards equity with a half-life (30 days, :func:`decayed_peak`): after a drawdown
the brake releases step by step while no new losses occur, and tightens again if they do.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from himari.risk.gate import GateResult


def drawdown(equity: float, peak_equity: float) -> float:
    """``1 - equity / peak`` clipped to [0, 1]; NaN for non-positive or non-finite inputs."""
    if not (math.isfinite(equity) and math.isfinite(peak_equity)) or peak_equity <= 0:
        return math.nan
    return float(min(max(1.0 - equity / peak_equity, 0.0), 1.0))


def drawdown_scale(dd: float, thresholds: tuple[float, ...], cuts: tuple[float, ...]) -> float:
    """Step scale: ``1 - cuts[k]`` for the largest k with ``dd >= thresholds[k]``; 0 for NaN drawdown."""
    if not math.isfinite(dd):
        return 0.0
    k = bisect.bisect_right(thresholds, dd)
    return 1.0 if k == 0 else 1.0 - float(cuts[k - 1])


def decayed_peak(previous_peak: float, equity: float, elapsed_bars: float, halflife_bars: float) -> float:
    """Reference peak after ``elapsed_bars``: ``max(equity, equity + (peak - equity) · 2^(-elapsed/halflife))``.

    The gap between the old peak and equity halves every ``halflife_bars``; a new equity high resets the peak.
    """
    decayed = equity + (previous_peak - equity) * 2.0 ** (-elapsed_bars / halflife_bars)
    return max(decayed, equity)


def drawdown_gate(
    n_assets: int, dd: float, thresholds: tuple[float, ...], cuts: tuple[float, ...]
) -> GateResult:
    s = drawdown_scale(dd, thresholds, cuts)
    return GateResult("drawdown_brake", np.full(n_assets, s), f"drawdown {dd:.2%} -> cut {1 - s:.0%}")
