"""Stale or invalid inputs -> flat, with the reason (checked before every other gate).

Flat for all assets: the caller flags the data stale, the newest bar is older than ``max_data_age_bars``, equity or
peak equity is not a positive finite number, or the decision timestamp goes backwards. Flat for one asset: its
proposal, current position or regime posterior is NaN/inf, the posterior is negative or does not sum to 1, its latest
return is NaN (first bar after a gap, or no data at t), or it has fewer than ``min_history_bars`` finite returns in the
trailing window.
"""

from __future__ import annotations

import math

import numpy as np

from himari.risk.config import RiskConfig
from himari.risk.gate import GateResult
from himari.sizing.context import DecisionContext


def _names(symbols: tuple[str, ...], bad: np.ndarray) -> str:
    return ", ".join(s for s, b in zip(symbols, bad.tolist(), strict=True) if b)


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
    if ctx.is_stale:
        problems.append("data flagged stale by the feed")
    age = float(ctx.data_age_bars)
    if not age <= cfg.max_data_age_bars:  # also catches NaN
        problems.append(f"newest data is {age:g} bars old (max {cfg.max_data_age_bars:g})")
    equity = float(ctx.equity)
    if not (math.isfinite(equity) and equity > 0):
        problems.append(f"equity {equity!r} is not positive")
    if ctx.peak_equity is not None and not (math.isfinite(ctx.peak_equity) and ctx.peak_equity > 0):
        problems.append(f"peak equity {ctx.peak_equity!r} is not positive")
    if last_timestamp_ns is not None and ctx.timestamp_ns < last_timestamp_ns:
        problems.append(f"timestamp {ctx.timestamp_ns} is before the last decision {last_timestamp_ns}")
    returns = ctx.returns
    posterior = np.asarray(ctx.regime_posterior, dtype=np.float64)
    # NaN compares False, so these masks are False for NaN inputs as well
    ok_proposal = np.isfinite(proposal)
    ok_position = np.isfinite(np.asarray(ctx.position, dtype=np.float64))
    ok_posterior = (np.abs(posterior.sum(1) - 1.0) <= cfg.posterior_tolerance) & (posterior.min(1) >= 0.0)
    valid = ok_proposal & ok_position & ok_posterior
    if len(returns) == 0:
        problems.append("no returns history")
        ok_gap = ok_history = np.zeros(n, dtype=bool)
    else:
        ok_gap = np.isfinite(returns[-1]) if cfg.flat_after_gap else np.ones(n, dtype=bool)
        window = returns[-max(cfg.min_history_bars, cfg.cov_window_bars) :]
        ok_history = np.isfinite(window).sum(0) >= cfg.min_history_bars
        valid &= ok_gap & ok_history
    if problems:
        valid[:] = False
    if not valid.all():
        for ok, text in (
            (ok_proposal, "proposal is not finite"),
            (ok_position, "current position is not finite"),
            (ok_posterior, "regime posterior invalid (NaN, negative or not summing to 1)"),
            (ok_gap, "no return at this bar (gap)"),
            (ok_history, f"fewer than {cfg.min_history_bars} finite returns in the trailing window"),
        ):
            if not ok.all() and len(returns):
                problems.append(f"{text} for {_names(symbols, ~ok)}")
    reason = "; ".join(problems) if problems else "inputs valid"
    return GateResult("validity", valid.astype(np.float64), reason)
