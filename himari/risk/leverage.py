"""Gate 7, leverage controller: gross exposure ``Σ|x_a|`` at most the regime's leverage, never above ``max_leverage``.

The regime leverage is the expectation under the posterior, ``L(p) = Σ_k p_k L_k`` with defaults
(LOW_VOL 3.0, TRENDING 2.5, HIGH_VOL 1.5, CRISIS 0.5) — non-increasing in riskiness (checked by ``RiskConfig``), so
CRISIS never gets more leverage than LOW_VOL (the original inverted this). With several assets the most cautious
asset that holds a position sets the cap.
"""

from __future__ import annotations

import math

import numpy as np

from himari.risk.gate import GateResult, scalar_scale


def regime_leverage_cap(
    regime_posterior: np.ndarray, leverage_by_regime: np.ndarray, max_leverage: float, active: np.ndarray
) -> float:
    """``min over active assets of Σ_k p_ak L_k`` (all assets when none is active), within [0, max_leverage]."""
    per_asset = (np.asarray(regime_posterior, dtype=np.float64) @ leverage_by_regime).tolist()
    flags = np.asarray(active).tolist()
    chosen = [v if math.isfinite(v) else 0.0 for v, on in zip(per_asset, flags, strict=True) if on] or [
        v if math.isfinite(v) else 0.0 for v in per_asset
    ]
    return min(max(min(chosen), 0.0), max_leverage)


def leverage_gate(proposal: np.ndarray, cap: float) -> GateResult:
    gross = float(np.abs(proposal).sum())
    s = scalar_scale(gross, cap)
    return GateResult(
        "leverage", np.full(len(proposal), s), f"gross leverage {gross:.2f}x vs regime cap {cap:.2f}x"
    )
