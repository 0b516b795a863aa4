"""A plain-language verdict on a backtest: does the strategy beat its best baseline after costs, honestly?

An edge is claimed only when all of these hold:

1. the strategy's annualized Sharpe ratio exceeds the best baseline's (best = highest Sharpe among the baselines
   on the same data, costs and period);
2. the strategy's bootstrap confidence interval for the Sharpe ratio lies entirely above that baseline's Sharpe;
3. the deflated Sharpe ratio (which accounts for the number of configurations tried) is at least 0.95;
4. the probability of backtest overfitting, when it was measured, is below 0.5.

Missing evidence (no interval, no DSR) never counts in the strategy's favour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

BASELINE_LABELS: dict[str, str] = {
    "buy_and_hold": "buy-and-hold",
    "vol_target_buy_and_hold": "volatility-targeted buy-and-hold",
    "ma_crossover": "moving-average crossover",
    "random": "random trader",
}
DSR_THRESHOLD = 0.95
PBO_THRESHOLD = 0.5


class Verdict(NamedTuple):
    text: str
    edge: bool  # True only when every condition in the module docstring holds
    best_baseline: str | None  # key of the best baseline (highest Sharpe)
    best_baseline_sharpe: float
    strategy_sharpe: float


def baseline_label(name: str) -> str:
    """Human name of a baseline key (unknown keys are shown with underscores as spaces)."""
    return BASELINE_LABELS.get(name, name.replace("_", " "))


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _show(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "undefined"


def best_baseline(baseline_metrics: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, float]:
    """``(name, sharpe)`` of the baseline with the highest finite annualized Sharpe ratio (``(None, nan)`` if none)."""
    best: tuple[str | None, float] = (None, math.nan)
    for name, metrics in baseline_metrics.items():
        sharpe = _finite(metrics.get("sharpe"))
        if math.isfinite(sharpe) and (best[0] is None or sharpe > best[1]):
            best = (name, sharpe)
    return best


def make_verdict(
    strategy_metrics: Mapping[str, Any],
    baseline_metrics: Mapping[str, Mapping[str, Any]],
    sharpe_ci: tuple[float, float] | None = None,
    dsr: float | None = None,
    n_trials: int | None = None,
    pbo: float | None = None,
    confidence: float = 0.95,
    dsr_threshold: float = DSR_THRESHOLD,
) -> Verdict:
    """The verdict sentence, e.g. ``"Does not beat volatility-targeted buy-and-hold after costs (Sharpe 0.41 vs
    0.77); DSR 0.31 (12 trials)."`` ``sharpe_ci`` is the (low, high) annualized bootstrap interval."""
    sharpe = _finite(strategy_metrics.get("sharpe"))
    name, base_sharpe = best_baseline(baseline_metrics)
    dsr_value = _finite(dsr)
    pbo_value = _finite(pbo)
    trials = f" ({n_trials} trial{'s' if n_trials != 1 else ''})" if n_trials else ""
    dsr_text = f"DSR {dsr_value:.2f}{trials}" if math.isfinite(dsr_value) else "DSR not computed"
    pbo_text = f"; PBO {pbo_value:.2f}" if math.isfinite(pbo_value) else ""
    if math.isfinite(pbo_value) and pbo_value >= PBO_THRESHOLD:
        pbo_text += " (the selection is likely overfit)"

    if name is None and baseline_metrics:
        text = (f"Sharpe {_show(sharpe)} after costs, but the baselines' Sharpe ratios are undefined (too few bars or no "
                f"variance); {dsr_text}{pbo_text}. No edge claimed.")
        return Verdict(text, False, None, math.nan, sharpe)
    if name is None:
        text = f"No baseline to compare with; Sharpe {_show(sharpe)} after costs; {dsr_text}{pbo_text}. No edge claimed."
        return Verdict(text, False, None, math.nan, sharpe)
    label = baseline_label(name)
    if not math.isfinite(sharpe):
        text = f"Sharpe ratio undefined (no variance in returns); no edge over {label} (Sharpe {base_sharpe:.2f})."
        return Verdict(text, False, name, base_sharpe, sharpe)
    if sharpe <= base_sharpe:
        text = f"Does not beat {label} after costs (Sharpe {sharpe:.2f} vs {base_sharpe:.2f}); {dsr_text}{pbo_text}."
        return Verdict(text, False, name, base_sharpe, sharpe)

    problems = []
    pct = f"{round(confidence * 100)}%"
    if sharpe_ci is None or not all(math.isfinite(_finite(v)) for v in sharpe_ci):
        problems.append("no confidence interval for the Sharpe ratio")
    elif float(sharpe_ci[0]) <= base_sharpe:
        problems.append(
            f"the {pct} CI of its Sharpe [{float(sharpe_ci[0]):.2f}, {float(sharpe_ci[1]):.2f}] includes "
            f"{base_sharpe:.2f}"
        )
    if not math.isfinite(dsr_value):
        problems.append("no deflated Sharpe ratio")
    elif dsr_value < dsr_threshold:
        problems.append(f"DSR {dsr_value:.2f} < {dsr_threshold:.2f}{trials}")
    if math.isfinite(pbo_value) and pbo_value >= PBO_THRESHOLD:
        problems.append(f"PBO {pbo_value:.2f} >= {PBO_THRESHOLD:.2f}")
    if problems:
        text = (
            f"Higher Sharpe than {label} after costs ({sharpe:.2f} vs {base_sharpe:.2f}), but no demonstrated edge: "
            + "; ".join(problems)
            + "."
        )
        return Verdict(text, False, name, base_sharpe, sharpe)
    assert sharpe_ci is not None
    text = (
        f"Beats {label} after costs (Sharpe {sharpe:.2f} vs {base_sharpe:.2f}; {pct} CI "
        f"[{float(sharpe_ci[0]):.2f}, {float(sharpe_ci[1]):.2f}] excludes it); {dsr_text}{pbo_text}."
    )
    return Verdict(text, True, name, base_sharpe, sharpe)
