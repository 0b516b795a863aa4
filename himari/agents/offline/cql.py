"""Discrete Conservative Q-Learning (Kumar et al., 2020, "Conservative Q-Learning for Offline RL", eq. 4, CQL(H)).

Two Q-networks ``Q_1, Q_2`` with Polyak-averaged target copies. For a transition ``(s, a, r, s', d)``::

    a*   = argmax_a' ½ (Q_1 + Q_2)(s', a')                              (double-DQN action selection)
    y    = κ r + γ (1 - d) min_i Q̄_i(s', a*)                            (κ = reward_scale, d = terminated)
    L_i  = ½ (Q_i(s, a) - y)²  +  α [ log Σ_a' exp Q_i(s, a') - Q_i(s, a) ]

The second term pushes Q down on actions the behaviour data did not take and up on those it did, so the greedy
policy stays where the data has support. d3rlpy implements the same algorithm (``DiscreteCQL``); it was not used
because installing it downgrades gymnasium and pulls in ``gym``. This implementation is cross-checked against the
exact ``Q*`` of a small MDP in ``tests/agents/offline/test_cql.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from himari.agents.base import PolicyOutput
from himari.agents.offline.classifier import probs_to_output
from himari.agents.offline.common import N_ACTIONS, TorchPolicyMixin, mlp, softmax_np, step_state
from himari.agents.offline.loop import OfflineAlgorithm
from himari.config import FrozenConfig
from himari.env.protocol import Observation
from himari.errors import DataError, RunDirError
from himari.utils.seeding import make_rng


class CQLConfig(FrozenConfig):
    state_dim: int = Field(ge=1)
    hidden: tuple[int, ...] = (128, 128)
    lr: float = Field(3e-4, gt=0)
    gamma: float = Field(0.99, ge=0.0, lt=1.0)
    alpha: float = Field(1.0, ge=0.0)  # conservative penalty weight
    tau: float = Field(0.005, gt=0.0, le=1.0)  # Polyak rate of the target networks
    batch_size: int = Field(256, ge=1)
    reward_scale: float = Field(100.0, gt=0)  # rewards are per-bar log returns (~1e-3)
    temperature: float = Field(1.0, gt=0)  # action probabilities = softmax(Q / temperature)
    seed: int = 0


class TwinQNet(nn.Module):
    """Two Q heads on a normalized state: ``(B, S) -> ((B, 3), (B, 3))``."""

    def __init__(self, config: CQLConfig) -> None:
        super().__init__()
        self.register_buffer("state_mean", torch.zeros(config.state_dim))
        self.register_buffer("state_std", torch.ones(config.state_dim))
        self.q1 = mlp(config.state_dim, config.hidden, N_ACTIONS)
        self.q2 = mlp(config.state_dim, config.hidden, N_ACTIONS)

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (states - self.state_mean) / self.state_std
        return self.q1(z), self.q2(z)


class CQLPolicy(TorchPolicyMixin):
    """Greedy policy of the twin Q-network (``himari.agents.base.Policy``, stateless, discrete)."""

    kind: ClassVar[str] = "cql"
    config_class: ClassVar[type[FrozenConfig]] = CQLConfig
    action_kind = "discrete"
    window = 1

    def __init__(self, config: CQLConfig, n_assets: int = 1) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        self.net = TwinQNet(config)
        self.net.eval()
        self.n_assets = n_assets
        self.meta: dict[str, Any] = {}
        self._rng = make_rng(config.seed)

    def q_values(self, states: np.ndarray) -> np.ndarray:
        """``(B, 3)`` mean of the two Q heads (in reward_scale units)."""
        with torch.no_grad():
            q1, q2 = self.net(torch.from_numpy(np.asarray(states, np.float32)))
        return ((q1 + q2) / 2).numpy()

    def initial_state(self, n: int) -> None:
        return None

    def reset_state(self, state: Any, done: np.ndarray) -> None:
        return None

    def act(self, obs: Observation, state: Any, deterministic: bool = True) -> tuple[PolicyOutput, Any]:
        n, _, a, _ = obs.features.shape
        q = self.q_values(step_state(obs))
        probs = softmax_np(q / self.config.temperature).reshape(n, a, N_ACTIONS)
        value = q.max(-1).reshape(n, a).mean(-1).astype(np.float32)
        return probs_to_output(probs, deterministic, self._rng, value), None


def cql_losses(net: TwinQNet, target: TwinQNet, batch: dict[str, torch.Tensor], config: CQLConfig
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss (both heads) and its parts for one minibatch (formula in the module docstring)."""
    s, a, r = batch["states"], batch["actions"], batch["rewards"]
    s2, term = batch["next_states"], batch["terminated"]
    q1, q2 = net(s)
    with torch.no_grad():
        n1, n2 = net(s2)
        a_star = ((n1 + n2) / 2).argmax(-1, keepdim=True)
        t1, t2 = target(s2)
        next_q = torch.min(t1.gather(1, a_star), t2.gather(1, a_star)).squeeze(1)
        y = config.reward_scale * r + config.gamma * (1.0 - term) * next_q
    td = q1.new_zeros(())
    conservative = q1.new_zeros(())
    for q in (q1, q2):
        q_taken = q.gather(1, a[:, None]).squeeze(1)
        td = td + 0.5 * F.mse_loss(q_taken, y)
        conservative = conservative + (torch.logsumexp(q, dim=1) - q_taken).mean()
    loss = td + config.alpha * conservative
    return loss, {"td": float(td.detach()), "conservative": float(conservative.detach())}


