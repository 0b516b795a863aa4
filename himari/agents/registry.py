"""Policy kinds -> implementing classes, and loading a saved policy without unpickling code.

A saved policy directory has ``policy.json`` ({"kind": ..., ...}) and weights in safetensors. Each class listed here
has ``classmethod load(directory) -> instance``.

:func:`load_policy` checks before it builds: ``policy.json`` is a JSON object with a known ``kind``; the weights
file's safetensors header is consistent with the file (:func:`himari.utils.confine.safetensors_header`); the policy
is first built on PyTorch's ``meta`` device, which allocates nothing, so a config whose shapes disagree with the
weights (e.g. ``hidden_sizes [200000, 200000]``) is refused before any memory is taken; after the real build every
parameter must be finite (a policy holding NaN cannot decide).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

from himari.errors import ConfigError, RunDirError
from himari.utils.confine import read_json_object, safetensors_header

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
    """The policy saved in ``directory`` (checked as described in the module docstring)."""
    import torch

    root = Path(directory)
    meta_path = root / "policy.json"
    if not meta_path.exists():
        raise RunDirError(f"{directory}: no policy.json")
    kind = read_json_object(meta_path, "policy.json").get("kind")
    if not isinstance(kind, str):
        raise RunDirError(f"{meta_path}: field 'kind': missing or not a string")
    cls = policy_class(kind)
    weights = root / "weights.safetensors"
    if weights.exists():
        safetensors_header(weights)
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op": intended here
            cls.load(root)  # shapes of policy.json against the weights, nothing allocated
    except (RunDirError, ConfigError):
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{meta_path}: policy.json is incomplete or malformed ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from None
    try:
        policy = cls.load(root)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirError(f"{meta_path}: policy.json is incomplete or malformed ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from None
    check_finite_parameters(policy, root)
    return policy


def policy_tensors(policy: Any) -> dict[str, Any]:
    """Named parameter/buffer tensors of a policy (PPO ``state_dict``, offline ``net``, ensemble members)."""
    members = getattr(policy, "members", None)
    if isinstance(members, list):
        out: dict[str, Any] = {}
        for i, member in enumerate(members):
            out.update({f"members.{i}.{k}": v for k, v in policy_tensors(member).items()})
        return out
    state_dict = getattr(policy, "state_dict", None)
    if callable(state_dict):
        state = state_dict()
        if isinstance(state, dict):
            return state
    net = getattr(policy, "net", None)
    if net is not None and hasattr(net, "state_dict"):
        return dict(net.state_dict())
    return {}


def check_finite_parameters(policy: Any, where: str | Path) -> None:
    """RunDirError naming the first parameter holding NaN or infinity: such a policy cannot decide."""
    import torch

    for name, tensor in policy_tensors(policy).items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.device.type != "meta":
            if not bool(torch.isfinite(tensor).all()):
                raise RunDirError(f"{where}: parameter {name!r} holds NaN or infinite values; this policy cannot decide")
