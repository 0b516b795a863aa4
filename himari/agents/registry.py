"""The one list of policy kinds: implementing classes, families, defaults, and loading a saved policy without
unpickling code.

Every command, walk-forward, the benches and the offline trainer read the kinds from here. A saved policy directory
has ``policy.json`` ({"kind": ..., ...}) and weights in safetensors; each class listed has
``classmethod load(directory) -> instance``.

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
from typing import Any, Literal, NamedTuple

from himari.errors import ConfigError, RunDirError
from himari.utils.confine import read_json_object, safetensors_header

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
    "sizer-lstm": PolicyKind("himari.agents.ppo.policies:LSTMSizerPolicy", "ppo", "delta", 20, walk_forward=False),
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
    "mean-ensemble": PolicyKind("himari.agents.seed_ensemble:MeanActionEnsemble", "composite", walk_forward=False),
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
        if policy_kind(kind).family not in ("stack", "composite"):
            # a stack's layers and an ensemble's members are loaded and checked through this function
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
