"""How a PPO run assembles its optional training methods (called by :func:`himari.training.ppo.fit_ppo`)."""

from __future__ import annotations

from typing import Any

from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.methods.augment import AugmentSource, mixture_env
from himari.agents.ppo.methods.base import TrainingMethod
from himari.agents.ppo.methods.curriculum import Curriculum, PooledSimVecEnv
from himari.env.market import MarketData
from himari.env.sim import SimConfig, SimVecEnv


def training_env(market: MarketData, sim: SimConfig, ppo: PPOConfig, train_range: tuple[int, int], num_envs: int,
                 seed: int, source: AugmentSource | None = None) -> tuple[Any, SimVecEnv]:
    """(the training env, its env on the real bars). Without methods: the plain :class:`SimVecEnv` (as before);
    with a curriculum the real env draws starts from pools; with augmentation / rare events a mixture env."""
    lo, hi = train_range

    def make_real(n: int) -> SimVecEnv:
        cls = PooledSimVecEnv if ppo.curriculum is not None else SimVecEnv
        return cls(market, sim, n, seed=seed, start_index=lo, end_index=hi)

    if ppo.augment is None and ppo.rare_events is None:
        env = make_real(num_envs)
        return env, env
    return mixture_env(market, sim, train_range, num_envs, seed, make_real, ppo.augment, ppo.rare_events, source)


def training_methods(policy: Any, env: Any, real_env: SimVecEnv, ppo: PPOConfig, seed: int) -> list[TrainingMethod]:
    """The trainer hooks of the methods ``ppo`` switches on (empty: training exactly as without methods)."""
    from himari.agents.ppo.methods.adversarial import AdversarialTraining
    from himari.agents.ppo.methods.aux import AuxTasks

    methods: list[TrainingMethod] = []
    if ppo.curriculum is not None:
        assert isinstance(real_env, PooledSimVecEnv)
        methods.append(Curriculum(real_env, ppo.curriculum))
    if ppo.aux is not None:
        methods.append(AuxTasks(policy, env, ppo.aux, seed, ppo.n_steps, ppo.n_minibatches))
    if ppo.adversarial is not None:
        methods.append(AdversarialTraining(ppo.adversarial))
    return methods
