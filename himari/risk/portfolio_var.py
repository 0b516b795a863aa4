"""Gate 5, portfolio VaR at 99 % over the trailing 100 bars, covariance-based and historical; the larger binds.

- Covariance (variance-covariance, zero mean): ``VaR = z_q · sqrt(wᵀ Σ w)`` with z_q the standard-normal quantile.
- Historical: the q-quantile (linear interpolation, as ``numpy.quantile``) of the portfolio's simple-return losses
  ``-Σ_a w_a expm1(r_a)`` over the same bars.

Both are linear in the scale of w, so ``scale = min(1, limit / VaR)`` brings the VaR exactly to the limit. Computed
over N streams in :func:`himari.risk.batched.batched_risk`.
"""

from __future__ import annotations

from functools import lru_cache
from statistics import NormalDist


@lru_cache(maxsize=16)
def normal_quantile(level: float) -> float:
    """Standard-normal quantile z_q."""
    return NormalDist().inv_cdf(level)
