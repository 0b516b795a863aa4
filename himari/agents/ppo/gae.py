"""Generalized advantage estimation with the distinction between termination and truncation.

For a rollout of length T over N episodes, with ``r_t`` the reward of the action taken at step t::

    next_value_t = V(s_{t+1})          if the episode continues,
                   V(final_obs_t)      if it was truncated at t (time limit / data end: bootstrap),
                   (unused)            if it terminated at t (ruin: no future).
    δ_t = r_t + γ · (1 - terminated_t) · next_value_t - V(s_t)
    A_t = δ_t + γ λ · (1 - done_t) · A_{t+1},      done_t = terminated_t or truncated_t
    R_t = A_t + V(s_t)                               (the value target)

References: Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation";
Pardo et al. 2018, "Time Limits in Reinforcement Learning" (bootstrap at truncation); SB3 ``RolloutBuffer``.
"""

from __future__ import annotations

import numpy as np
import torch


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and value targets, arrays (T, N).

    ``next_values[t]`` must hold ``V(s_{t+1})`` where the episode continues (for t = T-1: the value of the
    observation after the rollout) and ``V(final_obs_t)`` where it was truncated at t; entries where it terminated
    are ignored.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    next_values = np.asarray(next_values, dtype=np.float64)
    term = np.asarray(terminated, dtype=bool)
    done = term | np.asarray(truncated, dtype=bool)
    if not (rewards.shape == values.shape == next_values.shape == term.shape == done.shape) or rewards.ndim != 2:
        raise ValueError(
            f"compute_gae: shapes differ or are not (T, N): rewards {rewards.shape}, values {values.shape}, "
            f"next_values {next_values.shape}, terminated {term.shape}, truncated {done.shape}"
        )
    n_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1], dtype=np.float64)
    for t in range(n_steps - 1, -1, -1):
        delta = rewards[t] + gamma * np.where(term[t], 0.0, next_values[t]) - values[t]
        last = delta + gamma * gae_lambda * np.where(done[t], 0.0, last)
        advantages[t] = last
    returns = advantages + values
    return advantages.astype(np.float32), returns.astype(np.float32)


def compute_gae_torch(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`compute_gae` on tensors, on their device (no host copy): the same float64 recursion, so on the CPU
    the result equals the NumPy version exactly (tested)."""
    r = rewards.to(torch.float64)
    v = values.to(torch.float64)
    nv = next_values.to(torch.float64)
    term = terminated.to(torch.bool)
    done = term | truncated.to(torch.bool)
    if not (r.shape == v.shape == nv.shape == term.shape == done.shape) or r.ndim != 2:
        raise ValueError(
            f"compute_gae_torch: shapes differ or are not (T, N): rewards {tuple(r.shape)}, values {tuple(v.shape)}"
        )
    zero = torch.zeros((), dtype=torch.float64, device=r.device)
    advantages = torch.zeros_like(r)
    last = torch.zeros(r.shape[1], dtype=torch.float64, device=r.device)
    for t in range(r.shape[0] - 1, -1, -1):
        delta = r[t] + gamma * torch.where(term[t], zero, nv[t]) - v[t]
        last = delta + gamma * gae_lambda * torch.where(done[t], zero, last)
        advantages[t] = last
    returns = advantages + v
    return advantages.to(torch.float32), returns.to(torch.float32)
