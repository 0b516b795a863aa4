"""A trained model bundle: everything needed to decide, saved without pickle.

Layout of ``RUN/bundle/``::

    bundle.json             # format version, symbols, timeframe, policy kind, sim/sizing/risk configs, fit windows
    tactical/<SYMBOL>/      # TacticalPipeline.save() per symbol (normalizers + regime model, fitted on train only)
    policy/                 # Policy.save(): policy.json + weights.safetensors

``save_bundle`` writes it; ``load_bundle`` reads and checks it against its own config. Backtests, the API server and
paper trading all decide through a loaded bundle, so what was evaluated is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himari import __version__
from himari.errors import RunDirError
from himari.utils.io import atomic_write_json, read_json

BUNDLE_FORMAT = 1


@dataclass
class Bundle:
    symbols: tuple[str, ...]
    timeframe: str
    tactical: dict[str, Any]  # symbol -> TacticalPipeline
    policy: Any  # himari.agents.base.Policy
    sim_config: dict[str, Any]
    sizing_config: dict[str, Any] = field(default_factory=dict)
    risk_config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # fit windows, model id, training summary

    @property
    def model_id(self) -> str:
        return str(self.meta.get("model_id", f"{self.policy.kind}"))


def fit_period(meta: dict[str, Any]) -> tuple[Any, Any] | None:
    """(start, end) of the data a bundle was fitted and selected on (training start .. validation end), from the
    meta written by walk-forward (``fit_windows``), ``himari train`` (``train_window``/``validation_window``) or the
    offline trainers (``train_start``/``val_end``); None when unknown."""
    import pandas as pd

    try:
        if "fit_windows" in meta and isinstance(meta["fit_windows"], dict):
            fw = meta["fit_windows"]
            start, end = fw.get("train_start"), fw.get("validation_end") or fw.get("train_end")
        elif "train_window" in meta:
            start = meta["train_window"][0]
            end = (meta.get("validation_window") or meta["train_window"])[1]
        elif "train_start" in meta:
            start, end = meta["train_start"], meta.get("val_end") or meta.get("train_end")
        else:
            return None
        if start is None or end is None:
            return None
        return pd.Timestamp(start), pd.Timestamp(end)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def fit_periods(meta: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Every (start, end) period whose data reached the model: ``meta["lineage"]`` (walk-forward: each window of
    the transfer chain from its feature warm-up to its validation end), else the single :func:`fit_period`."""
    import pandas as pd

    lineage = meta.get("lineage")
    if isinstance(lineage, list) and lineage:
        try:
            return [(pd.Timestamp(p["start"]), pd.Timestamp(p["end"])) for p in lineage]
        except (KeyError, TypeError, ValueError):
            pass
    period = fit_period(meta)
    return [] if period is None else [period]


def save_bundle(directory: str | Path, bundle: Bundle) -> Path:
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    for symbol, pipeline in bundle.tactical.items():
        pipeline.save(root / "tactical" / symbol.replace("/", ""))
    bundle.policy.save(root / "policy")
    atomic_write_json(
        root / "bundle.json",
        {
            "format": BUNDLE_FORMAT,
            "himari_version": __version__,
            "symbols": list(bundle.symbols),
            "timeframe": bundle.timeframe,
            "policy_kind": bundle.policy.kind,
            "action_kind": bundle.policy.action_kind,
            "sim_config": bundle.sim_config,
            "sizing_config": bundle.sizing_config,
            "risk_config": bundle.risk_config,
            "meta": bundle.meta,
        },
    )
    return root


def find_bundle_dir(run: str | Path) -> Path:
    """``RUN/bundle`` if present, else ``RUN`` itself when it holds ``bundle.json``."""
    run = Path(run)
    for candidate in (run / "bundle", run):
        if (candidate / "bundle.json").exists():
            return candidate
    raise RunDirError(f"{run}: no model bundle (expected {run}/bundle/bundle.json); train or run a pipeline first")


def load_bundle(run: str | Path) -> Bundle:
    from himari.agents.registry import load_policy
    from himari.tactical.pipeline import TacticalPipeline

    root = find_bundle_dir(run)
    meta = read_json(root / "bundle.json")
    if meta.get("format") != BUNDLE_FORMAT:
        raise RunDirError(f"{root}: bundle format {meta.get('format')} is not supported (expected {BUNDLE_FORMAT})")
    policy = load_policy(root / "policy")
    if policy.kind != meta["policy_kind"]:
        raise RunDirError(f"{root}: policy kind {policy.kind!r} does not match bundle.json ({meta['policy_kind']!r})")
    tactical = {s: TacticalPipeline.load(root / "tactical" / s.replace("/", "")) for s in meta["symbols"]}
    return Bundle(
        symbols=tuple(meta["symbols"]),
        timeframe=meta["timeframe"],
        tactical=tactical,
        policy=policy,
        sim_config=meta["sim_config"],
        sizing_config=meta.get("sizing_config", {}),
        risk_config=meta.get("risk_config", {}),
        meta=meta.get("meta", {}),
    )
