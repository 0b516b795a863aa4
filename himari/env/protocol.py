"""The contract between the vectorized simulator (``himari.env``) and every agent (``himari.agents``).

Shapes use N = number of parallel episodes, W = observation window (bars), A = assets, F = features per asset,
R = regimes (4: LOW_VOL, TRENDING, HIGH_VOL, CRISIS), K = account fields per asset.

An observation for the decision at bar t holds only data with timestamps <= t. The action is filled at bar t+1, and
the reward returned by ``step`` is paid on the price move after the fill.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol

import numpy as np

ActionKind = Literal["discrete", "continuous", "delta"]

# Discrete actions, per asset.
HOLD, LONG, SHORT = 0, 1, 2
ACTION_NAMES: tuple[str, ...] = ("HOLD", "LONG", "SHORT")

REGIME_NAMES: tuple[str, ...] = ("LOW_VOL", "TRENDING", "HIGH_VOL", "CRISIS")

# Account state per asset, in this order (``Observation.account[..., i]``).
ACCOUNT_FIELDS: tuple[str, ...] = (
    "position",  # signed position as a fraction of equity (-max..max)
    "unrealized_pnl",  # log return of the open position since entry (0 when flat)
    "time_in_position",  # bars since the position's sign last changed, scaled by 1/SimConfig.episode_length
    "equity_log",  # log(equity / initial equity)
    "drawdown",  # 1 - equity / peak equity
    "base_position",  # the sizer's base position at t (vol-targeted or constant; see himari.env.sim.base_position)
)


class Observation(NamedTuple):
    """What a policy sees at the decision bar t (all arrays float32)."""

    features: np.ndarray  # (N, W, A, F): normalized features for bars t-W+1..t
    regime: np.ndarray  # (N, W, A, R): regime posterior P(regime | data <= bar) for the same bars
    account: np.ndarray  # (N, A, K): see ACCOUNT_FIELDS


class StepResult(NamedTuple):
    obs: Observation  # next observation (after auto-reset for finished episodes)
    reward: np.ndarray  # (N,) float32, the configured reward
    terminated: np.ndarray  # (N,) bool: ruin (equity below threshold) - no bootstrap
    truncated: np.ndarray  # (N,) bool: episode length or data end reached - bootstrap from final_obs
    final_obs: Observation  # observation at the end of the finished episodes (== obs where not done)
    info: dict[str, np.ndarray]  # per-episode arrays: reward terms, equity, position, fees, ...


class VecEnv(Protocol):
    """What the PPO trainer and the offline-data collectors need from an environment."""

    num_envs: int
    num_assets: int
    action_kind: ActionKind
    window: int
    n_features: int
    n_regimes: int
    n_account: int

    def reset(self, seed: int | None = None) -> Observation: ...

    def step(self, action: np.ndarray) -> StepResult:
        """``action``: int (N, A) for discrete, float (N, A) for continuous/delta."""
        ...


def flatten_observation(obs: Observation) -> np.ndarray:
    """(N, W*A*F + W*A*R + A*K) float32, for MLP policies: features, regime, account concatenated."""
    n = obs.features.shape[0]
    return np.concatenate(
        [obs.features.reshape(n, -1), obs.regime.reshape(n, -1), obs.account.reshape(n, -1)], axis=1
    ).astype(np.float32, copy=False)
