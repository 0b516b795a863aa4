"""Gate 6, safe margin: an expected adverse move plus the cost of closing must leave margin before liquidation.

Cross margin on equity E with positions x_a (fractions of E). Over the horizon h bars a k-sigma adverse move costs
``Σ|x_a| k σ_a sqrt(h)``, closing costs ``Σ|x_a| c``, and the maintenance margin needs ``mm Σ|x_a|``. Require::

    Σ_a |x_a| (k σ_a sqrt(h) + c + mm) <= 1 - buffer

and scale all positions by ``min(1, (1 - buffer) / lhs)``.
"""

from __future__ import annotations

import math

import numpy as np

from himari.risk.gate import GateResult, scalar_scale


def margin_usage(
    proposal: np.ndarray,
    sigma_per_bar: np.ndarray,
    horizon_bars: int,
    k: float,
    cost_frac: float,
    maintenance: float,
) -> float:
    """``Σ_a |x_a| (k σ_a sqrt(h) + c + mm)``; an unknown σ (NaN) on a held asset gives inf."""
    root_h = math.sqrt(horizon_bars)
    usage = 0.0
    for x, sigma in zip(
        np.asarray(proposal, dtype=np.float64).tolist(), np.asarray(sigma_per_bar).tolist(), strict=True
    ):
        if x != 0:
            move = k * sigma * root_h if math.isfinite(sigma) else math.inf
            usage += abs(x) * (move + cost_frac + maintenance)
    return usage


def safe_margin_gate(
    proposal: np.ndarray,
    sigma_per_bar: np.ndarray,
    horizon_bars: int,
    k: float,
    cost_frac: float,
    maintenance: float,
    buffer: float,
) -> GateResult:
    usage = margin_usage(proposal, sigma_per_bar, horizon_bars, k, cost_frac, maintenance)
    s = scalar_scale(usage, 1.0 - buffer)
    reason = (
        f"margin use {usage:.1%} of equity at {k:g}σ over {horizon_bars} bars vs {1 - buffer:.0%} allowed"
    )
    return GateResult("safe_margin", np.full(len(proposal), s), reason)
