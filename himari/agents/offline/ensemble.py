"""Ensembles of discrete policies: weighted probability averaging and weighted voting.

For members with action probabilities ``p_k(a | o)`` and weights ``w_k >= 0`` (normalized to sum 1):

* ``average``: ``p(a) = Σ_k w_k p_k(a)``, act on ``argmax_a p(a)``;
* ``vote``: ``p(a) = Σ_k w_k 1[a = argmax p_k]`` (the weighted vote shares), act on the largest share
  (ties go to the lowest action code, HOLD first).

Fixed-weight presets: production = FLAG-TRADER 0.50, CGDT 0.35, CQL 0.15; low-latency (cheap members only) = CQL
0.60, MLP 0.40.
``fit_weights`` fits the averaging weights on *validation* predictions by maximum likelihood with EM for mixture
weights (Dempster, Laird & Rubin, 1977): ``w_k ← mean_i [ w_k p_k(y_i) / Σ_j w_j p_j(y_i) ]``, which increases the
validation log-likelihood monotonically and keeps the weights on the simplex.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from safetensors.torch import save as st_save

from himari.agents.base import PolicyOutput
from himari.agents.offline.classifier import probs_to_output
from himari.agents.offline.common import N_ACTIONS
from himari.config import FrozenConfig
from himari.env.protocol import Observation
from himari.errors import ConfigError, RunDirError
from himari.utils.io import atomic_write_bytes, atomic_write_json
from himari.utils.seeding import make_rng

PRESETS: dict[str, dict[str, float]] = {
    "production": {"flag-trader": 0.50, "cgdt": 0.35, "cql": 0.15},
    "low-latency": {"cql": 0.60, "mlp-classifier": 0.40},
}


class EnsembleConfig(FrozenConfig):
    members: tuple[str, ...] = Field(min_length=1)  # member names (their directory names under members/)
    weights: tuple[float, ...] = Field(min_length=1)
    mode: Literal["average", "vote"] = "average"
    seed: int = 0  # for sampled (non-deterministic) actions

    def model_post_init(self, __context: object) -> None:
        if len(self.members) != len(self.weights):
            raise ConfigError(f"EnsembleConfig: {len(self.members)} members but {len(self.weights)} weights")
        if any(w < 0 or not np.isfinite(w) for w in self.weights) or sum(self.weights) <= 0:
            raise ConfigError(f"EnsembleConfig: weights must be finite, >= 0 and not all 0, got {self.weights}")
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"EnsembleConfig: duplicate member names {self.members}")


def combine_probs(member_probs: Sequence[np.ndarray], weights: Sequence[float], mode: str) -> np.ndarray:
    """Combine ``(..., 3)`` member probabilities into ensemble probabilities (see module docstring)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if mode == "average":
        return sum(wk * np.asarray(p, np.float64) for wk, p in zip(w, member_probs, strict=True))  # type: ignore[return-value]
    if mode == "vote":
        shares = np.zeros(np.asarray(member_probs[0]).shape, dtype=np.float64)
        for wk, p in zip(w, member_probs, strict=True):
            shares += wk * np.eye(N_ACTIONS)[np.asarray(p).argmax(-1)]
        return shares
    raise ConfigError(f"unknown ensemble mode {mode!r} (average, vote)")


