"""Policy kinds -> implementing classes, and loading a saved policy without unpickling code.

A saved policy directory has ``policy.json`` ({"kind": ..., ...}) and weights in safetensors. Each class listed here
has ``classmethod load(directory) -> instance``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from himari.errors import RunDirError
from himari.utils.io import read_json

POLICY_CLASSES: dict[str, str] = {
    # PPO family (himari.agents.ppo)
    "mlp": "himari.agents.ppo.policies:MLPPolicy",
    "lstm": "himari.agents.ppo.policies:LSTMPolicy",
    "transformer": "himari.agents.ppo.policies:TransformerPolicy",
    "multiasset": "himari.agents.ppo.policies:MultiAssetPolicy",
    "sizer": "himari.agents.ppo.policies:SizerPolicy",
    # Offline RL and sequence models (himari.agents.offline)
    "mlp-classifier": "himari.agents.offline.classifier:ClassifierPolicy",
    "cql": "himari.agents.offline.cql:CQLPolicy",
    "dt": "himari.agents.offline.decision_transformer:DecisionTransformerPolicy",
    "cgdt": "himari.agents.offline.decision_transformer:CriticGuidedDTPolicy",
    "flag-trader": "himari.agents.offline.flag_trader:FlagTraderPolicy",
    "ensemble": "himari.agents.offline.ensemble:EnsemblePolicy",
    # Rule baselines (himari.agents.rules)
    "rule": "himari.agents.rules:RulePolicy",
}


def policy_class(kind: str) -> Any:
    if kind not in POLICY_CLASSES:
        raise RunDirError(f"unknown policy kind {kind!r}; known: {', '.join(sorted(POLICY_CLASSES))}")
    module_name, _, attr = POLICY_CLASSES[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_policy(directory: str | Path) -> Any:
    meta_path = Path(directory) / "policy.json"
    if not meta_path.exists():
        raise RunDirError(f"{directory}: no policy.json")
    kind = read_json(meta_path)["kind"]
    return policy_class(kind).load(directory)
