"""Shadow / A-B comparison of two paper-trading streams on the same bars (champion vs challenger).

Per stream: total return, annualized Sharpe and volatility (from the bar timeframe), maximum drawdown, fills, fees,
slippage, turnover. Between them: the action agreement rate and a paired block-bootstrap test of the per-bar return
difference ``d_t = r^challenger_t - r^champion_t`` (:func:`himari.evaluation.statistics.paired_bootstrap_test`,
stationary bootstrap with Politis-White block length). Pairing keeps the strong contemporaneous dependence of two
strategies on one market, the blocks keep serial dependence; an independent two-sample t-test would ignore both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from himari.data.timeframe import Timeframe
from himari.errors import DataError
from himari.evaluation.statistics import paired_bootstrap_test
from himari.ops.metrics import per_symbol
from himari.paper.loop import CHAMPION, SHADOW
from himari.paper.store import PaperStore, require_stream
from himari.utils.seeding import make_rng


@dataclass(frozen=True)
class StreamStats:
    stream: str
    bars: int
    total_return: float
    annual_volatility: float
    sharpe: float
    max_drawdown: float
    n_fills: int
    fees: float
    slippage: float
    turnover: float  # sum of |quantity_change| (fractions of equity)


@dataclass(frozen=True)
class Comparison:
    champion: StreamStats
    challenger: StreamStats
    bars: int
    action_agreement: float
    mean_difference_per_bar: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    block_length: float
    n_boot: int
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def simple_returns(equity: np.ndarray) -> np.ndarray:
    """Per-bar simple returns ``equity_t / equity_{t-1} - 1`` (first bar dropped)."""
    return equity[1:] / equity[:-1] - 1.0


def stream_stats(store: PaperStore, stream: str, timeframe: Timeframe, ts_common: np.ndarray | None = None) -> StreamStats:
    ts, equity, _ = store.equity_curve(stream)
    if ts_common is not None:
        keep = np.isin(ts, ts_common)
        ts, equity = ts[keep], equity[keep]
    if len(equity) < 2:
        raise DataError(f"{store.path}: stream {stream!r} has {len(equity)} bars; need at least 2 to compare")
    r = simple_returns(equity)
    peak = np.maximum.accumulate(equity)
    std = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    ann = np.sqrt(timeframe.periods_per_year)
    fills = store.fills(stream)
    return StreamStats(
        stream=stream,
        bars=len(equity),
        total_return=float(equity[-1] / equity[0] - 1.0),
        annual_volatility=std * float(ann),
        sharpe=float(r.mean() / std * ann) if std > 1e-15 else 0.0,
        max_drawdown=float(np.max(1.0 - equity / peak)),
        n_fills=len(fills),
        fees=float(sum(f["fee"] for f in fills)),
        slippage=float(sum(f["slippage_cost"] for f in fills)),
        turnover=float(sum(abs(f["quantity_change"]) for f in fills)),
    )


def _actions(store: PaperStore, stream: str) -> dict[tuple[str, str], str]:
    out = {}
    for d in store.decisions(stream):
        symbols = [str(s) for s in d.get("symbols", [])]
        for symbol, action in per_symbol(d.get("actions", {}), symbols).items():
            out[(str(d.get("timestamp")), symbol)] = str(action)
    return out


def compare_streams(
    store: PaperStore,
    timeframe: Timeframe | str,
    champion: str = CHAMPION,
    challenger: str = SHADOW,
    seed: int = 0,
    n_boot: int = 2000,
    confidence: float = 0.95,
) -> Comparison:
    """Compare ``challenger`` against ``champion`` on the bars both recorded."""
    tf = Timeframe.parse(timeframe)
    require_stream(store, champion)
    require_stream(store, challenger)
    ts_a, eq_a, _ = store.equity_curve(champion)
    ts_b, eq_b, _ = store.equity_curve(challenger)
    common = np.intersect1d(ts_a, ts_b)
    if len(common) < 10:
        raise DataError(f"{store.path}: only {len(common)} bars recorded by both streams; need at least 10 to compare")
    eq_a = eq_a[np.isin(ts_a, common)]
    eq_b = eq_b[np.isin(ts_b, common)]
    stats_a = stream_stats(store, champion, tf, common)
    stats_b = stream_stats(store, challenger, tf, common)
    acts_a, acts_b = _actions(store, champion), _actions(store, challenger)
    shared = set(acts_a) & set(acts_b)
    agreement = float(np.mean([acts_a[k] == acts_b[k] for k in shared])) if shared else float("nan")
    test = paired_bootstrap_test(
        simple_returns(eq_b), simple_returns(eq_a), make_rng(seed), n_boot=n_boot, confidence=confidence
    )
    alpha = 1.0 - confidence
    if test.p_value < alpha:
        better = "outperforms" if test.mean_difference > 0 else "underperforms"
        verdict = f"challenger {better} the champion (p = {test.p_value:.3f} < {alpha:.2f})"
    else:
        verdict = f"no significant difference (p = {test.p_value:.3f}); keep the champion"
    return Comparison(
        champion=stats_a,
        challenger=stats_b,
        bars=len(common),
        action_agreement=agreement,
        mean_difference_per_bar=test.mean_difference,
        ci_low=test.low,
        ci_high=test.high,
        p_value=test.p_value,
        confidence=confidence,
        block_length=test.block_length,
        n_boot=n_boot,
        verdict=verdict,
    )


def format_comparison(c: Comparison) -> str:
    rows = [
        ("bars", c.champion.bars, c.challenger.bars, "{}"),
        ("total return", c.champion.total_return, c.challenger.total_return, "{:+.2%}"),
        ("annual volatility", c.champion.annual_volatility, c.challenger.annual_volatility, "{:.2%}"),
        ("Sharpe (annual)", c.champion.sharpe, c.challenger.sharpe, "{:+.2f}"),
        ("max drawdown", c.champion.max_drawdown, c.challenger.max_drawdown, "{:.2%}"),
        ("fills", c.champion.n_fills, c.challenger.n_fills, "{}"),
        ("fees", c.champion.fees, c.challenger.fees, "{:.2f}"),
        ("slippage", c.champion.slippage, c.challenger.slippage, "{:.2f}"),
        ("turnover", c.champion.turnover, c.challenger.turnover, "{:.2f}"),
    ]
    lines = [f"{'':<20}{c.champion.stream:>14}{c.challenger.stream:>14}"]
    for name, a, b, fmt in rows:
        lines.append(f"{name:<20}{fmt.format(a):>14}{fmt.format(b):>14}")
    lines += [
        f"action agreement: {c.action_agreement:.1%} of decisions",
        f"paired block bootstrap of the per-bar return difference (challenger - champion, {c.bars} bars, "
        f"block {c.block_length:.1f} bars, {c.n_boot} samples):",
        f"  mean {c.mean_difference_per_bar:+.3e} per bar, {c.confidence:.0%} CI [{c.ci_low:+.3e}, {c.ci_high:+.3e}], "
        f"p = {c.p_value:.3f}",
        f"verdict: {c.verdict}",
    ]
    return "\n".join(lines)
