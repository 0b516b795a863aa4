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

    def __init__(self, n_steps: int, num_envs: int, obs_dim: int, action_shape: tuple[int, ...],
                 action_dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.n_steps = n_steps
        self.num_envs = num_envs
        self.device = torch.device(device)
        shape = (n_steps, num_envs)

        def zeros(size: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(size, dtype=dtype, device=self.device)

        self.obs = zeros((*shape, obs_dim), torch.float32)
        self.actions = zeros((*shape, *action_shape), action_dtype)
        self.log_probs = zeros(shape, torch.float32)
        self.values = zeros(shape, torch.float32)
        self.rewards = zeros(shape, torch.float32)
        self.terminated = zeros(shape, torch.bool)
        self.truncated = zeros(shape, torch.bool)
        self.episode_starts = zeros(shape, torch.bool)
        self.next_values = zeros(shape, torch.float32)
        self.advantages = zeros(shape, torch.float32)
        self.returns = zeros(shape, torch.float32)
        self.state0: Any = None

    def flat_minibatches(self, n_minibatches: int, generator: torch.Generator) -> Iterator[RolloutBatch]:
        """Random minibatches over all T·N transitions (feed-forward policies)."""
        total = self.n_steps * self.num_envs
        perm = torch.randperm(total, generator=generator).to(self.device)  # drawn on the host: same order on any device
        size = max(1, total // n_minibatches)
        obs = self.obs.reshape(total, -1)
        actions = self.actions.reshape(total, *self.actions.shape[2:])
        flat = [t.reshape(total) for t in (self.log_probs, self.values, self.advantages, self.returns, self.episode_starts)]
        for start in range(0, total - size + 1, size):
            idx = perm[start : start + size]
            # index_select: 3-6x faster than advanced indexing on the CPU for these row gathers
            yield RolloutBatch(obs.index_select(0, idx), actions.index_select(0, idx),
                               *(f.index_select(0, idx) for f in flat), None)

    def sequence_minibatches(
        self, n_minibatches: int, generator: torch.Generator, select_state: Any
    ) -> Iterator[RolloutBatch]:
        """Minibatches of whole-rollout sequences over a subset of environments (recurrent/context policies).

        ``select_state(state0, env_index)`` slices the policy's rollout-start state for those environments.
        """
        perm = torch.randperm(self.num_envs, generator=generator).to(self.device)
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
