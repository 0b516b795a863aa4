"""Small vectorized VecEnvs with known optimal policies, for PPO tests (no simulator needed)."""

from __future__ import annotations

import numpy as np

from himari.env.protocol import ActionKind, Observation, StepResult

N_REGIMES = 4
N_ACCOUNT = 5


class _BaseFakeEnv:
    """Shared plumbing: N episodes of ``episode_length`` steps, W=1, explicit generator, auto-reset."""

    n_regimes = N_REGIMES
    n_account = N_ACCOUNT
    window = 1

    def __init__(self, num_envs: int, num_assets: int, n_features: int, episode_length: int,
                 action_kind: ActionKind, terminate_prob: float = 0.0) -> None:
        self.num_envs = num_envs
        self.num_assets = num_assets
        self.n_features = n_features
        self.episode_length = episode_length
        self.action_kind = action_kind
        self.terminate_prob = terminate_prob
        self.rng = np.random.default_rng(0)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.position = np.zeros((num_envs, num_assets), dtype=np.float32)

    def positions_from_action(self, action: np.ndarray) -> np.ndarray:
        if self.action_kind == "discrete":
            a = np.asarray(action)
            return np.select([a == 1, a == 2], [1.0, -1.0], 0.0).astype(np.float32)
        if self.action_kind == "delta":
            return (0.3 * np.tanh(np.asarray(action, dtype=np.float32))).astype(np.float32)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def _regime(self, n: int) -> np.ndarray:
        regime = np.zeros((n, 1, self.num_assets, N_REGIMES), dtype=np.float32)
        regime[..., 0] = 1.0
        return regime

    def _obs(self) -> Observation:
        account = np.zeros((self.num_envs, self.num_assets, N_ACCOUNT), dtype=np.float32)
        account[..., 0] = self.position
        account[..., 2] = self.t[:, None] / self.episode_length
        return Observation(self._features(), self._regime(self.num_envs), account)

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t[:] = 0
        self.position[:] = 0
        self._new_episode(np.ones(self.num_envs, dtype=bool))
        return self._obs()

    def step(self, action: np.ndarray) -> StepResult:
        position = self.positions_from_action(action)
        reward = self._reward(position).astype(np.float32)
        self.position = position
        self.t += 1
        self._advance()
        terminated = self.rng.random(self.num_envs) < self.terminate_prob
        truncated = (self.t >= self.episode_length) & ~terminated
        final_obs = self._obs()
        done = terminated | truncated
        if done.any():
            self.t[done] = 0
            self.position[done] = 0
            self._new_episode(done)
        return StepResult(self._obs(), reward, terminated, truncated, final_obs, {})


class SignalEnv(_BaseFakeEnv):
    """Next return ``r = 0.01·s`` with ``s = ±1``; feature 0 shows ``s`` with probability ``reveal`` (else 0).

    The optimal policy takes the revealed sign and stays flat otherwise: mean reward per step ``reveal · 0.01 · k``
    with ``k`` the largest position (1 for discrete/continuous, 0.3 for delta).
    """

    def __init__(self, num_envs: int = 64, num_assets: int = 1, action_kind: ActionKind = "discrete",
                 reveal: float = 0.7, episode_length: int = 32, terminate_prob: float = 0.0) -> None:
        super().__init__(num_envs, num_assets, 3, episode_length, action_kind, terminate_prob)
        self.reveal = reveal
        self.sign = np.ones((num_envs, num_assets), dtype=np.float32)
        self.shown = np.zeros((num_envs, num_assets), dtype=np.float32)

    def optimal_mean_reward(self) -> float:
        k = 0.3 * np.tanh(3.0) if self.action_kind == "delta" else 1.0
        return float(self.reveal * 0.01 * k)

    def _draw(self) -> None:
        n, a = self.sign.shape
        self.sign = np.where(self.rng.random((n, a)) < 0.5, 1.0, -1.0).astype(np.float32)
        self.shown = (self.rng.random((n, a)) < self.reveal).astype(np.float32)

    def _new_episode(self, mask: np.ndarray) -> None:
        pass

    def _advance(self) -> None:
        self._draw()

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._draw()
        return super().reset(None)

    def _features(self) -> np.ndarray:
        noise = self.rng.normal(0.0, 1.0, (self.num_envs, self.num_assets)).astype(np.float32)
        feats = np.stack([self.sign * self.shown, noise, self.shown], axis=-1)
        return feats[:, None].astype(np.float32)

    def _reward(self, position: np.ndarray) -> np.ndarray:
        return (position * 0.01 * self.sign).mean(axis=1)


class MemoryEnv(_BaseFakeEnv):
    """A cue ``c = ±1`` is shown only at the first step of an episode; every step pays ``0.01 · position · c``.

    Memory-less policies can earn only on the first step (mean ``0.01 / L`` per step); a policy that remembers the
    cue earns ``0.01`` per step.
    """

    def __init__(self, num_envs: int = 64, episode_length: int = 8) -> None:
        super().__init__(num_envs, 1, 2, episode_length, "discrete")
        self.cue = np.ones(num_envs, dtype=np.float32)

    def _new_episode(self, mask: np.ndarray) -> None:
        self.cue[mask] = np.where(self.rng.random(int(mask.sum())) < 0.5, 1.0, -1.0)

    def _advance(self) -> None:
        pass

    def _obs(self) -> Observation:
        # The account shows no position: a policy's own position would otherwise serve as an external memory.
        obs = super()._obs()
        obs.account[..., 0] = 0.0
        return obs

    def _features(self) -> np.ndarray:
        first = (self.t == 0).astype(np.float32)
        feats = np.stack([self.cue * first, first], axis=-1)
        return feats[:, None, None, :].astype(np.float32)

    def _reward(self, position: np.ndarray) -> np.ndarray:
        return 0.01 * position[:, 0] * self.cue
