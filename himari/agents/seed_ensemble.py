"""Seed ensembles: the K policies of one configuration, trained with different seeds, acting as one.

Which seed a run happened to draw is noise, not a choice worth a trial: walk-forward trains every configuration with
K seeds and trades their ensemble instead of selecting one (:func:`seed_ensemble`).

* discrete members (HOLD/LONG/SHORT): :class:`himari.agents.offline.ensemble.EnsemblePolicy` with equal weights,
  averaging the members' action probabilities;
* delta / continuous members (the L3 sizer): :class:`MeanActionEnsemble`, the mean of the members' deterministic
  actions (raw outputs, before the simulator maps them to positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from himari.agents.base import PolicyOutput
from himari.env.protocol import Observation
from himari.errors import ConfigError, RunDirError
from himari.utils.io import atomic_write_json

MEAN_ENSEMBLE_FORMAT = 1


def member_names(k: int) -> tuple[str, ...]:
    return tuple(f"seed{i}" for i in range(k))


class MeanActionEnsemble:
    """``himari.agents.base.Policy`` over delta or continuous members: the mean of their deterministic actions."""

    kind: ClassVar[str] = "mean-ensemble"

    def __init__(self, members: Sequence[Any]) -> None:
        if not members:
            raise ConfigError("mean ensemble: no members")
        kinds = {m.action_kind for m in members}
        if len(kinds) != 1 or next(iter(kinds)) == "discrete":
            raise ConfigError(f"mean ensemble: members must share one non-discrete action kind, got {sorted(kinds)}")
        if len({(int(m.window), int(m.n_assets)) for m in members}) != 1:
            raise ConfigError("mean ensemble: members must see the same window and assets")
        self.members = list(members)
        self.action_kind = self.members[0].action_kind
        self.window = int(self.members[0].window)
        self.n_assets = int(self.members[0].n_assets)

    def initial_state(self, n: int) -> list[Any]:
        return [m.initial_state(n) for m in self.members]

    def reset_state(self, state: list[Any], done: np.ndarray) -> list[Any]:
        return [m.reset_state(s, done) for m, s in zip(self.members, state, strict=True)]

    def act(self, obs: Observation, state: Any, deterministic: bool = True, **kwargs: Any) -> tuple[PolicyOutput, Any]:
        if state is None:
            state = self.initial_state(obs.features.shape[0])
        actions, values, new_state = [], [], []
        for member, member_state in zip(self.members, state, strict=True):
            out, s = member.act(obs, member_state, deterministic=True, **kwargs)
            actions.append(np.asarray(out.action, dtype=np.float64))
            if out.value is not None:
                values.append(np.asarray(out.value, dtype=np.float64))
            new_state.append(s)
        action = np.mean(actions, axis=0).astype(np.float32)
        value = np.mean(values, axis=0).astype(np.float32) if len(values) == len(actions) else None
        return PolicyOutput(action, None, value), new_state

    def save(self, directory: str | Path) -> None:
        root = Path(directory)
        names = member_names(len(self.members))
        for name, member in zip(names, self.members, strict=True):
            member.save(root / "members" / name)
        atomic_write_json(root / "policy.json", {"format": MEAN_ENSEMBLE_FORMAT, "kind": self.kind,
                                                 "members": list(names)})

    @classmethod
    def load(cls, directory: str | Path) -> MeanActionEnsemble:
        from himari.agents.registry import load_policy
        from himari.utils.confine import check_name, inside, read_json_object

        root = Path(directory)
        meta = read_json_object(root / "policy.json", "policy.json")
        if meta.get("kind") != cls.kind or meta.get("format") != MEAN_ENSEMBLE_FORMAT:
            raise RunDirError(f"{root / 'policy.json'}: not a mean ensemble of format {MEAN_ENSEMBLE_FORMAT}")
        names = meta.get("members")
        if not isinstance(names, list) or not names:
            raise RunDirError(f"{root / 'policy.json'}: field 'members': missing or empty")
        members = []
        for i, name in enumerate(names):
            check_name(name, f"members[{i}]", root / "policy.json")
            member_dir = inside(root, root / "members" / name, f"members[{i}]")
            kind = read_json_object(member_dir / "policy.json", "policy.json").get("kind")
            if kind in (cls.kind, "ensemble"):
                raise RunDirError(f"{member_dir}: field 'kind': an ensemble member cannot be an ensemble")
            members.append(load_policy(member_dir))
        return cls(members)


def seed_ensemble(policies: Sequence[Any]) -> Any:
    """One policy acting for the K seeds of a configuration (the policy itself when K = 1)."""
    from himari.agents.offline.ensemble import EnsembleConfig, EnsemblePolicy

    if not policies:
        raise ConfigError("seed ensemble: no policies")
    if len(policies) == 1:
        return policies[0]
    if all(p.action_kind == "discrete" for p in policies):
        names = member_names(len(policies))
        return EnsemblePolicy(list(policies), EnsembleConfig(members=names, weights=(1.0,) * len(policies)))
    return MeanActionEnsemble(policies)


def ensemble_members(policy: Any) -> list[Any]:
    """The member policies of a seed ensemble (``[policy]`` for a single policy)."""
    members = getattr(policy, "members", None)
    return list(members) if members else [policy]