def fit_weights(member_probs: Sequence[np.ndarray], labels: np.ndarray, iterations: int = 500,
                tol: float = 1e-10) -> np.ndarray:
    """Maximum-likelihood mixture weights on validation predictions ``(n, 3)`` per member (EM, see docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise ConfigError("fit_weights: no validation samples")
    lik = np.stack([np.clip(np.asarray(p)[np.arange(labels.size), labels], 1e-12, 1.0) for p in member_probs], 1)
    k = lik.shape[1]
    w = np.full(k, 1.0 / k)
    previous = -np.inf
    for _ in range(iterations):
        mix = lik @ w
        loglik = float(np.log(mix).mean())
        w = (lik * w / mix[:, None]).mean(0)
        if loglik - previous < tol:
            break
        previous = loglik
    return w / w.sum()


class EnsemblePolicy:
    """``himari.agents.base.Policy`` over member policies; its state is the list of member states."""

    kind: ClassVar[str] = "ensemble"
    action_kind = "discrete"

    def __init__(self, members: Sequence[Any], config: EnsembleConfig) -> None:
        if len(members) != len(config.members):
            raise ConfigError(f"ensemble: {len(members)} member policies for {len(config.members)} names")
        for name, member in zip(config.members, members, strict=True):
            if member.action_kind != "discrete":
                raise ConfigError(f"ensemble member {name!r} ({member.kind}) is not discrete")
        self.members = list(members)
        self.config = config
        self.window = max(int(m.window) for m in self.members)
        self.n_assets = max(int(getattr(m, "n_assets", 1)) for m in self.members)
        self.meta: dict[str, Any] = {}
        self._rng = make_rng(config.seed)

    @classmethod
    def from_preset(cls, preset: str, policies: Mapping[str, Any], mode: str = "average") -> EnsemblePolicy:
        """Ensemble of ``policies`` (kind -> policy) with the preset's weights; every preset kind must be given."""
        if preset not in PRESETS:
            raise ConfigError(f"unknown ensemble preset {preset!r}; known: {', '.join(PRESETS)}")
        missing = [k for k in PRESETS[preset] if k not in policies]
        if missing:
            raise ConfigError(f"ensemble preset {preset!r} needs trained {', '.join(missing)}")
        names = tuple(PRESETS[preset])
        config = EnsembleConfig(members=names, weights=tuple(PRESETS[preset][n] for n in names), mode=mode)
        return cls([policies[n] for n in names], config)

    def initial_state(self, n: int) -> list[Any]:
        return [m.initial_state(n) for m in self.members]

    def reset_state(self, state: list[Any], done: np.ndarray) -> list[Any]:
        return [m.reset_state(s, done) for m, s in zip(self.members, state, strict=True)]

    def act(self, obs: Observation, state: Any, deterministic: bool = True) -> tuple[PolicyOutput, Any]:
        if state is None:
            state = self.initial_state(obs.features.shape[0])
        probs, new_state, values = [], [], []
        for member, member_state in zip(self.members, state, strict=True):
            w = member.window
            sub = Observation(obs.features[:, -w:], obs.regime[:, -w:], obs.account)
            out, s = member.act(sub, member_state, deterministic=True)
            if out.action_probs is None:
                raise ConfigError(f"ensemble member {member.kind} returned no action probabilities")
            probs.append(out.action_probs)
            new_state.append(s)
            if out.value is not None:
                values.append(out.value)
        combined = combine_probs(probs, self.config.weights, self.config.mode).astype(np.float32)
        out = probs_to_output(combined, deterministic, self._rng)
        return out, new_state

    def save(self, directory: str | Path) -> None:
        root = Path(directory)
        for name, member in zip(self.config.members, self.members, strict=True):
            member.save(root / "members" / name)
        weights = torch.tensor(self.config.weights, dtype=torch.float64)
        atomic_write_bytes(root / "weights.safetensors", st_save({"weights": weights}))
        atomic_write_json(root / "policy.json", {"kind": self.kind, "config": self.config.to_dict(),
                                                 "member_kinds": [m.kind for m in self.members], "meta": self.meta})

    @classmethod
    def load(cls, directory: str | Path) -> EnsemblePolicy:
        from himari.agents.registry import load_policy
        from himari.utils.confine import check_name, inside, read_json_object

        root = Path(directory)
        if not (root / "policy.json").exists():
            raise RunDirError(f"{root}: no policy.json")
        meta = read_json_object(root / "policy.json", "policy.json")
        if not isinstance(meta.get("config"), dict):
            raise RunDirError(f"{root / 'policy.json'}: field 'config': missing or not an object")
        config = EnsembleConfig.parse(meta["config"])
        members = []
        for i, name in enumerate(config.members):
            # a member is a plain directory name under members/, inside this ensemble (no absolute path, '..',
            # symlink out) and not itself an ensemble (no recursion)
            check_name(name, f"config.members[{i}]", root / "policy.json")
            member_dir = inside(root, root / "members" / name, f"config.members[{i}]")
            member_kind = read_json_object(member_dir / "policy.json", "policy.json").get("kind")
            if member_kind == cls.kind:
                raise RunDirError(f"{member_dir}: field 'kind': an ensemble member cannot be an ensemble")
            members.append(load_policy(member_dir))
        policy = cls(members, config)
        policy.meta = dict(meta.get("meta", {}))
        return policy
