"""Stale or invalid inputs -> flat, with the reason (checked before every other gate).

Flat for all assets: the caller flags the data stale, the newest bar is older than ``max_data_age_bars``, equity or
peak equity is not a positive finite number, or the decision timestamp goes backwards. Flat for one asset: its
proposal, current position or regime posterior is NaN/inf, the posterior is negative or does not sum to 1, its latest
return is NaN (first bar after a gap, or no data at t), or it has fewer than ``min_history_bars`` finite returns in the
trailing window.
"""

from __future__ import annotations

import numpy as np

from himari.risk.config import RiskConfig
from himari.risk.gate import GateResult
from himari.sizing.context import DecisionContext


def check_inputs(
    ctx: DecisionContext,
    proposal: np.ndarray,
    cfg: RiskConfig,
    symbols: tuple[str, ...],
    last_timestamp_ns: int | None,
) -> GateResult:
    """Scale 1 for usable assets, 0 for the others, with every problem listed in the reason."""
    n = len(symbols)
    problems: list[str] = []
    valid = np.ones(n, dtype=bool)
    if ctx.is_stale:
        problems.append("data flagged stale by the feed")
    if not np.isfinite(ctx.data_age_bars) or ctx.data_age_bars > cfg.max_data_age_bars:
        problems.append(f"newest data is {ctx.data_age_bars:g} bars old (max {cfg.max_data_age_bars:g})")
    if not np.isfinite(ctx.equity) or ctx.equity <= 0:
        problems.append(f"equity {ctx.equity!r} is not positive")
    if ctx.peak_equity is not None and (not np.isfinite(ctx.peak_equity) or ctx.peak_equity <= 0):
        problems.append(f"peak equity {ctx.peak_equity!r} is not positive")
    if last_timestamp_ns is not None and ctx.timestamp_ns < last_timestamp_ns:
        problems.append(f"timestamp {ctx.timestamp_ns} is before the last decision {last_timestamp_ns}")
    if problems:
        valid[:] = False
    returns = np.asarray(ctx.returns, dtype=np.float64)
    posterior = np.asarray(ctx.regime_posterior, dtype=np.float64)
    checks = (
        (~np.isfinite(proposal), "proposal is not finite"),
        (~np.isfinite(np.asarray(ctx.position, dtype=np.float64)), "current position is not finite"),
        (
            ~np.isfinite(posterior).all(1)
            | (posterior < 0).any(1)
            | (np.abs(posterior.sum(1) - 1.0) > cfg.posterior_tolerance),
            "regime posterior invalid",
        ),
    )
    for bad, text in checks:
        if bad.any():
            valid &= ~bad
            problems.append(f"{text} for {', '.join(s for s, b in zip(symbols, bad, strict=True) if b)}")
    if len(returns) == 0:
        valid[:] = False
        problems.append("no returns history")
    else:
        if cfg.flat_after_gap:
            gap = ~np.isfinite(returns[-1])
            if gap.any():
                valid &= ~gap
                problems.append(
                    f"no return at this bar (gap) for {', '.join(s for s, b in zip(symbols, gap, strict=True) if b)}"
                )
        window = returns[-max(cfg.min_history_bars, cfg.cov_window_bars) :]
        short = np.isfinite(window).sum(0) < cfg.min_history_bars
        if short.any():
            valid &= ~short
            problems.append(
                f"fewer than {cfg.min_history_bars} finite returns for {', '.join(s for s, b in zip(symbols, short, strict=True) if b)}"
            )
    reason = "; ".join(problems) if problems else "inputs valid"
    return GateResult("validity", valid.astype(np.float64), reason)
