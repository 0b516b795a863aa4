"""K4: multi-task learning with auxiliary heads on the policy's encoder.

The encoder output is the input ``z`` of the policy's action head (captured by a forward hook, so any feed-forward
network works). Three small heads read ``z``: next-bar return ``r_{t+1} / σ_t`` (MSE), log realized volatility
``log(sqrt(mean_{k=1..h} r_{t+k}^2) / σ_t)`` (MSE) and the regime ``H`` bars ahead, argmax of the causal posterior
(cross-entropy); r and σ are asset-averaged log returns and trailing per-bar volatility of the market. These are
training labels only (never policy inputs); a label reading a bar at or after the end of the training range is
masked out, so the validation period is never touched. The loss added to PPO's is
``w_r L_r + w_v L_v + w_k L_k`` on a seeded random subset of the rollout (one per minibatch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from himari.agents.ppo.methods.base import TrainingMethod
from himari.agents.ppo.methods.config import AuxConfig
from himari.env.market import MarketData
from himari.errors import ConfigError

VOL_FLOOR = 1e-6
TARGET_CLIP = 10.0


def aux_targets(market: MarketData, t: np.ndarray, end_index: int, config: AuxConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels of decision bars ``t`` (any shape): (return, log-vol, regime index, valid mask)."""
    r = np.nan_to_num(market.log_return, nan=0.0).mean(axis=1)
    sigma = np.maximum(np.nan_to_num(market.volatility, nan=0.0).mean(axis=1), VOL_FLOOR)
    regime = market.regime_posterior.mean(axis=1).argmax(axis=1)
    t = np.asarray(t, dtype=np.int64)
    h, hr = config.vol_horizon, config.regime_horizon
    valid = t + max(h, hr) < end_index
    safe = np.where(valid, t, 0)
    ret = np.clip(r[np.minimum(safe + 1, len(r) - 1)] / sigma[safe], -TARGET_CLIP, TARGET_CLIP)
    r2 = np.concatenate([[0.0], np.cumsum(r * r)])
    hi = np.minimum(safe + h + 1, len(r))
    fwd = np.sqrt(np.maximum((r2[hi] - r2[safe + 1]) / h, 0.0))
    logvol = np.clip(np.log(np.maximum(fwd, VOL_FLOOR) / sigma[safe]), -TARGET_CLIP, TARGET_CLIP)
    reg = regime[np.minimum(safe + hr, len(r) - 1)]
    return ret, logvol, reg.astype(np.int64), valid


class AuxHeads(nn.Module):
    def __init__(self, in_dim: int, hidden: int, n_regimes: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh())
        self.ret = nn.Linear(hidden, 1)
        self.vol = nn.Linear(hidden, 1)
        self.regime = nn.Linear(hidden, n_regimes)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.trunk(z)
        return self.ret(h).squeeze(-1), self.vol(h).squeeze(-1), self.regime(h)


class AuxTasks(TrainingMethod):
    """Records the decision bar of every rollout step and adds the auxiliary loss (see the module docstring)."""

    name = "aux"

    def __init__(self, policy: Any, env: Any, config: AuxConfig, seed: int, n_steps: int, n_minibatches: int) -> None:
        if policy.recurrent:
            raise ConfigError("ppo.aux: auxiliary heads need a feed-forward policy (mlp, multi_asset, sizer)")
        if not hasattr(env, "state") or not hasattr(env, "market"):
            raise ConfigError("ppo.aux: needs the plain market simulator (not combined with augment/rare_events)")
        self.policy, self.env, self.config = policy, env, config
        self.times = np.zeros((n_steps, env.num_envs), dtype=np.int64)
        self.n_minibatches = n_minibatches
        self.generator = torch.Generator().manual_seed(seed)
        self._z: torch.Tensor | None = None
        with torch.no_grad():
            x = torch.zeros(1, policy.spec.obs_dim)
            self._capture(x)
        assert self._z is not None
        with torch.random.fork_rng(devices=[]):  # the heads' initial weights: a function of the run's seed only
            torch.manual_seed(seed)
            self.heads = AuxHeads(int(self._z.shape[-1]), config.hidden, policy.spec.n_regimes)
        self._losses: list[torch.Tensor] = []

    def _capture(self, x: torch.Tensor) -> torch.Tensor:
        net = self.policy.net
        handle = net.head.register_forward_hook(lambda _m, inputs, _o: setattr(self, "_z", inputs[0]))
        try:
            net.forward_step(x, None)
        finally:
            handle.remove()
        assert self._z is not None
        return self._z

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def before_env_step(self, trainer: Any, t: int) -> None:
        self.times[t] = self.env.state.t

    def parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.heads.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.heads.load_state_dict(state)

    def loss(self, obs: torch.Tensor, times: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted auxiliary loss of observations ``obs (B, D)`` at decision bars ``times (B,)``."""
        c = self.config
        ret, logvol, reg, valid = aux_targets(self.env.market, times, self.env.end_index, c)
        z = self._capture(obs)
        p_ret, p_vol, p_reg = self.heads(z)
        w = torch.as_tensor(valid, dtype=torch.float32)
        n = w.sum().clamp_min(1.0)
        l_ret = (w * (p_ret - torch.as_tensor(ret, dtype=torch.float32)).square()).sum() / n
        l_vol = (w * (p_vol - torch.as_tensor(logvol, dtype=torch.float32)).square()).sum() / n
        ce = nn.functional.cross_entropy(p_reg, torch.as_tensor(reg), reduction="none")
        l_reg = (w * ce).sum() / n
        total = c.return_weight * l_ret + c.volatility_weight * l_vol + c.regime_weight * l_reg
        return total, {"aux_return": l_ret.detach(), "aux_volatility": l_vol.detach(), "aux_regime": l_reg.detach()}

    def extra_loss(self, trainer: Any) -> torch.Tensor:
        buf = trainer.buffer
        total = buf.n_steps * buf.num_envs
        size = max(1, total // self.n_minibatches)
        idx = torch.randint(0, total, (size,), generator=self.generator)
        obs = buf.obs.reshape(total, -1).index_select(0, idx.to(buf.obs.device)).cpu()
        loss, parts = self.loss(obs, self.times.reshape(-1)[idx.numpy()])
        self._losses.append(torch.stack([parts["aux_return"], parts["aux_volatility"], parts["aux_regime"]]))
        return loss

    def metrics(self) -> dict[str, float]:
        if not self._losses:
            return {}
        mean = torch.stack(self._losses).mean(0).tolist()
        self._losses.clear()
        return {"aux_return_loss": mean[0], "aux_volatility_loss": mean[1], "aux_regime_loss": mean[2]}
