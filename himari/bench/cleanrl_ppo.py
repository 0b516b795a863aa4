"""A single-file CleanRL-style PPO, the contender of ``himari bench ppo`` (not used for training).

A faithful port of CleanRL's ``ppo.py`` (Huang et al. 2022, https://github.com/vwxyzjn/cleanrl, discrete actions)
onto HIMARI's simulator: the same vectorized :class:`~himari.env.sim.SimVecEnv` the HIMARI trainer drives, its
flattened observation, the same network (separate 64-64 tanh actor and critic MLPs, orthogonal init, policy gain
0.01, value gain 1), the same rollout length, number of environments, epochs and minibatches, and CleanRL's
loop as written: ``torch.distributions.Categorical``, a Python GAE loop over torch tensors, flat minibatches over
a shuffled index, clipped value loss, advantage normalization, global grad-norm clipping, linear LR annealing.
As in CleanRL, observations are not normalized and truncation is treated as termination (no bootstrap); HIMARI's
trainer does both, so it does strictly more work per step. The shuffle uses an explicit seeded generator (CleanRL
seeds the global NumPy state), as the house rules require.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn, optim
from torch.distributions.categorical import Categorical

from himari.env.protocol import flatten_observation
from himari.env.sim import SimVecEnv


def layer_init(layer: nn.Linear, std: float = float(np.sqrt(2)), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, n_actions), std=0.01),
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.actor(x)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


def train_cleanrl_ppo(
    envs: SimVecEnv,
    total_timesteps: int,
    num_steps: int = 64,
    update_epochs: int = 4,
    num_minibatches: int = 4,
    learning_rate: float = 3e-4,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
    clip_coef: float = 0.2,
    ent_coef: float = 0.01,
    vf_coef: float = 0.5,
    max_grad_norm: float = 0.5,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[int, float]:
    """Train for ``total_timesteps`` (whole iterations); returns (env steps taken, wall seconds of training).
    ``device``: where the agent and storage live (CleanRL's ``--cuda``); the simulator stays on the host."""
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    num_envs = envs.num_envs
    batch_size = num_envs * num_steps
    minibatch_size = batch_size // num_minibatches
    num_iterations = max(1, total_timesteps // batch_size)
    obs_dim = envs.window * envs.num_assets * (envs.n_features + envs.n_regimes) + envs.num_assets * envs.n_account
    agent = Agent(obs_dim, 3).to(dev)
    optimizer = optim.Adam(agent.parameters(), lr=learning_rate, eps=1e-5)

    obs = torch.zeros((num_steps, num_envs, obs_dim)).to(dev)
    actions = torch.zeros((num_steps, num_envs)).to(dev)
    logprobs = torch.zeros((num_steps, num_envs)).to(dev)
    rewards = torch.zeros((num_steps, num_envs)).to(dev)
    dones = torch.zeros((num_steps, num_envs)).to(dev)
    values = torch.zeros((num_steps, num_envs)).to(dev)

    start_time = time.perf_counter()
    global_step = 0
    next_obs = torch.Tensor(flatten_observation(envs.reset(seed=seed))).to(dev)
    next_done = torch.zeros(num_envs).to(dev)
    for iteration in range(1, num_iterations + 1):
        frac = 1.0 - (iteration - 1.0) / num_iterations
        optimizer.param_groups[0]["lr"] = frac * learning_rate

        for step in range(num_steps):
            global_step += num_envs
            obs[step] = next_obs
            dones[step] = next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob
            result = envs.step(action.cpu().numpy()[:, None])
            next_done_np = np.logical_or(result.terminated, result.truncated)
            rewards[step] = torch.tensor(result.reward).to(dev).view(-1)
            next_obs = torch.Tensor(flatten_observation(result.obs)).to(dev)
            next_done = torch.Tensor(next_done_np).to(dev)

        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam: torch.Tensor | float = 0
            for t in reversed(range(num_steps)):
                if t == num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        b_obs = obs.reshape((-1, obs_dim))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        b_inds = np.arange(batch_size)
        clipfracs = []
        for _epoch in range(update_epochs):
            rng.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                end = start + minibatch_size
                mb_inds = b_inds[start:end]

                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions.long()[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()  # noqa: F841 - logged in CleanRL
                    clipfracs += [((ratio - 1.0).abs() > clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                newvalue = newvalue.view(-1)
                v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -clip_coef, clip_coef)
                v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
                optimizer.step()

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        _explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
    return global_step, time.perf_counter() - start_time
