"""The trials ledger: every configuration evaluated on a data set before the reported one was chosen.

A deflated Sharpe ratio is only honest when its number of trials counts everything that was tried, including the
configurations tried during development on earlier walk-forwards and dropped. A ledger is a JSON list of
:class:`Trial` entries; a walk-forward run given a ledger counts its entries in the DSR's number of trials and
writes ``RUN/trials.json``: the ledger plus the run's own configuration with its result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from himari.config import FrozenConfig
from himari.errors import ConfigError
from himari.utils.io import atomic_write_json, read_json


class Trial(FrozenConfig):
    """One configuration evaluated on data: what it was, where it was measured, and what it gave."""

    name: str
    description: str
    data: str = Field(description="symbols and walk-forward test span the trial was measured on")
    config: dict[str, Any] = Field(default_factory=dict, description="the settings that differ from the defaults")
    result: dict[str, float | None] = Field(default_factory=dict, description="sharpe, total_return, max_drawdown, ...")
    command: str = ""
    kept: bool = Field(False, description="whether this configuration became the reported one")


RESULT_KEYS = ("sharpe", "total_return", "max_drawdown", "turnover", "fees_paid")


def load_ledger(path: str | Path) -> list[Trial]:
    """Read a ledger (a JSON list of trials); a missing or malformed file is a :class:`ConfigError`."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no trials ledger")
    payload = read_json(p)
    if not isinstance(payload, list):
        raise ConfigError(f"{p}: a trials ledger is a JSON list of trials")
    trials = []
    for i, entry in enumerate(payload):
        try:
            trials.append(Trial.parse(entry))
        except ConfigError as exc:
            raise ConfigError(f"{p}: trial {i}: {exc}") from None
    return trials


def trial_from_metrics(
    name: str, description: str, data: str, config: dict[str, Any], metrics: dict[str, Any], command: str = "",
    kept: bool = False,
) -> Trial:
    """A ledger entry for a run from its ``metrics.json`` content."""
    result = {k: (float(metrics[k]) if isinstance(metrics.get(k), int | float) else None) for k in RESULT_KEYS}
    return Trial(name=name, description=description, data=data, config=config, result=result, command=command,
                 kept=kept)


def write_ledger(path: str | Path, trials: list[Trial]) -> Path:
    return atomic_write_json(Path(path), [t.to_dict() for t in trials])
