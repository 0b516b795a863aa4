"""One experiment file drives a whole run: data -> features -> regime -> train -> walk-forward -> backtest.

``himari run experiment.yaml --out RUN`` (YAML or TOML; a run directory's ``run.json`` works too) reads an
:class:`ExperimentConfig`: the data, the walk-forward (:class:`~himari.backtest.wfo.WFOConfig`, whose sections are
the typed configs of every layer: ``tactical`` features and regime model, ``sim``, ``ppo``, ``policy_config``,
``sizing``, ``risk``, ``offline``), the backend and the tracking. Every key is validated by its typed config before
any work starts; a mistake is one :class:`~himari.errors.ConfigError` line naming the file and the key path
(``experiment.yaml: walk_forward.sizing.target_vol: unknown key``).

Every walk-forward run directory gets ``RUN/experiment.yaml``: the resolved experiment, so that ``himari run
RUN/experiment.yaml --out RUN2`` repeats it (same data, configs and seeds -> the same ``metrics.json``) and any key
can be changed to extend it. :func:`template` writes the fully commented file of every key and its default
(``himari run --print-defaults``).
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from himari.backtest.wfo import WFOConfig
from himari.config import FrozenConfig
from himari.errors import ConfigError
from himari.utils.io import atomic_write_text
from himari.utils.tracking import TrackingConfig


class ExperimentConfig(FrozenConfig):
    """A ``himari run`` experiment: what to load, how to walk forward, where to track."""

    data: tuple[str, ...] = Field(("BTCUSDT",), min_length=1, description=(
        "OHLCV files or bundled names (BTCUSDT, ETHUSDT, SOLUSDT); several for multi-asset policies"))
    backend: Literal["local", "ray"] = Field("local", description="local: windows in order with transfer; ray: parallel fits")
    ray_address: str | None = Field(None, description="Ray cluster address for backend ray (default: a local Ray)")
    title: str | None = Field(None, description="report title (default: Walk-forward POLICY on SYMBOLS)")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    walk_forward: WFOConfig = Field(default_factory=WFOConfig)

    def wfo_config(self) -> WFOConfig:
        """The walk-forward config with this experiment's tracking."""
        return self.walk_forward.replace(tracking=self.tracking.to_dict())


# --------------------------------------------------------------------------------------------- loading

