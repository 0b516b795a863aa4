"""README numbers come from a command: the results block equals what ``himari results`` renders from the committed
copy of the main job's metrics (docs/results/quick-metrics.json, written by the run that produced the README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from himari.errors import ConfigError
from himari.report.readme import (
    END,
    START,
    current_block,
    load_metrics,
    load_trials,
    render_results,
    update_block,
)

ROOT = Path(__file__).resolve().parents[1]
LABEL = "main job (quick preset)"


def test_readme_results_block_is_rendered_from_the_main_job_metrics() -> None:
    path = ROOT / "docs" / "results" / "quick-metrics.json"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert current_block(readme) == render_results(load_metrics(path), LABEL, load_trials(path))


def test_update_block_replaces_only_the_block() -> None:
    text = f"intro\n{START}\nold\n{END}\noutro\n"
    assert update_block(text, "new") == f"intro\n{START}\nnew\n{END}\noutro\n"
    with pytest.raises(ConfigError, match="no results block"):
        update_block("no markers", "new")
