"""The README's main-job results block, rendered from a run's ``metrics.json`` (never typed by hand).

``himari results RUN`` prints the block; ``himari results RUN --update README.md`` replaces the text between the
markers ``<!-- results:start -->`` and ``<!-- results:end -->``. ``tests/test_readme_results.py`` checks that the
README's block equals the block rendered from the committed copy of the main job's metrics
(``docs/results/quick-metrics.json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from himari.errors import ConfigError

START, END = "<!-- results:start -->", "<!-- results:end -->"
NAMES = {
    "buy_and_hold": "buy-and-hold",
    "vol_target_buy_and_hold": "vol-targeted buy-and-hold",
    "ma_crossover": "MA 50/200 crossover",
    "random": "random (seeded)",
}


def _pct(v: Any) -> str:
    return "–" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v * 100:.1f}%"


def _num(v: Any, digits: int = 2) -> str:
    return "–" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v:.{digits}f}"


def _times(v: Any) -> str:
    """A turnover (× a year), or – when unknown."""
    text = _num(v, 1)
    return text if text == "–" else f"{text}×"


def render_results(metrics: dict[str, Any], strategy_label: str = "strategy",
                   trials: list[dict[str, Any]] | None = None) -> str:
    """The markdown table (strategy and baselines), the statistics line, the verdict, the layer ablation and the
    trials ledger (``RUN/trials.json``) when given."""
    lines = [
        "| | total return | CAGR | ann. vol | Sharpe | max DD | exposure | trades | turnover/yr | fees+slippage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [(f"**{strategy_label}**", metrics)] + [
        (NAMES.get(name, name), m) for name, m in metrics.get("baselines", {}).items()
    ]
    for label, m in rows:
        per_year = m.get("turnover")  # annualized in metrics.json
        lines.append(
            f"| {label} | {_pct(m.get('total_return'))} | {_pct(m.get('annual_return'))} | "
            f"{_pct(m.get('annual_volatility'))} | {_num(m.get('sharpe'))} | {_pct(m.get('max_drawdown'))} | "
            f"{_pct(m.get('exposure'))} | {m.get('n_trades', '–')} | {_times(per_year)} | {_pct(m.get('fees_paid'))} |"
        )
    s = metrics.get("statistics", {})
    stats = (
        f"Sharpe 95% CI [{_num(s.get('sharpe_ci_low'))}, {_num(s.get('sharpe_ci_high'))}], PSR {_num(s.get('psr'), 3)}, "
        f"DSR {_num(s.get('dsr'), 3)} ({s.get('n_trials')} trials)"
        + (f", PBO {_num(s.get('pbo'))}" if s.get("pbo") is not None else "")
        + "."
    )
    out = [*lines, "", stats, f"**Verdict: {metrics.get('verdict', '')}**"]
    ablation = metrics.get("ablation")
    if ablation:
        out += ["", "What each layer adds (same windows, costs and account chain):", "",
                "| layer | total return | Sharpe [95% CI] | max DD | turnover/yr | fees+slippage | exposure |",
                "|---|---|---|---|---|---|---|"]
        for row in ablation:
            out.append(
                f"| {row['layer']} | {_pct(row.get('total_return'))} | {_num(row.get('sharpe'))} "
                f"[{_num(row.get('sharpe_ci_low'))}, {_num(row.get('sharpe_ci_high'))}] | {_pct(row.get('max_drawdown'))} | "
                f"{_times(row.get('turnover'))} | {_pct(row.get('fees_paid'))} | {_pct(row.get('exposure'))} |"
            )
    if trials:
        out += ["", f"Trials ledger ({len(trials)} configurations; the DSR counts them):", "",
                "| trial | measured on | Sharpe | total return | max DD | turnover/yr | kept |", "|---|---|---|---|---|---|---|"]
        for t in trials:
            r = t.get("result") or {}
            out.append(f"| {t['name']}: {t['description']} | {t['data']} | {_num(r.get('sharpe'))} | "
                       f"{_pct(r.get('total_return'))} | {_pct(r.get('max_drawdown'))} | {_times(r.get('turnover'))} | "
                       f"{'yes' if t.get('kept') else 'no'} |")
    return "\n".join(out)


def update_block(text: str, block: str, source: str = "README") -> str:
    """``text`` with the results block between the markers replaced by ``block``."""
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ConfigError(f"{source}: no results block ({START} ... {END})")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def current_block(text: str) -> str:
    """The text between the markers (without the surrounding newlines)."""
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def load_trials(run: str | Path) -> list[dict[str, Any]] | None:
    """``RUN/trials.json`` (or the ``*-trials.json`` beside a metrics file), None when absent."""
    from himari.utils.io import read_json

    path = Path(run)
    candidates = [path / "trials.json"] if path.is_dir() else [path.with_name(path.name.replace("metrics", "trials"))]
    for c in candidates:
        if c.exists() and c != path:
            return read_json(c)  # type: ignore[no-any-return]
    return None


def load_metrics(run: str | Path) -> dict[str, Any]:
    from himari.utils.io import read_json

    path = Path(run)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.exists():
        raise ConfigError(f"{path}: no metrics.json")
    return read_json(path)  # type: ignore[no-any-return]
