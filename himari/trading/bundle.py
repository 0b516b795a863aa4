"""A trained model bundle: everything needed to decide, saved without pickle.

Layout of ``RUN/bundle/``::

    bundle.json             # format version, symbols, timeframe, policy kind, sim/sizing/risk configs, fit windows
    tactical/<SYMBOL>/      # TacticalPipeline.save() per symbol (normalizers + regime model, fitted on train only)
    policy/                 # Policy.save(): policy.json + weights.safetensors

``save_bundle`` writes it; ``load_bundle`` reads and checks it against its own config. Backtests, the API server and
paper trading all decide through a loaded bundle, so what was evaluated is what runs.

Loading treats the directory as untrusted: ``bundle.json`` is validated against :class:`BundleManifest` (one-line
errors naming the field), every path it implies (``tactical/<symbol>``, ``policy/``, ensemble members) must resolve
inside the bundle directory, a symlink anywhere in the bundle that points outside it is refused, weights are checked
from their safetensors header and on PyTorch's meta device before allocation (:func:`himari.agents.registry.
load_policy`), and a bundle whose policy or tactical pipeline holds NaN parameters is refused: it cannot decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from himari import __version__
from himari.errors import RunDirError
from himari.utils.confine import check_name, check_tree, inside, read_json_object
from himari.utils.io import atomic_write_json

BUNDLE_FORMAT = 1


class BundleManifest(BaseModel):
    """The schema of ``bundle.json`` (what ``save_bundle`` writes); unknown extra fields are kept, not interpreted."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: int
    himari_version: str = ""
    symbols: list[str] = Field(min_length=1, max_length=64)
    timeframe: str = Field(min_length=1, max_length=16)
    policy_kind: str = Field(min_length=1, max_length=64)
    action_kind: str = ""
    sim_config: dict[str, Any]
    sizing_config: dict[str, Any] = Field(default_factory=dict)
    risk_config: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)


def read_manifest(root: Path) -> BundleManifest:
    """``root/bundle.json`` validated: RunDirError ``PATH: field 'NAME': problem`` on the first problem."""
    path = root / "bundle.json"
    payload = read_json_object(path, "bundle.json")
    if payload.get("format") != BUNDLE_FORMAT:
        raise RunDirError(
            f"{path}: field 'format': bundle format {str(payload.get('format'))[:20]} is not supported "
            f"(expected {BUNDLE_FORMAT})"
        )
    try:
        manifest = BundleManifest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise RunDirError(f"{path}: field {loc!r}: {first.get('msg', 'invalid')}{more}") from None
    for i, symbol in enumerate(manifest.symbols):
        check_name(symbol.replace("/", ""), f"symbols[{i}]", path)
    from himari.data.timeframe import Timeframe

    try:
        Timeframe.parse(manifest.timeframe)
    except Exception:
        raise RunDirError(f"{path}: field 'timeframe': {manifest.timeframe[:16]!r} is not a timeframe") from None
    return manifest


def _first_nan(value: Any, where: str = "") -> str | None:
    """Path of the first NaN float in a JSON-like value (None when there is none; infinity may be meaningful)."""
    if isinstance(value, float):
        return (where or "(value)") if math.isnan(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _first_nan(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _first_nan(v, f"{where}[{i}]")
            if found:
                return found
    return None


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
    """The bundle of ``run`` (a run directory or the bundle directory), checked as the module docstring says."""
    from himari.agents.registry import load_policy
    from himari.tactical.pipeline import TacticalPipeline

    root = find_bundle_dir(run).resolve()
    check_tree(root, "bundle")
    manifest = read_manifest(root)
    policy_dir = inside(root, root / "policy", "policy")
    policy = load_policy(policy_dir)
    if policy.kind != manifest.policy_kind:
        raise RunDirError(
            f"{root}: field 'policy_kind': policy kind {policy.kind!r} does not match bundle.json "
            f"({manifest.policy_kind!r})"
        )
    tactical = {}
    for i, symbol in enumerate(manifest.symbols):
        directory = inside(root, root / "tactical" / symbol.replace("/", ""), f"symbols[{i}]")
        pipeline = TacticalPipeline.load(directory)
        bad = _first_nan(pipeline.state_dict())
        if bad is not None:
            raise RunDirError(f"{directory}: tactical pipeline parameter {bad!r} is NaN; this bundle cannot decide")
        tactical[symbol] = pipeline
    return Bundle(
        symbols=tuple(manifest.symbols),
        timeframe=manifest.timeframe,
        tactical=tactical,
        policy=policy,
        sim_config=manifest.sim_config,
        sizing_config=manifest.sizing_config,
        risk_config=manifest.risk_config,
        meta=manifest.meta,
    )
