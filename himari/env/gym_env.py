"""Gymnasium adapters around the pure simulator: :class:`HimariEnv` (one episode) and :class:`HimariVectorEnv`.

Both are thin: every number comes from :func:`himari.env.sim.step`. Observations are the flattened
:class:`~himari.env.protocol.Observation` (``flatten_observation``: features, regime posterior, account fields), or a
``Dict`` of the three arrays with ``dict_obs=True``. Actions: ``Discrete(3)`` (one asset) / ``MultiDiscrete([3]*A)``
for discrete; ``Box([-max, max]^A)`` for continuous targets; ``Box([-1, 1]^A)`` for the delta action, passed to the
simulator as x = 3a (it applies ``delta_scale * tanh(x)``; tanh(3) = 0.995).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from himari.env.market import MarketData
from himari.env.protocol import ACCOUNT_FIELDS, REGIME_NAMES, Observation, flatten_observation
from himari.env.sim import SimConfig, SimVecEnv

DELTA_ACTION_BOUND = 3.0


def single_action_space(config: SimConfig, num_assets: int) -> spaces.Space[Any]:
    if config.action_kind == "discrete":
        return spaces.Discrete(3) if num_assets == 1 else spaces.MultiDiscrete([3] * num_assets)
    bound = config.max_position if config.action_kind == "continuous" else 1.0
    low = -bound if (config.allow_short or config.action_kind == "delta") else 0.0
    return spaces.Box(low=low, high=bound, shape=(num_assets,), dtype=np.float32)


def single_observation_space(config: SimConfig, market: MarketData, dict_obs: bool) -> spaces.Space[Any]:
    w, a, f, r, k = (
        config.window,
        market.num_assets,
        market.num_features,
        len(REGIME_NAMES),
        len(ACCOUNT_FIELDS),
    )
    if dict_obs:
        return spaces.Dict(
            {
                "features": spaces.Box(-np.inf, np.inf, (w, a, f), np.float32),
                "regime": spaces.Box(0.0, 1.0, (w, a, r), np.float32),
                "account": spaces.Box(-np.inf, np.inf, (a, k), np.float32),
            }
        )
    return spaces.Box(-np.inf, np.inf, (w * a * f + w * a * r + a * k,), np.float32)


def _to_gym(obs: Observation, dict_obs: bool) -> Any:
    if dict_obs:
        return {"features": obs.features, "regime": obs.regime, "account": obs.account}
    return flatten_observation(obs)


def _to_sim_action(action: Any, config: SimConfig, n: int, a: int) -> np.ndarray:
    arr = np.asarray(action)
    if config.action_kind == "discrete":
        return arr.astype(np.int64).reshape(n, a)
    out = arr.astype(np.float64).reshape(n, a)
    return out * DELTA_ACTION_BOUND if config.action_kind == "delta" else out


class HimariEnv(gym.Env):  # type: ignore[type-arg]
    """One episode at a time (a :class:`SimVecEnv` with one environment); ``info`` carries every reward term."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        market: MarketData,
        config: SimConfig,
        start_index: int | None = None,
        end_index: int | None = None,
        dict_obs: bool = False,
    ) -> None:
        self.market, self.config, self.dict_obs = market, config, dict_obs
        self._sim = SimVecEnv(market, config, 1, seed=0, start_index=start_index, end_index=end_index)
        self.action_space = single_action_space(config, market.num_assets)
        self.observation_space = single_observation_space(config, market, dict_obs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        self._sim.rng = self.np_random  # starts drawn from gymnasium's seeded generator
        self._sim.state = self._sim._fresh()
        obs = self._sim.observe()
        return self._single(obs), {"bar": int(self._sim.state.t[0])}

    def _single(self, obs: Observation) -> Any:
        out = _to_gym(obs, self.dict_obs)
        if self.dict_obs:
            return {k: v[0] for k, v in out.items()}
        return out[0]

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        from himari.env.sim import step as sim_step

        act = _to_sim_action(action, self.config, 1, self.market.num_assets)
        state, terms, info = sim_step(self._sim.state, act, self.market, self.config)
        self._sim.state = state
        obs = self._sim.observe()
        out_info = {k: (v[0] if np.ndim(v) >= 1 else v) for k, v in info.items()}
        out_info.update({f"reward_{k}": float(v[0]) for k, v in terms.items()})
        return (
            self._single(obs),
            float(terms["reward"][0]),
            bool(info["terminated"][0]),
            bool(info["truncated"][0]),
            out_info,
        )


class HimariVectorEnv(VectorEnv):  # type: ignore[type-arg]
    """N episodes stepped together by the vectorized kernel (same-step autoreset; ``info["final_obs"]`` holds the
    last observation of finished episodes, ``info["_final_obs"]`` marks them)."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(
        self,
        market: MarketData,
        config: SimConfig,
        num_envs: int,
        seed: int = 0,
        start_index: int | None = None,
        end_index: int | None = None,
        dict_obs: bool = False,
    ) -> None:
        self.market, self.config, self.dict_obs = market, config, dict_obs
        self.num_envs = int(num_envs)
        self._sim = SimVecEnv(
            market, config, num_envs, seed=seed, start_index=start_index, end_index=end_index
        )
        self.single_action_space = single_action_space(config, market.num_assets)
        self.single_observation_space = single_observation_space(config, market, dict_obs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs = self._sim.reset(seed=seed)
        return _to_gym(obs, self.dict_obs), {"bar": self._sim.state.t.copy()}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        res = self._sim.step(_to_sim_action(actions, self.config, self.num_envs, self.market.num_assets))
        info = dict(res.info)
        done = res.terminated | res.truncated
        if done.any():
            info["final_obs"] = _to_gym(res.final_obs, self.dict_obs)
            info["_final_obs"] = done
        return _to_gym(res.obs, self.dict_obs), res.reward, res.terminated, res.truncated, info
