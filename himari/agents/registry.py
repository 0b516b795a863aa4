"""The one list of policy kinds: implementing classes, families, defaults, and loading a saved policy without
unpickling code.

Every command, walk-forward, the benches and the offline trainer read the kinds from here. A saved policy directory
has ``policy.json`` ({"kind": ..., ...}) and weights in safetensors; each class listed has
``classmethod load(directory) -> instance``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal, NamedTuple

from himari.errors import RunDirError

Family = Literal["ppo", "stack", "offline", "composite", "rule"]


class PolicyKind(NamedTuple):
    target: str  # "module:Class"
    family: Family  # ppo: trained in the simulator; stack: L2 then L3 in the simulator; offline: from logged data;
    # composite / rule: not trained
    action_kind: str | None = None  # what a PPO kind acts: discrete / delta
    window: int | None = None  # default observation window (bars) of a PPO kind
    walk_forward: bool = True  # trainable per walk-forward window on its own


POLICY_KINDS: dict[str, PolicyKind] = {
    # PPO family (himari.agents.ppo): recurrent/context kinds see one bar per step and remember the rest
    "mlp": PolicyKind("himari.agents.ppo.policies:MLPPolicy", "ppo", "discrete", 8),
    "lstm": PolicyKind("himari.agents.ppo.policies:LSTMPolicy", "ppo", "discrete", 1),
    "transformer": PolicyKind("himari.agents.ppo.policies:TransformerPolicy", "ppo", "discrete", 1),
    "multiasset": PolicyKind("himari.agents.ppo.policies:MultiAssetPolicy", "ppo", "discrete", 24),
    "sizer": PolicyKind("himari.agents.ppo.policies:SizerPolicy", "ppo", "delta", 8, walk_forward=False),
    # The stack: an L2 direction policy (mlp) feeding an L3 bounded-delta sizer (himari.agents.stack)
    "stack": PolicyKind("himari.agents.stack:StackPolicy", "stack", "delta", 8),
    # Offline RL and sequence models (himari.agents.offline)
    "mlp-classifier": PolicyKind("himari.agents.offline.classifier:ClassifierPolicy", "offline"),
    "cql": PolicyKind("himari.agents.offline.cql:CQLPolicy", "offline"),
    "dt": PolicyKind("himari.agents.offline.decision_transformer:DecisionTransformerPolicy", "offline"),
    "cgdt": PolicyKind("himari.agents.offline.decision_transformer:CriticGuidedDTPolicy", "offline"),
    "flag-trader": PolicyKind("himari.agents.offline.flag_trader:FlagTraderPolicy", "offline"),
    # Composites and rule baselines
    "ensemble": PolicyKind("himari.agents.offline.ensemble:EnsemblePolicy", "composite", walk_forward=False),
    "rule": PolicyKind("himari.agents.rules:RulePolicy", "rule", walk_forward=False),
}

POLICY_CLASSES: dict[str, str] = {kind: spec.target for kind, spec in POLICY_KINDS.items()}
PPO_KINDS: tuple[str, ...] = tuple(k for k, s in POLICY_KINDS.items() if s.family == "ppo")
OFFLINE_KINDS: tuple[str, ...] = tuple(k for k, s in POLICY_KINDS.items() if s.family == "offline")
STACK_KINDS: tuple[str, ...] = tuple(k for k, s in POLICY_KINDS.items() if s.family == "stack")
TRAINABLE_KINDS: tuple[str, ...] = PPO_KINDS + STACK_KINDS + OFFLINE_KINDS
WALK_FORWARD_KINDS: tuple[str, ...] = tuple(k for k in TRAINABLE_KINDS if POLICY_KINDS[k].walk_forward)


def policy_kind(kind: str) -> PolicyKind:
    if kind not in POLICY_KINDS:
        raise RunDirError(f"unknown policy kind {kind!r}; known: {', '.join(sorted(POLICY_KINDS))}")
    return POLICY_KINDS[kind]


def policy_class(kind: str) -> Any:
    module_name, _, attr = policy_kind(kind).target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_policy(directory: str | Path) -> Any:
    meta_path = Path(directory) / "policy.json"
    if not meta_path.exists():
        raise RunDirError(f"{directory}: no policy.json")
    from himari.utils.io import read_json  # numpy-free module top: the CLI reads the kinds at start

    kind = read_json(meta_path)["kind"]
    return policy_class(kind).load(directory)
