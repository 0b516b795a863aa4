"""K6: adversarial training. Before the PPO loss of every minibatch, a fraction ``mix`` of its observations
(a seeded draw per minibatch) is replaced by its attack (:mod:`.attacks`) against the current weights, with the
rollout's actions as the reference; the PPO surrogate, value and entropy terms then train on the mixture (the
stored log-probabilities stay those of the clean observations the actions were drawn from)."""

from __future__ import annotations

from typing import Any

import torch

from himari.agents.ppo.methods.attacks import attack, decision_loss, feature_mask
from himari.agents.ppo.methods.base import TrainingMethod
from himari.agents.ppo.methods.config import AdversarialConfig


class AdversarialTraining(TrainingMethod):
    name = "adversarial"

    def __init__(self, config: AdversarialConfig) -> None:
        self.config = config
        self.generator = torch.Generator()
        self._shift: list[torch.Tensor] = []

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def minibatch_obs(self, trainer: Any, obs: torch.Tensor, batch: Any) -> torch.Tensor:
        net = trainer.policy.net
        c = self.config
        mask = feature_mask(trainer.policy.spec, c.target, obs.device)
        head = net.head
        actions = batch.actions
        if getattr(head, "kind", "") == "continuous":
            with torch.no_grad():  # reference direction: the current mean at the clean observation
                reference = net.forward_sequence(obs, batch.state0, batch.episode_starts)[0][0]
        else:
            reference = actions.reshape(-1, *actions.shape[-1:])

        def loss_fn(x: torch.Tensor) -> torch.Tensor:
            params, _ = net.forward_sequence(x, batch.state0, batch.episode_starts)
            return decision_loss(head, params, reference)

        adv = attack(loss_fn, obs, c.eps, c.steps, c.alpha, mask)
        lead = obs.shape[:-1]
        pick = (torch.rand(lead, generator=self.generator) < c.mix).to(obs.device).unsqueeze(-1)
        self._shift.append((adv - obs).abs().amax().detach())
        return torch.where(pick, adv, obs)

    def metrics(self) -> dict[str, float]:
        out = {"adversarial_max_shift": float(torch.stack(self._shift).max())} if self._shift else {}
        self._shift.clear()
        return out