def _plain(value: Any) -> Any:
    """YAML/TOML values as JSON-like ones: dates as ISO strings (an unquoted 2023-01-01 is a date in YAML)."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _section_classes(policy: str) -> dict[str, Any]:
    from himari.agents.ppo.config import PPOConfig
    from himari.agents.registry import OFFLINE_KINDS, STACK_KINDS, policy_class
    from himari.env.sim import SimConfig
    from himari.risk.config import RiskConfig
    from himari.sizing.sizer import SizingConfig
    from himari.tactical.pipeline import TacticalConfig

    out: dict[str, Any] = {"tactical": TacticalConfig, "sizing": SizingConfig, "risk": RiskConfig}
    if policy not in OFFLINE_KINDS:
        out.update(sim=SimConfig, ppo=PPOConfig)
        if policy not in STACK_KINDS:
            out["policy_config"] = policy_class(policy).config_class
    return out


def _error(where: str, loc: tuple[Any, ...], error: Mapping[str, Any]) -> ConfigError:
    path = ".".join(str(p) for p in loc)
    kind = error.get("type", "")
    msg = str(error.get("msg", "")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return ConfigError(f"{where}: {path}: unknown key")
    if kind == "missing":
        return ConfigError(f"{where}: {path}: missing")
    shown = "" if "input" not in error or isinstance(error["input"], Mapping) else f" (got {error['input']!r})"
    return ConfigError(f"{where}: {path}: {msg}{shown}" if path else f"{where}: {msg}")


def parse_experiment(payload: Any, where: str) -> ExperimentConfig:
    """Validate an experiment mapping; ``where`` (the file) starts every error message."""
    if not isinstance(payload, Mapping):
        raise ConfigError(f"{where}: an experiment is a mapping of keys (data, walk_forward, tracking, ...), "
                          f"got {type(payload).__name__}")
    payload = _plain(payload)
    for name in payload:
        if name not in ExperimentConfig.model_fields:
            raise ConfigError(f"{where}: {name}: unknown key; known: {', '.join(ExperimentConfig.model_fields)}")
    wf = payload.get("walk_forward")
    if wf is None:
        payload.pop("walk_forward", None)
    elif not isinstance(wf, Mapping):
        raise ConfigError(f"{where}: walk_forward: must be a mapping, got {type(wf).__name__}")
    else:
        wf = dict(wf)
        if "tracking" in wf:
            raise ConfigError(f"{where}: walk_forward.tracking: unknown key (tracking is a top-level section)")
        for name, info in WFOConfig.model_fields.items():  # a section whose keys are all commented out is null
            if name in wf and wf[name] is None and typing.get_origin(info.annotation) is dict:
                wf[name] = {}
        policy = wf.get("policy", WFOConfig.model_fields["policy"].default)
        try:
            classes = _section_classes(str(policy))
        except Exception:  # an unknown policy kind: reported by WFOConfig below
            classes = {}
        for section, config_class in classes.items():
            values = wf.get(section)
            if values is None:
                continue
            if not isinstance(values, Mapping):
                raise ConfigError(f"{where}: walk_forward.{section}: must be a mapping, got {type(values).__name__}")
            try:
                config_class.model_validate(values)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise _error(where, ("walk_forward", section, *first["loc"]), first) from None
        payload["walk_forward"] = wf
    if payload.get("tracking") is None:
        payload.pop("tracking", None)
    try:
        return ExperimentConfig.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _error(where, tuple(first["loc"]), first) from None


def read_experiment_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of an experiment file: YAML (.yaml, .yml), TOML (.toml), or a run directory's run.json."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the experiment file: {exc.strerror or exc}") from None
    suffix = p.suffix.lower()
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    if suffix == ".json":
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not valid JSON: {exc}") from None
        return experiment_from_run_json(payload, str(p))
    if suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{p}: an experiment file ends in .yaml, .yml or .toml (or is a run directory's run.json)")
    import yaml

    try:
        payload = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML: {problem}{line}") from None
    return {} if payload is None else payload


def experiment_from_run_json(payload: Any, where: str) -> dict[str, Any]:
    """A walk-forward run directory's ``run.json`` as an experiment (its config, backend and data files)."""
    config = payload.get("config") if isinstance(payload, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("wfo"), dict):
        raise ConfigError(f"{where}: not the run.json of a walk-forward run (no config.wfo); give an experiment "
                          "file (himari run --print-defaults writes one)")
    data = [record["path"] for record in (payload.get("data") or {}).values() if isinstance(record, dict)]
    out: dict[str, Any] = {"walk_forward": config["wfo"], "backend": config.get("backend", "local")}
    if data:
        out["data"] = data
    return out


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment file (see the module docstring)."""
    return parse_experiment(read_experiment_file(path), str(path))


# --------------------------------------------------------------------------------------------- writing

HEADER = """\
# HIMARI experiment, run with:  himari run THIS_FILE --out RUN
# data -> features and regime (walk_forward.tactical) -> training (sim, ppo, policy_config) -> walk-forward
# (fit on train, select on validation, trade test) -> backtest with sizing, risk and costs -> RUN/report.html.
# Every key is listed with its default. Keys of the walk-forward sections are overrides: the commented ones
# take the value shown, uncomment a line to change it. TOML files with the same structure work too.
"""


def _yaml_value(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _doc(info: Any) -> str:
    text = info.description or _type_text(info.annotation)
    return " ".join(str(text).split())


def _is_config(annotation: Any) -> type[FrozenConfig] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, FrozenConfig):
            return c
    return None


def _render(config: FrozenConfig, indent: int, commented: bool, active: Mapping[str, Any] | None = None,
            skip: Mapping[str, str] | None = None) -> list[str]:
    """``key: value  # doc`` lines of ``config``'s fields (nested configs as nested mappings). ``commented``: as
    ``# key: value`` (overrides left at their default); keys in ``active`` are written uncommented; keys in
    ``skip`` get a note instead of a value (set from elsewhere)."""
    lines: list[str] = []
    values = config.to_dict()
    pad = " " * indent
    for name, info in type(config).model_fields.items():
        if info.exclude:
            continue
        if skip and name in skip:
            lines.append(f"{pad}# ({name}: {skip[name]})")
            continue
        on = active is not None and name in active
        mark = "# " if commented and not on else ""
        nested = getattr(config, name)
        if isinstance(nested, FrozenConfig):
            lines.append(f"{pad}{mark}{name}:")
            inner = _render(nested, 0, False)
            lines.extend(f"{pad}{mark}  {line}" if mark else f"{pad}  {line}" for line in inner)
            continue
        lines.append(f"{pad}{mark}{name}: {_yaml_value(values[name])}  # {_doc(info)}")
        optional = _is_config(info.annotation) if nested is None else None
        if optional is not None:  # an optional section that is off: the keys it takes, as notes
            lines.extend(f"{pad}#   {indent_}({key}: {value})  # {doc}" for indent_, key, value, doc in _option_notes(optional))
    return lines


def _option_notes(config_class: type[FrozenConfig], indent: str = "") -> list[tuple[str, str, str, str]]:
    """(indent, key, default, doc) of every field of an optional section (nested sections indented)."""
    out = []
    for key, info in config_class.model_fields.items():
        if info.exclude:
            continue
        if info.is_required():
            default = "required"
        else:
            value = info.get_default(call_default_factory=True)
            default = _yaml_value(value.to_dict() if isinstance(value, FrozenConfig) else value)
        out.append((indent, key, default, _doc(info)))
        inner = _is_config(info.annotation)
        if inner is not None:
            out.extend(_option_notes(inner, indent + "  "))
    return out


def template(walk_forward: Mapping[str, Any] | None = None, data: tuple[str, ...] | None = None,
             description: str = "", title: str | None = None) -> str:
    """The fully commented experiment file of every key and its default, with the walk-forward values
    ``walk_forward`` (e.g. a pipeline preset) and ``data``. Parsing it gives exactly that experiment."""
    from himari.agents.registry import OFFLINE_KINDS, STACK_KINDS, policy_class

    exp = ExperimentConfig.model_validate({"walk_forward": dict(walk_forward or {}), "title": title,
                                           **({"data": list(data)} if data else {})})
    wf = exp.walk_forward
    lines = [HEADER.rstrip("\n")]
    if description:
        lines.append(f"# {description}")
    lines.append("")
    for name, info in ExperimentConfig.model_fields.items():
        if name in ("tracking", "walk_forward"):
            continue
        lines.append(f"{name}: {_yaml_value(exp.to_dict()[name])}  # {_doc(info)}")
    lines.append("tracking:  # off by default; TensorBoard and MLflow record training curves and per-window figures")
    lines.extend(_render(exp.tracking, 2, False))
    lines.append("walk_forward:  # himari.backtest.wfo.WFOConfig")
    sections = _section_classes(wf.policy)
    wf_values = wf.to_dict()
    for name, info in WFOConfig.model_fields.items():
        if info.exclude:
            continue
        if typing.get_origin(info.annotation) is not dict:
            lines.append(f"  {name}: {_yaml_value(wf_values[name])}  # {_doc(info)}")
            continue
        given = dict(getattr(wf, name))
        config_class = sections.get(name)
        if name == "policy_config" and wf.policy in STACK_KINDS:
            lines.extend(_stack_policy_config(given))
            continue
        if config_class is None:
            used = "not used by" if (name != "offline" or wf.policy not in OFFLINE_KINDS) else "options of"
            keys = ""
            if name == "offline" and wf.policy in OFFLINE_KINDS:
                from himari.training.offline import OPTION_KEYS

                keys = f" (keys: {', '.join(sorted(OPTION_KEYS))}; see himari.training.offline.train_offline)"
            lines.append(f"  {name}: {_yaml_value(given)}  # {used} the {wf.policy} policy{keys}")
            continue
        skip: dict[str, str] = {}
        if name == "sim":
            effective: FrozenConfig = wf.sim_config()
            skip = {"action_kind": "from the policy kind", "window": "walk_forward.window or the policy kind's",
                    "episode_length": "walk_forward.episode_length", "sizing": "the sizing section",
                    "risk": "the risk section"}
        elif name == "ppo":
            effective = config_class.parse({"n_steps": wf.n_steps, "eval_every_updates": 5, **given})
            skip = {"total_steps": "steps_first_window, then steps_per_window, per candidate",
                    "n_steps": "walk_forward.n_steps"}
        else:
            effective = config_class.parse(given)
        label = config_class.__name__
        if name == "policy_config":
            label = f"{policy_class(wf.policy).config_class.__name__} of the {wf.policy} policy"
        lines.append(f"  {name}:  # {label}")
        lines.extend(_render(effective, 4, True, active={k: v for k, v in given.items() if k not in skip},
                             skip=skip))
    return "\n".join(lines) + "\n"


def _stack_policy_config(given: Mapping[str, Any]) -> list[str]:
    """The stack's ``policy_config``: its L2 / L3 kinds and each layer's config (commented at their defaults)."""
    from himari.agents.registry import policy_class, policy_kind
    from himari.training.ppo import STACK_L2_KINDS, STACK_L3_KINDS, stack_kinds

    l2, l3 = stack_kinds(dict(given))
    lines = ["  policy_config:  # the stack's layers (himari.training.ppo.fit_stack)"]
    for key, value, kinds in (("direction_kind", l2, STACK_L2_KINDS), ("sizer_kind", l3, STACK_L3_KINDS)):
        mark = "" if key in given else "# "
        lines.append(f"    {mark}{key}: {value}  # one of {', '.join(kinds)}")
    for key, kind in (("direction", l2), ("sizer", l3)):
        section = dict(given.get(key) or {})
        if policy_kind(kind).family == "offline":
            lines.append(f"    {'' if key in given else '# '}{key}: {_yaml_value(section)}  # options of the offline "
                         f"{kind} model (himari.training.offline)")
            continue
        config_class = policy_class(kind).config_class
        lines.append(f"    {'' if section else '# '}{key}:  # {config_class.__name__} of the {kind} layer")
        inner = _render(config_class.parse(section), 0, False)
        lines.extend(f"      {line}" if section else f"    #   {line}" for line in inner)
    return lines


def data_spec(bars: Any) -> str:
    """How to load ``bars`` again: its bundled name when it is the bundled file, else its absolute path."""
    from himari.data.bundled import bundled_path

    source = str(getattr(bars, "source", "") or "")
    if not source:
        return str(bars.symbol)
    try:
        if Path(source).resolve() == bundled_path(bars.symbol).resolve():
            return str(bars.symbol)
    except Exception:  # not a bundled symbol
        pass
    return str(Path(source).resolve())


def render_experiment(exp: ExperimentConfig, note: str = "") -> str:
    """The resolved experiment as YAML (every walk-forward field; sections as their overrides)."""
    import yaml

    header = "# HIMARI experiment, resolved. Repeat the run: himari run THIS_FILE --out NEW_RUN\n"
    if note:
        header += f"# {note}\n"
    return header + yaml.safe_dump(exp.to_dict(), sort_keys=False, default_flow_style=None, width=110)


def write_run_experiment(root: str | Path, config: WFOConfig, bars_by_symbol: Mapping[str, Any],
                         backend: str = "local", title: str | None = None) -> Path:
    """``RUN/experiment.yaml`` of a walk-forward run (see the module docstring)."""
    exp = ExperimentConfig.model_validate({
        "data": [data_spec(b) for b in bars_by_symbol.values()], "backend": backend, "title": title,
        "tracking": config.tracking.to_dict(), "walk_forward": config.to_dict(),
    })
    path = Path(root) / "experiment.yaml"
    atomic_write_text(path, render_experiment(exp))
    return path


