"""The stacked policy: an L2 direction policy feeding an L3 position sizer.

The L2 policy (a discrete HOLD/LONG/SHORT policy) says the direction; the L3 sizer (a bounded-delta policy) moves the
position around the positioning layer's vol-targeted base, ``direction · (base + delta_max tanh(raw)) · m``; the
risk gates cap the result. :class:`StackPolicy` acts with both on the same observation and reports the delta as its
action and the L2's codes as ``PolicyOutput.direction_action``, which the simulator (training) and the decision
engine (trading) turn into the delta's base direction with :func:`himari.sizing.positioning.discrete_directions`.

:class:`StackEnv` is the environment the L3 sizer trains in: the positioned simulator with the frozen L2 policy
choosing the direction at every step, exactly as the stacked policy trades.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from himari.agents.base import Policy, PolicyOutput
from himari.env.protocol import Observation, StepResult
from himari.env.sim import SimVecEnv
from himari.errors import ConfigError, RunDirError
from himari.sizing.positioning import discrete_directions
from himari.utils.io import atomic_write_json, read_json

STACK_FORMAT = 1


def _check_pair(direction: Any, sizer: Any) -> None:
    if direction.action_kind != "discrete":
        raise ConfigError(f"stack: the L2 policy must be discrete, {direction.kind} acts {direction.action_kind!r}")
    if sizer.action_kind != "delta":
        raise ConfigError(f"stack: the L3 sizer must act a delta, {sizer.kind} acts {sizer.action_kind!r}")
    if direction.window > sizer.window or getattr(direction, "n_assets", sizer.n_assets) != sizer.n_assets:
        raise ConfigError("stack: the L2 must see no more bars than the L3's window, and the same assets")


def last_bars(obs: Observation, window: int) -> Observation:
    """The observation's last ``window`` bars (an L2 may see fewer bars than the L3's window)."""
    if obs.features.shape[1] == window:
        return obs
    return Observation(obs.features[:, -window:], obs.regime[:, -window:], obs.account)


class StackPolicy:
    """L2 direction policy + L3 bounded-delta sizer, acting on one observation (see the module docstring)."""

    kind = "stack"
    action_kind = "delta"

    def __init__(self, direction: Any, sizer: Any) -> None:
        _check_pair(direction, sizer)
        self.direction = direction
        self.sizer = sizer
        self.window = sizer.window
        self.n_assets = sizer.n_assets

    def initial_state(self, n: int) -> Any:
        return (self.direction.initial_state(n), self.sizer.initial_state(n))

    def reset_state(self, state: Any, done: np.ndarray) -> Any:
        return (self.direction.reset_state(state[0], done), self.sizer.reset_state(state[1], done))

    def act(self, obs: Observation, state: Any, deterministic: bool = True, **kwargs: Any) -> tuple[PolicyOutput, Any]:
        if state is None:
            state = self.initial_state(obs.features.shape[0])
        d_out, d_state = self.direction.act(last_bars(obs, self.direction.window), state[0], deterministic=True)
        s_out, s_state = self.sizer.act(obs, state[1], deterministic=deterministic, **kwargs)
        out = PolicyOutput(s_out.action, d_out.action_probs, s_out.value, np.asarray(d_out.action))
        return out, (d_state, s_state)

    def save(self, directory: str | Path) -> None:
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        self.direction.save(root / "direction")
        self.sizer.save(root / "sizer")
        atomic_write_json(root / "policy.json", {"format": STACK_FORMAT, "kind": self.kind,
                                                 "direction": "direction", "sizer": "sizer"})

    @classmethod
    def load(cls, directory: str | Path) -> StackPolicy:
        from himari.agents.registry import load_policy

        root = Path(directory)
        meta = read_json(root / "policy.json")
        if meta.get("kind") != cls.kind or meta.get("format") != STACK_FORMAT:
            raise RunDirError(f"{root / 'policy.json'}: not a stacked policy of format {STACK_FORMAT}")
        return cls(load_policy(root / "direction"), load_policy(root / "sizer"))


class StackEnv:
    """The positioned simulator in which an L3 sizer trains under a frozen L2 direction policy (a VecEnv)."""

    def __init__(self, env: SimVecEnv, direction: Policy) -> None:
        if env.action_kind != "delta" or not env.config.positioned:
            raise ConfigError("stack: the L3 environment must be a positioned simulator with delta actions")
        if direction.action_kind != "discrete" or direction.window > env.window:
            raise ConfigError("stack: the L2 policy must be discrete and see no more bars than the environment's window")
        self.env = env
        self.direction = direction
        for name in ("num_envs", "num_assets", "window", "n_features", "n_regimes", "n_account"):
            setattr(self, name, getattr(env, name))
        self.action_kind = "delta"
        self._obs: Observation | None = None
        self._state: Any = None

    @property
    def state(self) -> Any:
        return self.env.state

    def reset(self, seed: int | None = None) -> Observation:
        self._obs = self.env.reset(seed=seed)
        self._state = self.direction.initial_state(self.num_envs)
        return self._obs

    def step(self, action: np.ndarray) -> StepResult:
        if self._obs is None:
            raise ConfigError("StackEnv.step before reset")
        out, self._state = self.direction.act(last_bars(self._obs, self.direction.window), self._state,
                                              deterministic=True)
        cfg = self.env.config
        direction = discrete_directions(np.asarray(out.action), self.env.state.position, cfg.hold_mode, cfg.allow_short)
        result = self.env.step(action, direction=direction)
        done = np.asarray(result.terminated) | np.asarray(result.truncated)
        if done.any():
            self._state = self.direction.reset_state(self._state, done)
        self._obs = result.obs
        return result
