"""K2: Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms"), the first-order MAML
variant, as a meta-learning phase that produces the initial weights of a PPO run.

Outer iteration i: draw a task T_i (seeded), copy the weights θ, run ``inner_updates`` PPO updates on T_i giving θ',
then ``θ ← θ + β (θ' − θ)`` (:func:`reptile_update`). With k = 1 inner SGD step this is joint training; with k > 1
it moves θ towards points from which a few steps reach each task's optimum (first-order MAML). Tasks here are
contiguous sub-windows of the training range (the walk-forward structure inside one window); the main training
that follows is the adaptation to the whole window.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from himari.utils.seeding import make_rng


def reptile_update(theta: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor], outer_lr: float
                   ) -> dict[str, torch.Tensor]:
    """``θ + β (θ' − θ)`` for every floating tensor (others, e.g. counters, are taken from ``adapted``)."""
    return {k: (v + outer_lr * (adapted[k] - v)) if v.is_floating_point() else adapted[k].clone()
            for k, v in theta.items()}


def task_ranges(train_range: tuple[int, int], tasks: int, min_bars: int) -> list[tuple[int, int]]:
    """``tasks`` contiguous sub-windows of ``train_range`` (fewer if one would hold fewer than ``min_bars``)."""
    lo, hi = train_range
    n = max(1, min(tasks, (hi - lo) // max(1, min_bars)))
    edges = lo + (np.arange(n + 1) * (hi - lo)) // n
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def reptile(policy: Any, n_tasks: int, outer_iterations: int, outer_lr: float, seed: int,
            adapt: Callable[[Any, int, int], None]) -> list[int]:
    """Meta-train ``policy`` in place: ``outer_iterations`` Reptile steps over ``n_tasks`` tasks.

    ``adapt(copy, task, iteration)`` trains a copy of the policy on one task (inner loop). The copy's observation
    normalizer statistics are kept (they accumulate over every task seen). Returns the tasks drawn, in order.
    """
    rng = make_rng(seed)
    drawn: list[int] = []
    for i in range(outer_iterations):
        task = int(rng.integers(0, n_tasks))
        drawn.append(task)
        inner = copy.deepcopy(policy)
        adapt(inner, task, i)
        theta = policy.net.state_dict()
        policy.net.load_state_dict(reptile_update(theta, inner.net.state_dict(), outer_lr))
        policy.obs_norm.load_state_dict(inner.obs_norm.state_dict())
    return drawn


def meta_initialize(policy: Any, market: Any, sim: Any, ppo: Any, train_range: tuple[int, int], num_envs: int,
                    seed: int) -> dict[str, Any]:
    """Run the Reptile phase of ``ppo.meta`` on ``policy`` in place (tasks: sub-windows of ``train_range``).
    Returns a summary (tasks, iterations, steps used); the caller trains the rest of the budget from the result."""
    from himari.agents.ppo.trainer import PPOTrainer, derived_seeds
    from himari.env.sim import SimVecEnv

    meta = ppo.meta
    batch = ppo.batch_size(num_envs)
    budget = int(ppo.total_steps * meta.budget_fraction)
    iterations = max(1, budget // (batch * meta.inner_updates))
    ranges = task_ranges(train_range, meta.tasks, sim.episode_length + sim.window + 2)
    inner_ppo = ppo.replace(total_steps=batch * meta.inner_updates, meta=None, curriculum=None, augment=None,
                            rare_events=None, aux=None, adversarial=None, lr_final_fraction=1.0)

    def adapt(inner: Any, task: int, iteration: int) -> None:
        lo, hi = ranges[task]
        task_seed = derived_seeds(seed, (1 << 42) + iteration)[0]
        env = SimVecEnv(market, sim, num_envs, seed=task_seed, start_index=lo, end_index=hi)
        PPOTrainer(inner, env, inner_ppo, seed=task_seed, progress=False, tensorboard=False,
                   description=f"reptile task {task}").train()

    drawn = reptile(policy, len(ranges), iterations, meta.outer_lr, seed, adapt)
    return {"tasks": [list(r) for r in ranges], "drawn": drawn, "iterations": iterations,
            "steps": iterations * batch * meta.inner_updates}
