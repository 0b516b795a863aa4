"""The hooks a training method adds to :class:`himari.agents.ppo.trainer.PPOTrainer` (all optional no-ops)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TrainingMethod:
    """A method plugged into the PPO trainer. Called, in order, per update ``u``:

    ``start_update(trainer, u)`` (before the checkpoint-boundary reset and the rollout), ``reseed(seed)`` at
    checkpoint boundaries (methods with their own random draws re-seed there, so a resumed run continues
    bit-identically), ``before_env_step(trainer, t)`` in the rollout, then per minibatch
    ``minibatch_obs(trainer, obs, batch)`` (may replace observations) and ``extra_loss(trainer)`` (added to the PPO
    loss). ``parameters()`` are optimized with the policy; ``state_dict()`` is checkpointed with its weights.
    """

    name = "method"

    def start_update(self, trainer: Any, update: int) -> None:
        return None

    def reseed(self, seed: int) -> None:
        return None

    def before_env_step(self, trainer: Any, t: int) -> None:
        return None

    def minibatch_obs(self, trainer: Any, obs: torch.Tensor, batch: Any) -> torch.Tensor:
        return obs

    def extra_loss(self, trainer: Any) -> torch.Tensor | None:
        return None

    def metrics(self) -> dict[str, float]:
        return {}

    def parameters(self) -> list[nn.Parameter]:
        return []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        return None
