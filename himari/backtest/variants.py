"""Method ablations: one walk-forward per variant of a base configuration, on the same windows, bars, costs and
seeds, compared side by side.

A *variant* is a name and a dict of ``WFOConfig`` overrides, merged into the base configuration key by key (nested
sections such as ``ppo`` or ``sizing`` are merged, not replaced). The first variant is the reference the others are
compared with (usually ``"without"``: the base unchanged). Each variant writes a complete run directory
(``OUT/<name>/``, see :func:`himari.backtest.pipeline.run_wfo_to_dir`); ``OUT/variants.json`` and
``OUT/variants.md`` hold the comparison: return, Sharpe with its bootstrap 95% CI, maximum drawdown, turnover, fees,
exposure, and the Sharpe difference to the reference with a paired bootstrap CI over the same test bars.

Every variant is a trial on these data: each variant's run directory holds its ``trials.json`` (the base ledger plus
the variant), and a choice made from the comparison must add the variants to the ledger it names, so a later DSR
counts them (they are not added to a shipped ledger automatically).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from himari.backtest.wfo import WFOConfig
from himari.config import merge_overrides
from himari.data.bars import Bars
from himari.errors import ConfigError
from himari.utils.io import atomic_write_json, atomic_write_text

ROW_KEYS = ("total_return", "sharpe", "max_drawdown", "turnover", "fees_paid", "exposure")


def paired_sharpe_difference(a: np.ndarray, b: np.ndarray, periods_per_year: float, seed: int,
                             n_boot: int = 2000, block: int = 24) -> dict[str, float]:
    """Annualized Sharpe of ``a`` minus that of ``b`` (same bars) with a moving-block bootstrap 95% CI that resamples
    the same blocks of both series (pairing keeps their correlation)."""
    from himari.utils.seeding import make_rng

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"paired Sharpe difference: {a.shape[0]} vs {b.shape[0]} bars (variants must share bars)")

    def sharpe(x: np.ndarray) -> float:
        sd = x.std(ddof=1) if len(x) > 1 else 0.0
        return float(x.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0

    n = len(a)
    diff = sharpe(a) - sharpe(b)
    if n < 2 * block:
        return {"sharpe_diff": diff, "ci_low": math.nan, "ci_high": math.nan}
    rng = make_rng(seed)
    n_blocks = math.ceil(n / block)
    samples = np.empty(n_boot)
    for i in range(n_boot):
        starts = rng.integers(0, n - block + 1, size=n_blocks)
        idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]
        samples[i] = sharpe(a[idx]) - sharpe(b[idx])
    lo, hi = np.quantile(samples, [0.025, 0.975])
    return {"sharpe_diff": diff, "ci_low": float(lo), "ci_high": float(hi)}


def _strategy_returns(path: Path) -> np.ndarray:
    """Per-bar net returns of the strategy from a run's ``equity.csv`` (equity starts at 1 before the first bar)."""
    import pandas as pd

    equity = pd.read_csv(path)["strategy"].to_numpy(dtype=np.float64)
    return equity / np.concatenate([[1.0], equity[:-1]]) - 1.0


def run_variants(
    base: Mapping[str, Any],
    variants: Mapping[str, Mapping[str, Any]],
    bars_by_symbol: Mapping[str, Bars],
    out: str | Path,
    command: str,
    progress: bool = True,
    title: str = "method ablation",
) -> list[dict[str, Any]]:
    """Walk forward every variant (see the module docstring) and write the comparison. Returns its rows."""
    from himari.backtest.pipeline import run_wfo_to_dir
    from himari.data.timeframe import Timeframe

    if not variants:
        raise ConfigError("method ablation: no variants given")
    root = Path(out)
    configs = {}
    for name, overrides in variants.items():
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"method ablation: variant name {name!r} must be a plain directory name")
        try:
            configs[name] = WFOConfig.parse(merge_overrides(base, overrides))
        except ConfigError as exc:
            raise ConfigError(f"method ablation: variant {name!r}: {exc}") from None
    rows: list[dict[str, Any]] = []
    returns: dict[str, np.ndarray] = {}
    reference = next(iter(configs))
    for name, config in configs.items():
        metrics = run_wfo_to_dir(config, bars_by_symbol, root / name, command=f"{command} [{name}]",
                                 title=f"{title}: {name}", progress=progress)
        returns[name] = _strategy_returns(root / name / "equity.csv")
        s = metrics.get("statistics", {})
        row = {"variant": name, "overrides": dict(variants[name]),
               **{k: metrics.get(k) for k in ROW_KEYS},
               "sharpe_ci_low": s.get("sharpe_ci_low"), "sharpe_ci_high": s.get("sharpe_ci_high"),
               "timeframe": metrics.get("timeframe")}
        rows.append(row)
    ppy = Timeframe.parse(str(rows[0]["timeframe"])).periods_per_year
    seed = configs[reference].seed
    for row in rows:
        name = row["variant"]
        row["vs_reference"] = None if name == reference else paired_sharpe_difference(
            returns[name], returns[reference], ppy, seed)
    atomic_write_json(root / "variants.json", {"reference": reference, "rows": rows})
    atomic_write_text(root / "variants.md", render_variants(rows, reference, title))
    return rows


def render_variants(rows: list[dict[str, Any]], reference: str, title: str) -> str:
    """The comparison as a Markdown table (what ``himari ablate`` prints and writes to ``variants.md``)."""
    def pct(v: Any) -> str:
        return "n/a" if v is None or not np.isfinite(v) else f"{v * 100:+.1f}%"

    def num(v: Any) -> str:
        return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"

    lines = [f"### {title}", "",
             "| variant | return | Sharpe (95% CI) | max DD | turnover/yr | fees | Sharpe vs "
             f"{reference} (95% CI) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = r.get("vs_reference")
        vs_text = "reference" if vs is None else (
            f"{vs['sharpe_diff']:+.2f} ({num(vs['ci_low'])} .. {num(vs['ci_high'])})")
        lines.append(
            f"| {r['variant']} | {pct(r['total_return'])} | {num(r['sharpe'])} ({num(r['sharpe_ci_low'])} .. "
            f"{num(r['sharpe_ci_high'])}) | {pct(r['max_drawdown'])} | {num(r['turnover'])}x | {pct(r['fees_paid'])} "
            f"| {vs_text} |")
    return "\n".join(lines) + "\n"