class CQLAlgorithm(OfflineAlgorithm):
    """CQL(H) on flat transitions (``TrajectoryData.flat()``) for the shared loop; owns the Polyak target copy.

    The state normalization of ``net`` is set from the transitions' states (mean, std floored at 1e-3).
    ``validate() -> score`` (higher is better) must use validation data only (e.g. a simulator rollout on the
    validation window); without it nothing is selected and the final weights are kept.
    """

    name: ClassVar[str] = "cql"

    def __init__(self, net: TwinQNet, transitions: dict[str, np.ndarray], config: CQLConfig,
                 validate: Callable[[], float] | None = None) -> None:
        n = transitions["actions"].shape[0]
        if n == 0:
            raise DataError("CQL: no transitions")
        self.module = net
        self.config = config
        self.n = n
        self._validate = validate
        states = torch.from_numpy(np.asarray(transitions["states"], np.float32))
        net.state_mean.copy_(states.mean(0))
        net.state_std.copy_(states.std(0).clamp_min(1e-3))
        self.tensors = {
            "states": states,
            "actions": torch.from_numpy(np.asarray(transitions["actions"], np.int64)),
            "rewards": torch.from_numpy(np.asarray(transitions["rewards"], np.float32)),
            "next_states": torch.from_numpy(np.asarray(transitions["next_states"], np.float32)),
            "terminated": torch.from_numpy(np.asarray(transitions["terminated"], np.float32)),
        }
        self.target = copy.deepcopy(net)
        for p in self.target.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.target.to(device)
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.from_numpy(rng.integers(0, self.n, size=min(batch_size, self.n))).to(self.device)
        return {k: v[idx] for k, v in self.tensors.items()}

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return cql_losses(self.module, self.target, batch, self.config)  # type: ignore[arg-type]

    def after_update(self) -> None:
        """Polyak averaging ``θ̄ ← (1 - τ) θ̄ + τ θ`` of the target networks."""
        tau = self.config.tau
        with torch.no_grad():
            for p, tp in zip(self.module.parameters(), self.target.parameters(), strict=True):
                tp.mul_(1.0 - tau).add_(p, alpha=tau)

    def validate(self) -> tuple[float | None, dict[str, float]]:
        return (None, {}) if self._validate is None else (float(self._validate()), {})

    def extra_state(self) -> dict[str, torch.Tensor]:
        return dict(self.target.state_dict())

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        try:
            self.target.load_state_dict(tensors)
        except RuntimeError as exc:
            raise RunDirError(f"CQL checkpoint: target network does not match: {exc}") from None
