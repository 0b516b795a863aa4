"""Preallocated rollout storage ``(T, N, ...)`` and minibatch iteration (CleanRL / SB3 layout).

Observations are stored *normalized* (as the policy saw them), so the log-probabilities recomputed in the update
are exactly comparable with the stored rollout log-probabilities: the PPO ratio is ``exp(logπ_θ(a|s) - logπ_old)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch


class RolloutBatch(NamedTuple):
    """A minibatch. Feed-forward batches are flat ``(B, ...)``; sequence batches are ``(T, n, ...)`` with the
    recurrent/context ``state0`` at the start of the rollout for the selected environments."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    episode_starts: torch.Tensor
    state0: Any


class RolloutBuffer:
    """Storage for one rollout of ``n_steps`` steps over ``num_envs`` environments."""

    def __init__(self, n_steps: int, num_envs: int, obs_dim: int, action_shape: tuple[int, ...], action_dtype: torch.dtype) -> None:
        self.n_steps = n_steps
        self.num_envs = num_envs
        shape = (n_steps, num_envs)
        self.obs = torch.zeros((*shape, obs_dim), dtype=torch.float32)
        self.actions = torch.zeros((*shape, *action_shape), dtype=action_dtype)
        self.log_probs = torch.zeros(shape, dtype=torch.float32)
        self.values = torch.zeros(shape, dtype=torch.float32)
        self.rewards = torch.zeros(shape, dtype=torch.float32)
        self.terminated = torch.zeros(shape, dtype=torch.bool)
        self.truncated = torch.zeros(shape, dtype=torch.bool)
        self.episode_starts = torch.zeros(shape, dtype=torch.bool)
        self.next_values = torch.zeros(shape, dtype=torch.float32)
        self.advantages = torch.zeros(shape, dtype=torch.float32)
        self.returns = torch.zeros(shape, dtype=torch.float32)
        self.state0: Any = None

    def flat_minibatches(self, n_minibatches: int, generator: torch.Generator) -> Iterator[RolloutBatch]:
        """Random minibatches over all T·N transitions (feed-forward policies)."""
        total = self.n_steps * self.num_envs
        perm = torch.randperm(total, generator=generator)
        size = max(1, total // n_minibatches)
        obs = self.obs.reshape(total, -1)
        actions = self.actions.reshape(total, *self.actions.shape[2:])
        flat = [t.reshape(total) for t in (self.log_probs, self.values, self.advantages, self.returns, self.episode_starts)]
        for start in range(0, total - size + 1, size):
            idx = perm[start : start + size]
            yield RolloutBatch(obs[idx], actions[idx], *(f[idx] for f in flat), None)

    def sequence_minibatches(
        self, n_minibatches: int, generator: torch.Generator, select_state: Any
    ) -> Iterator[RolloutBatch]:
        """Minibatches of whole-rollout sequences over a subset of environments (recurrent/context policies).

        ``select_state(state0, env_index)`` slices the policy's rollout-start state for those environments.
        """
        perm = torch.randperm(self.num_envs, generator=generator)
        size = max(1, self.num_envs // n_minibatches)
        for start in range(0, self.num_envs - size + 1, size):
            idx = perm[start : start + size]
            yield RolloutBatch(
                self.obs[:, idx],
                self.actions[:, idx],
                self.log_probs[:, idx],
                self.values[:, idx],
                self.advantages[:, idx],
                self.returns[:, idx],
                self.episode_starts[:, idx],
                select_state(self.state0, idx),
            )
