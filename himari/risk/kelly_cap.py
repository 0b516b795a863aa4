"""Gate 2, Kelly cap: no position beyond the signal's fractional Bayesian Kelly size (see himari/sizing/kelly.py).

Scale ``min(1, x_kelly / |x|)``; ``x_kelly = 0`` (no positive posterior edge) denies the position. While the signal
has fewer than ``kelly_min_outcomes`` recorded outcomes the estimate is not informative and the gate passes.
"""

from __future__ import annotations

import numpy as np

from himari.risk.gate import GateResult
from himari.sizing.kelly import KellyEstimate


def kelly_cap_gate(proposal: np.ndarray, kelly: KellyEstimate) -> GateResult:
    """``min(1, x_kelly / |x|)`` per informative asset; 1 while not informative; 0 when the Kelly size is 0."""
    scales = []
    for x, size, informative in zip(
        np.asarray(proposal, dtype=np.float64).tolist(),
        kelly.position.tolist(),
        kelly.informative.tolist(),
        strict=True,
    ):
        x = abs(x)
        if not informative or x == 0 or x <= size:
            scales.append(1.0)
        else:
            scales.append(size / x if size > 0 else 0.0)
    if not scales:
        return GateResult("kelly_cap", np.ones(0), "no assets")
    i = min(range(len(scales)), key=scales.__getitem__)
    if not kelly.informative[i]:
        reason = f"Kelly not yet informative ({int(kelly.n_outcomes.min())} outcomes)"
    elif kelly.edge[i] <= 0:
        reason = (
            f"no positive posterior edge: p={float(kelly.win_prob[i]):.3f}, b={float(kelly.payoff_ratio[i]):.2f}, "
            f"f*={float(kelly.edge[i]):.4f}"
        )
    else:
        reason = (
            f"Kelly size {float(kelly.position[i]):.3f} (p={float(kelly.win_prob[i]):.3f}, "
            f"b={float(kelly.payoff_ratio[i]):.2f}, n={int(kelly.n_outcomes[i])})"
        )
    return GateResult("kelly_cap", np.array(scales), reason)
