"""Validation of a run's configuration sections before any work starts.

A training or walk-forward run composes typed configs of every layer: ``ppo`` (:class:`PPOConfig`), ``policy_config``
(the policy kind's own config), ``sim`` (:class:`SimConfig` overrides), ``tactical`` (:class:`TacticalConfig`),
``sizing`` (:class:`SizingConfig`), ``risk`` (:class:`RiskConfig`) and ``offline`` (options of the offline trainers).
:func:`validate_sections` parses each against its typed config, so a typo anywhere is a one-line
:class:`~himari.errors.ConfigError` naming the section and the key, and rejects a section that the policy kind does
not use (an ``offline`` section on a PPO run, ``ppo`` settings on an offline run).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from himari.agents.ppo.config import PPOConfig
from himari.agents.registry import policy_class, policy_kind
from himari.config import FrozenConfig
from himari.env.sim import SimConfig
from himari.errors import ConfigError, RunDirError
from himari.risk.config import RiskConfig
from himari.sizing.sizer import SizingConfig
from himari.tactical.pipeline import TacticalConfig
from himari.training.offline import validate_options

SECTIONS: tuple[str, ...] = ("ppo", "policy_config", "sim", "tactical", "sizing", "risk", "offline")
_SECTIONS_OF = {
    "ppo": {"ppo", "policy_config", "sim", "tactical", "sizing", "risk"},
    "stack": {"ppo", "policy_config", "sim", "tactical", "sizing", "risk"},
    "offline": {"offline", "tactical", "sizing", "risk"},
}


def _parse(where: str, section: str, config_class: type[FrozenConfig], values: dict[str, Any] | None) -> None:
    if values is None:
        return
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: section {section!r} must be a mapping, got {type(values).__name__}")
    try:
        config_class.parse(values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {section}: {exc}") from None


def validate_sections(kind: str, where: str, **sections: dict[str, Any] | None) -> None:
    """Check every given section of a run of policy ``kind`` (see the module docstring); ``where`` names the run
    (e.g. "walk-forward config") in the message."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{where}: unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    try:
        spec = policy_kind(kind)
    except RunDirError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    allowed = _SECTIONS_OF.get(spec.family)
    if allowed is None:
        raise ConfigError(f"{where}: policy kind {kind!r} ({spec.family}) is not trained by a run")
    unused = sorted(name for name, values in sections.items() if values and name not in allowed)
    if unused:
        raise ConfigError(f"{where}: section {unused[0]!r} is not used by a {spec.family} run of {kind!r}")
    _parse(where, "tactical", TacticalConfig, sections.get("tactical"))
    _parse(where, "sizing", SizingConfig, sections.get("sizing"))
    _parse(where, "risk", RiskConfig, sections.get("risk"))
    if spec.family == "offline" and sections.get("offline"):
        try:
            validate_options(kind, sections.get("offline"))
        except ConfigError as exc:
            raise ConfigError(f"{where}: offline: {exc}") from None
    if spec.family in ("ppo", "stack"):
        _parse(where, "ppo", PPOConfig, sections.get("ppo"))
        _parse(where, "sim", SimConfig, sections.get("sim"))
    if spec.family == "ppo":
        _parse(where, "policy_config", policy_class(kind).config_class, sections.get("policy_config"))
    if spec.family == "stack" and sections.get("policy_config"):
        pc = sections["policy_config"]
        unknown = set(pc) - {"direction", "sizer", "direction_kind", "sizer_kind"}
        if unknown:
            raise ConfigError(f"{where}: policy_config: unknown keys {sorted(unknown)}; a stack takes direction, "
                              "sizer, direction_kind, sizer_kind")
        from himari.training.ppo import stack_kinds

        try:
            l2, l3 = stack_kinds(pc)
        except ConfigError as exc:
            raise ConfigError(f"{where}: policy_config: {exc}") from None
        if policy_kind(l2).family == "offline":
            try:
                validate_options(l2, pc.get("direction") or {})
            except ConfigError as exc:
                raise ConfigError(f"{where}: policy_config.direction: {exc}") from None
        else:
            _parse(where, "policy_config.direction", policy_class(l2).config_class, pc.get("direction"))
        _parse(where, "policy_config.sizer", policy_class(l3).config_class, pc.get("sizer"))


class TrainRunConfig(FrozenConfig):
    """A ``himari train`` run: data, windows, budget and every layer's settings (written to ``RUN/config.json``;
    ``himari train --config RUN/config.json`` reruns it, options on the command line override its fields)."""

    policy: str
    data: tuple[str, ...] = ("BTCUSDT",)
    train_start: str = "2023-01-01"
    train_end: str = "2024-01-01"
    val_end: str = "2024-04-01"
    steps: int = Field(100_000, ge=1, description="PPO: environment steps; offline kinds: samples processed")
    seed: int = 0
    pretrain_synthetic: int = Field(0, ge=0, description="PPO: synthetic pre-training steps (0: none)")
    num_envs: int = Field(32, ge=1)
    ppo: dict[str, Any] = Field(default_factory=dict)
    policy_config: dict[str, Any] = Field(default_factory=dict)
    sim: dict[str, Any] = Field(default_factory=dict)
    tactical: dict[str, Any] = Field(default_factory=dict)
    sizing: dict[str, Any] = Field(default_factory=dict)
    risk: dict[str, Any] = Field(default_factory=dict)
    offline: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_sections(self) -> TrainRunConfig:
        try:
            validate_sections(
                self.policy, "train config", ppo=self.ppo, policy_config=self.policy_config, sim=self.sim,
                tactical=self.tactical, sizing=self.sizing, risk=self.risk, offline=self.offline,
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def sim_overrides(self) -> dict[str, Any]:
        """Simulator overrides with the positioning and risk layers the policy trains (and trades) with."""
        out: dict[str, Any] = {"sizing": dict(self.sizing), "risk": dict(self.risk)}
        out.update(self.sim)
        return out
