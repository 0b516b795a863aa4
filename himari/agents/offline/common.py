"""Shared plumbing for the offline models: observation encodings, save/load of torch policies, small nets.

Every offline model works per asset: an ``Observation`` with ``A`` assets is treated as ``N*A`` independent
streams (row ``n*A + a``), each seeing that asset's features, regime posterior and account. Two encodings exist:

* ``bar_inputs(obs, bars)``: ``(N*A, bars, F+R)`` float32, the last ``bars`` bars of features and regime
  posterior (classifier, FLAG-TRADER).
* ``step_state(obs)``: ``(N*A, F+R+K)`` float32, the decision bar's features and regime plus the account
  (CQL, Decision Transformers, offline trajectories).

Saved policies follow the registry contract: ``policy.json`` (``{"kind", "config", "meta"}``) and
``weights.safetensors`` (written to bytes with ``safetensors.torch.save`` then atomically), never pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from himari.config import FrozenConfig
from himari.env.protocol import ACCOUNT_FIELDS, Observation
from himari.errors import ConfigError, RunDirError
from himari.utils.io import atomic_write_bytes, atomic_write_json, read_json

N_ACTIONS = 3


def bar_inputs(obs: Observation, bars: int) -> np.ndarray:
    """``(N*A, bars, F+R)``: the last ``bars`` bars of features and regime posterior per asset stream."""
    n, w, a, _ = obs.features.shape
    if bars > w:
        raise ConfigError(f"policy needs a window of {bars} bars, observation has {w}")
    x = np.concatenate([obs.features[:, w - bars :], obs.regime[:, w - bars :]], axis=-1)  # (N, bars, A, F+R)
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3).reshape(n * a, bars, -1), dtype=np.float32)


def step_state(obs: Observation) -> np.ndarray:
    """``(N*A, F+R+K)``: decision bar features + regime posterior + account state, per asset stream."""
    n, _, a, _ = obs.features.shape
    parts = [obs.features[:, -1], obs.regime[:, -1], obs.account]  # each (N, A, .)
    return np.ascontiguousarray(np.concatenate(parts, axis=-1).reshape(n * a, -1), dtype=np.float32)


def equity_log(obs: Observation) -> np.ndarray:
    """``(N*A,)`` log(equity / initial equity) from the account (field 3 of ``ACCOUNT_FIELDS``)."""
    idx = ACCOUNT_FIELDS.index("equity_log")
    return np.ascontiguousarray(obs.account[..., idx].reshape(-1), dtype=np.float64)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear-ReLU stack ending in a linear layer of ``out_dim`` units."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = width
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)


def softmax_np(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (the maximum is subtracted before ``exp``)."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def save_torch_policy(directory: str | Path, kind: str, config: FrozenConfig, module: nn.Module,
                      meta: dict[str, Any] | None = None) -> Path:
    """Write ``policy.json`` and ``weights.safetensors`` atomically (weights first, so json marks completeness)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(root / "weights.safetensors", st_save(tensors))
    atomic_write_json(root / "policy.json", {"kind": kind, "config": config.to_dict(), "meta": meta or {}})
    return root


def read_policy_dir(directory: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(policy.json content, state dict)`` of a saved policy, checking its kind."""
    root = Path(directory)
    meta_path, weights_path = root / "policy.json", root / "weights.safetensors"
    if not meta_path.exists() or not weights_path.exists():
        raise RunDirError(f"{root}: expected policy.json and weights.safetensors")
    meta = read_json(meta_path)
    if meta.get("kind") != kind:
        raise RunDirError(f"{meta_path}: kind {meta.get('kind')!r}, expected {kind!r}")
    return meta, st_load(weights_path.read_bytes())


class TorchPolicyMixin:
    """Common ``save``/``load`` for policies holding one ``nn.Module`` (``self.net``) and one config."""

    kind: ClassVar[str]
    config_class: ClassVar[type[FrozenConfig]]
    net: nn.Module
    config: FrozenConfig
    meta: dict[str, Any]

    def save(self, directory: str | Path) -> None:
        save_torch_policy(directory, self.kind, self.config, self.net, self.meta)

    @classmethod
    def load(cls, directory: str | Path) -> Any:
        meta, state = read_policy_dir(directory, cls.kind)
        policy = cls(cls.config_class.parse(meta["config"]))  # type: ignore[call-arg]
        try:
            policy.net.load_state_dict(state)
        except RuntimeError as exc:
            raise RunDirError(f"{directory}: weights do not match policy.json config: {exc}") from None
        policy.meta = dict(meta.get("meta", {}))
        policy.net.eval()
        return policy
