"""Gate 2, Kelly cap: no position beyond the signal's fractional Bayesian Kelly size (see himari/sizing/kelly.py).

Scale ``min(1, x_kelly / |x|)``; ``x_kelly = 0`` (no positive posterior edge) denies the position. While the signal
has fewer than ``kelly_min_outcomes`` recorded outcomes the estimate is not informative and the gate passes.
"""

from __future__ import annotations

import numpy as np

from himari.risk.gate import GateResult, scale_to_limit
from himari.sizing.kelly import KellyEstimate


def kelly_cap_gate(proposal: np.ndarray, kelly: KellyEstimate) -> GateResult:
    x = np.abs(np.asarray(proposal, dtype=np.float64))
    ratio = np.where(x > 0, np.inf, 0.0)  # exposure in units of the Kelly size (inf when the Kelly size is 0)
    np.divide(x, kelly.position, out=ratio, where=(x > 0) & (kelly.position > 0))
    scale = np.where(kelly.informative, scale_to_limit(ratio, 1.0), 1.0)
    i = int(np.argmin(scale)) if scale.size else 0
    if not scale.size or not kelly.informative[i]:
        reason = f"Kelly not yet informative ({int(kelly.n_outcomes.min()) if scale.size else 0} outcomes)"
    elif kelly.edge[i] <= 0:
        reason = f"no positive posterior edge: p={kelly.win_prob[i]:.3f}, b={kelly.payoff_ratio[i]:.2f}, f*={kelly.edge[i]:.4f}"
    else:
        reason = f"Kelly size {kelly.position[i]:.3f} (p={kelly.win_prob[i]:.3f}, b={kelly.payoff_ratio[i]:.2f}, n={int(kelly.n_outcomes[i])})"
    return GateResult("kelly_cap", scale, reason)
