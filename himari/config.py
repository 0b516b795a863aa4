"""Typed, frozen, validated configuration.

Every component has one config class derived from :class:`FrozenConfig`: unknown fields are an error, values are
range-checked by pydantic when the config is built, and nothing can be changed after parsing. A run config composes
component configs; :func:`config_hash` of it (plus the seed) names a run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from himari.errors import ConfigError

C = TypeVar("C", bound="FrozenConfig")


class FrozenConfig(BaseModel):
    """Base class for component configs: frozen, no unknown fields, validated on construction."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def parse(cls: type[C], data: dict[str, Any] | None = None, **overrides: Any) -> C:
        """Build from a dict (e.g. loaded JSON) plus keyword overrides; raise :class:`ConfigError` on bad input."""
        merged = dict(data or {})
        merged.update(overrides)
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"{cls.__name__}: {loc}: {msg}" if loc else f"{cls.__name__}: {msg}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some fields changed (fields left out of :meth:`to_dict` are kept too)."""
        data = self.to_dict()
        for name, info in type(self).model_fields.items():
            if info.exclude and name not in changes:
                value = getattr(self, name)
                data[name] = value.to_dict() if isinstance(value, FrozenConfig) else value
        return type(self).parse(data, **changes)


def config_hash(config: FrozenConfig | dict[str, Any]) -> str:
    """Short, stable hash of a config's canonical JSON (sorted keys)."""
    payload = config.to_dict() if isinstance(config, FrozenConfig) else config
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; dict values are merged recursively, anything else replaces."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out
