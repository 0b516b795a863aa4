"""Datasets for the offline models: supervised BUY/HOLD/SELL labels and offline-RL trajectories.

Supervised labels (inputs strictly backward, labels strictly forward)
--------------------------------------------------------------------
A decision at bar ``t`` sees bars ``<= t`` and is filled at bar ``t+1``'s open, so the label of bar ``t`` is the
sign of the forward log return from the fill to the close ``h`` bars later::

    r_t = log(close[t+h] / open[t+1]),   label_t = LONG if r_t > c,  SHORT if r_t < -c,  HOLD otherwise

with ``c`` the round-trip cost ``log(1 + 2 (fee_bps + slippage_bps) / 1e4)`` times a multiplier: a move that does
not pay for entering and leaving is HOLD. Bar ``t``'s label uses bars ``t+1..t+h`` (its *label interval*); labels
that would span a data gap or run past the end are invalid, never filled.

Purging and embargo (López de Prado, *Advances in Financial Machine Learning*, 2018, ch. 7): a training sample
whose label interval ``[t, t+h]`` overlaps a held-out block is removed (purge); training samples in the
``embargo`` bars right after a held-out block are removed too, because their inputs are serially correlated with
the block's labels.

Offline RL trajectories
-----------------------
``collect_trajectories`` runs behaviour policies (rule baselines, random, a trained PPO policy) in any
``himari.env.protocol.VecEnv`` with its costs and records ``(s, a, r, s', terminated, truncated)`` per stream plus
the discounted return-to-go ``G_t = r_t + γ G_{t+1}`` (γ = 0.99, reset at episode ends; truncated episodes are
not bootstrapped in ``G``, only in TD targets through ``terminated``). The reward is the net log return of equity
after costs, ``Δ equity_log`` from the account, which a Decision Transformer can also track at inference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
from pydantic import Field

from himari.agents.offline.common import N_ACTIONS, equity_log, step_state
from himari.config import FrozenConfig
from himari.env.protocol import HOLD, LONG, SHORT, Observation, VecEnv
from himari.errors import ConfigError, DataError, LeakageError
from himari.utils.seeding import make_rng

# Label codes equal the discrete action codes: BUY -> LONG, SELL -> SHORT.
LABEL_NAMES: tuple[str, ...] = ("HOLD", "BUY", "SELL")


class LabelConfig(FrozenConfig):
    """Forward-return labelling: horizon and the cost-derived threshold."""

    horizon_bars: int = Field(24, ge=1, le=10_000)
    fee_bps: float = Field(10.0, ge=0.0)  # per side
    slippage_bps: float = Field(5.0, ge=0.0)  # per side
    threshold_mult: float = Field(1.0, ge=0.0)  # multiple of the round-trip cost
    embargo_bars: int = Field(24, ge=0)
    window: int = Field(16, ge=1, le=4096)  # input bars per sample

    @property
    def threshold(self) -> float:
        """Log-return threshold ``c = mult * log(1 + 2 (fee + slippage) / 1e4)``."""
        return self.threshold_mult * float(np.log1p(2.0 * (self.fee_bps + self.slippage_bps) / 1e4))


def forward_labels(
    open_: np.ndarray, close: np.ndarray, segment_id: np.ndarray, horizon: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, forward log returns and validity for every bar (see module docstring).

    Returns ``labels`` int64 (T,), ``forward_return`` float64 (T,) (NaN where invalid) and ``valid`` bool (T,):
    False where ``t + h`` is past the end or where bars ``t..t+h`` are not one contiguous segment.
    """
    open_ = np.asarray(open_, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    segment_id = np.asarray(segment_id)
    n = close.shape[0]
    if open_.shape != close.shape or segment_id.shape != close.shape:
        raise DataError(f"forward_labels: open {open_.shape}, close {close.shape}, segment_id {segment_id.shape} differ")
    if horizon < 1:
        raise ConfigError(f"horizon_bars must be >= 1, got {horizon}")
    fwd = np.full(n, np.nan)
    valid = np.zeros(n, dtype=bool)
    if n > horizon:
        t = np.arange(n - horizon)
        same = segment_id[t + horizon] == segment_id[t]
        positive = (open_[t + 1] > 0) & (close[t + horizon] > 0)
        ok = same & positive
        fwd[t[ok]] = np.log(close[t[ok] + horizon] / open_[t[ok] + 1])
        valid[t[ok]] = True
    labels = np.full(n, HOLD, dtype=np.int64)
    labels[valid & (fwd > threshold)] = LONG
    labels[valid & (fwd < -threshold)] = SHORT
    return labels, fwd, valid


def purge_embargo(
    candidates: np.ndarray,
    label_end: np.ndarray,
    held_out_blocks: Sequence[tuple[int, int]],
    embargo_bars: int,
) -> np.ndarray:
    """Training indices left after purging and embargo against held-out blocks of bar indices ``[start, end)``.

    A candidate ``i`` (label interval ``[i, label_end[i]]``) is dropped when that interval intersects a block, or
    when ``end <= i < end + embargo_bars`` for a block.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    keep = np.ones(candidates.shape[0], dtype=bool)
    ends = np.asarray(label_end, dtype=np.int64)[candidates]
    for start, end in held_out_blocks:
        if end <= start:
            continue
        overlaps = (candidates < end) & (ends >= start)
        embargoed = (candidates >= end) & (candidates < end + embargo_bars)
        keep &= ~(overlaps | embargoed)
    return candidates[keep]


def purged_kfold(
    n_samples: int, label_end: np.ndarray, n_splits: int, embargo_bars: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Purged k-fold with embargo over contiguous test folds: yields ``(train_idx, test_idx)``."""
    if n_splits < 2 or n_splits > n_samples:
        raise ConfigError(f"n_splits must be in [2, {n_samples}], got {n_splits}")
    bounds = np.linspace(0, n_samples, n_splits + 1).astype(np.int64)
    everything = np.arange(n_samples)
    for k in range(n_splits):
        start, end = int(bounds[k]), int(bounds[k + 1])
        test_idx = everything[start:end]
        candidates = np.concatenate([everything[:start], everything[end:]])
        yield purge_embargo(candidates, label_end, [(start, end)], embargo_bars), test_idx


def window_valid(valid: np.ndarray, window: int) -> np.ndarray:
    """True at ``t`` when rows ``t-window+1..t`` are all valid (False for ``t < window-1``)."""
    valid = np.asarray(valid, dtype=bool)
    bad = np.concatenate([[0], np.cumsum(~valid)])
    out = np.zeros(valid.shape[0], dtype=bool)
    if valid.shape[0] >= window:
        t = np.arange(window - 1, valid.shape[0])
        out[t] = (bad[t + 1] - bad[t + 1 - window]) == 0
    return out


@dataclass
class SupervisedData:
    """Per-bar inputs with labels and purged chronological splits; sample windows are gathered lazily."""

    inputs: np.ndarray  # (T, F+R) float32: features then regime posterior, bar t uses data <= t
    labels: np.ndarray  # (T,) int64
    forward_return: np.ndarray  # (T,) float64
    label_end: np.ndarray  # (T,) int64: last bar index used by the label
    timestamps_ns: np.ndarray  # (T,) int64
    window: int
    n_features: int
    splits: dict[str, np.ndarray] = field(default_factory=dict)  # name -> sample (decision bar) indices
    info: dict[str, Any] = field(default_factory=dict)

    def windows(self, idx: np.ndarray) -> np.ndarray:
        """``(n, window, F+R)`` input windows ending at the decision bars ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        offsets = np.arange(-self.window + 1, 1)
        return self.inputs[idx[:, None] + offsets[None, :]]

    def class_counts(self, split: str) -> np.ndarray:
        return np.bincount(self.labels[self.splits[split]], minlength=N_ACTIONS)


def build_supervised(
    features: np.ndarray,
    regime: np.ndarray,
    valid: np.ndarray,
    timestamps_ns: np.ndarray,
    open_: np.ndarray,
    close: np.ndarray,
    segment_id: np.ndarray,
    config: LabelConfig,
    boundaries_ns: Sequence[int],
    split_names: Sequence[str] = ("train", "validation", "test"),
) -> SupervisedData:
    """Labelled samples split chronologically at ``boundaries_ns`` (len = len(split_names) + 1, half-open).

    Every split except the last is purged against all later splits (their label intervals may not reach into a
    later split) and embargoed after every earlier held-out split.
    """
    t_len = features.shape[0]
    for name, arr in (("regime", regime), ("valid", valid), ("timestamps_ns", timestamps_ns), ("open", open_),
                      ("close", close), ("segment_id", segment_id)):
        if arr.shape[0] != t_len:
            raise DataError(f"build_supervised: {name} has {arr.shape[0]} rows, features {t_len}")
    if len(boundaries_ns) != len(split_names) + 1:
        raise ConfigError("build_supervised: need one more boundary than split names")
    if any(b2 <= b1 for b1, b2 in pairwise(boundaries_ns)):
        raise LeakageError(f"build_supervised: split boundaries must increase, got {list(boundaries_ns)}")
    inputs = np.concatenate([features, regime], axis=1).astype(np.float32)
    if not np.isfinite(inputs[np.asarray(valid, bool)]).all():
        raise DataError("build_supervised: non-finite features or regime posterior on rows marked valid")
    labels, fwd, label_ok = forward_labels(open_, close, segment_id, config.horizon_bars, config.threshold)
    label_end = np.arange(t_len, dtype=np.int64) + config.horizon_bars
    usable = label_ok & window_valid(valid, config.window)
    positions = np.searchsorted(np.asarray(timestamps_ns), np.asarray(boundaries_ns, dtype=np.int64), side="left")
    blocks = [(int(positions[k]), int(positions[k + 1])) for k in range(len(split_names))]
    splits: dict[str, np.ndarray] = {}
    for k, name in enumerate(split_names):
        start, end = blocks[k]
        candidates = np.flatnonzero(usable[start:end]) + start
        later = blocks[k + 1 :]
        earlier = blocks[:k]
        # purge against later blocks (label reaching forward), embargo after earlier blocks
        kept = purge_embargo(candidates, label_end, later, 0)
        splits[name] = _embargo_after(kept, earlier, config.embargo_bars)
    data = SupervisedData(
        inputs=np.where(np.isfinite(inputs), inputs, 0.0).astype(np.float32),
        labels=labels,
        forward_return=fwd,
        label_end=label_end,
        timestamps_ns=np.asarray(timestamps_ns, dtype=np.int64),
        window=config.window,
        n_features=inputs.shape[1],
        splits=splits,
        info={"threshold": config.threshold, "horizon_bars": config.horizon_bars, "blocks": blocks},
    )
    return data


def _embargo_after(candidates: np.ndarray, earlier: Sequence[tuple[int, int]], embargo_bars: int) -> np.ndarray:
    """Drop candidates within ``embargo_bars`` after the end of any earlier block."""
    keep = np.ones(candidates.shape[0], dtype=bool)
    for _, end in earlier:
        keep &= ~((candidates >= end) & (candidates < end + embargo_bars))
    return candidates[keep]


# --------------------------------------------------------------------------------------------------------------
# Offline RL trajectories


@dataclass
class TrajectoryData:
    """Transitions laid out ``(T, N, ...)``: time, then stream (one env, one asset)."""

    states: np.ndarray  # (T, N, S) float32 = features + regime of the decision bar + account
    actions: np.ndarray  # (T, N) int64
    rewards: np.ndarray  # (T, N) float32: Δ equity_log (net log return after costs)
    next_states: np.ndarray  # (T, N, S) float32 (the final observation at episode ends)
    terminated: np.ndarray  # (T, N) bool (ruin; no bootstrap)
    truncated: np.ndarray  # (T, N) bool (episode length / data end / end of collection)
    returns_to_go: np.ndarray  # (T, N) float32, discounted, reset at episode ends
    episode_step: np.ndarray  # (T, N) int64: steps since the episode started
    behaviour: tuple[str, ...]  # (N,) name of each stream's behaviour policy
    gamma: float = 0.99

    @property
    def n_transitions(self) -> int:
        return int(self.actions.size)

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[-1])

    def flat(self) -> dict[str, np.ndarray]:
        """Transitions flattened to ``(T*N, ...)`` for TD learning."""
        t, n = self.actions.shape
        return {
            "states": self.states.reshape(t * n, -1),
            "actions": self.actions.reshape(-1),
            "rewards": self.rewards.reshape(-1),
            "next_states": self.next_states.reshape(t * n, -1),
            "terminated": self.terminated.reshape(-1),
        }

    def action_counts(self) -> np.ndarray:
        return np.bincount(self.actions.reshape(-1), minlength=N_ACTIONS)


def discounted_returns_to_go(rewards: np.ndarray, done: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = r_t + γ (1 - done_t) G_{t+1}`` along axis 0, with ``G`` after the last step taken as 0."""
    out = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * (1.0 - done[t]) * running
        out[t] = running
    return out.astype(np.float32)


def collect_trajectories(
    env: VecEnv,
    behaviours: Sequence[Any],
    n_steps: int,
    seed: int,
    epsilon: float = 0.1,
    gamma: float = 0.99,
    behaviour_names: Sequence[str] | None = None,
) -> TrajectoryData:
    """Roll out behaviour policies in ``env`` for ``n_steps`` steps of all ``env.num_envs`` streams.

    Stream ``j`` follows ``behaviours[j % len(behaviours)]``; with probability ``epsilon`` each action is replaced
    by a uniformly random one (coverage for conservative Q-learning). Requires a discrete, single-asset env.
    """
    if env.action_kind != "discrete" or env.num_assets != 1:
        raise ConfigError(
            f"offline trajectories need a discrete single-asset env, got {env.action_kind} with {env.num_assets} assets"
        )
    if not behaviours:
        raise ConfigError("collect_trajectories: no behaviour policies given")
    if not 0.0 <= epsilon <= 1.0:
        raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}")
    rng = make_rng(seed)
    n = env.num_envs
    groups = [np.arange(k, n, len(behaviours)) for k in range(len(behaviours))]
    obs = env.reset(seed=seed)
    pstates = [b.initial_state(len(g)) for b, g in zip(behaviours, groups, strict=True)]
    s0 = step_state(obs)
    states = np.zeros((n_steps, n, s0.shape[1]), np.float32)
    next_states = np.zeros_like(states)
    actions = np.zeros((n_steps, n), np.int64)
    rewards = np.zeros((n_steps, n), np.float32)
    terminated = np.zeros((n_steps, n), bool)
    truncated = np.zeros((n_steps, n), bool)
    episode_step = np.zeros((n_steps, n), np.int64)
    current_step = np.zeros(n, np.int64)
    for t in range(n_steps):
        action = np.zeros((n, 1), np.int64)
        for k, (behaviour, group) in enumerate(zip(behaviours, groups, strict=True)):
            if group.size == 0:
                continue
            sub = Observation(obs.features[group], obs.regime[group], obs.account[group])
            out, pstates[k] = behaviour.act(sub, pstates[k], deterministic=False)
            action[group] = np.asarray(out.action, dtype=np.int64).reshape(group.size, 1)
        explore = rng.random(n) < epsilon
        action[explore, 0] = rng.integers(0, N_ACTIONS, size=int(explore.sum()))
        result = env.step(action)
        states[t] = step_state(obs)
        next_states[t] = step_state(result.final_obs)
        actions[t] = action[:, 0]
        rewards[t] = (equity_log(result.final_obs) - equity_log(obs)).astype(np.float32)
        terminated[t] = result.terminated
        truncated[t] = result.truncated
        episode_step[t] = current_step
        done = np.asarray(result.terminated) | np.asarray(result.truncated)
        current_step = np.where(done, 0, current_step + 1)
        for k, (behaviour, group) in enumerate(zip(behaviours, groups, strict=True)):
            if group.size:
                pstates[k] = behaviour.reset_state(pstates[k], done[group])
        obs = result.obs
    truncated[-1] |= ~terminated[-1]  # the collection ends mid-episode: a truncation
    if not np.isfinite(states).all() or not np.isfinite(rewards).all():
        raise DataError("collect_trajectories: the environment produced non-finite observations or rewards")
    rtg = discounted_returns_to_go(rewards, terminated | truncated, gamma)
    names = tuple(behaviour_names) if behaviour_names else tuple(getattr(b, "name", b.kind) for b in behaviours)
    return TrajectoryData(
        states=states,
        actions=actions,
        rewards=rewards,
        next_states=next_states,
        terminated=terminated,
        truncated=truncated,
        returns_to_go=rtg,
        episode_step=episode_step,
        behaviour=tuple(names[j % len(names)] for j in range(n)),
        gamma=gamma,
    )
