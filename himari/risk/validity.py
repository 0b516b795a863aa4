"""Stale or invalid inputs -> flat, with the reason (checked before every other gate).

Flat for all assets: the caller flags the data stale, the newest bar is older than ``max_data_age_bars``, equity or
peak equity is not a positive finite number, the decision timestamp goes backwards, or there is no returns history.
Flat for one asset: its proposal, current position or regime posterior is NaN/inf, the posterior is negative or does
not sum to 1, its latest return is NaN (first bar after a gap, or no data at t), or it has fewer than
``min_history_bars`` finite returns in the trailing window. The per-asset checks run in
:func:`himari.risk.batched.batched_risk`; this module holds the whole-stream checks and the reason text.
"""

from __future__ import annotations

import math

import numpy as np

from himari.risk.config import RiskConfig
from himari.sizing.context import DecisionContext


def stream_problems(ctx: DecisionContext, cfg: RiskConfig, last_timestamp_ns: int | None) -> list[str]:
    """Problems that make the whole decision flat (empty list: none)."""
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
    if len(ctx.returns) == 0:
        problems.append("no returns history")
    return problems


def validity_reason(
    problems: list[str], details: dict[str, np.ndarray], cfg: RiskConfig, symbols: tuple[str, ...]
) -> str:
    """The validity gate's reason from the stream problems and the per-asset checks of one stream (row 0)."""
    problems = list(problems)
    for key, text in (
        ("ok_proposal", "proposal is not finite"),
        ("ok_position", "current position is not finite"),
        ("ok_posterior", "regime posterior invalid (NaN, negative or not summing to 1)"),
        ("ok_gap", "no return at this bar (gap)"),
        ("ok_history", f"fewer than {cfg.min_history_bars} finite returns in the trailing window"),
    ):
        ok = np.asarray(details[key][0], dtype=bool)
        if not ok.all():
            names = ", ".join(s for s, good in zip(symbols, ok.tolist(), strict=True) if not good)
            problems.append(f"{text} for {names}")
    return "; ".join(problems) if problems else "inputs valid"
