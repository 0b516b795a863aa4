"""Rule behaviour policies: moving-average crossover, momentum and random (seeded).

They see exactly what learned policies see (``Observation``: normalized features of bars ``t-W+1..t``), so they serve
as behaviour policies for offline-RL data collection and as simple comparators. Each rule reads one feature column
``x`` (the *signal*, e.g. ``zscore_24``: price relative to its trailing mean), with ``c`` its centre (its median on
the training window — fitted by the caller, never on later data):

* ``ma_crossover``: LONG when ``mean(x over the last fast bars) > mean(x over the last slow bars)``, else SHORT
  (HOLD instead of SHORT when ``long_only``) — the crossover of a fast and a slow moving average of the signal;
* ``momentum``: LONG when ``mean(x over lookback) - c > band``, SHORT when ``< -band``, HOLD otherwise;
* ``random``: actions drawn from ``probs`` with a generator seeded from the config (reproducible);
* ``long``: always LONG (the positioning layer alone sizes it: the ablation's base rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from himari.agents.base import PolicyOutput
from himari.config import FrozenConfig
from himari.env.protocol import HOLD, LONG, SHORT, Observation
from himari.errors import ConfigError, RunDirError
from himari.utils.io import atomic_write_bytes, atomic_write_json, read_json
from himari.utils.seeding import make_rng

RULES: tuple[str, ...] = ("ma_crossover", "momentum", "random", "long")


class RuleConfig(FrozenConfig):
    rule: Literal["ma_crossover", "momentum", "random", "long"] = "ma_crossover"
    signal_index: int = Field(0, ge=0)
    signal_name: str = ""
    fast: int = Field(4, ge=1)
    slow: int = Field(16, ge=2)
    lookback: int = Field(8, ge=1)
    center: float = 0.0
    band: float = Field(0.0, ge=0.0)
    long_only: bool = False
    probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # HOLD, LONG, SHORT for "random"
    seed: int = 0

    def model_post_init(self, __context: object) -> None:
        if self.rule == "ma_crossover" and self.fast >= self.slow:
            raise ConfigError(f"RuleConfig: fast ({self.fast}) must be shorter than slow ({self.slow})")
        p = np.asarray(self.probs)
        if (p < 0).any() or abs(p.sum() - 1.0) > 1e-6:
            raise ConfigError(f"RuleConfig: probs must be >= 0 and sum to 1, got {self.probs}")


def resolve_signal(feature_names: tuple[str, ...] | list[str], name: str) -> int:
    """Column index of feature ``name`` (ConfigError naming the known features otherwise)."""
    if name not in feature_names:
        raise ConfigError(f"rule signal feature {name!r} not among the features: {', '.join(feature_names)}")
    return list(feature_names).index(name)


class RulePolicy:
    """``himari.agents.base.Policy`` for the rule baselines (stateless, discrete)."""

    kind: ClassVar[str] = "rule"
    action_kind = "discrete"

    def __init__(self, config: RuleConfig, n_assets: int = 1) -> None:
        self.config = config
        self.n_assets = n_assets
        self.window = {"ma_crossover": config.slow, "momentum": config.lookback, "random": 1, "long": 1}[config.rule]
        self.name = f"rule:{config.rule}"
        self.meta: dict[str, Any] = {}
        self._rng = make_rng(config.seed)

    def initial_state(self, n: int) -> None:
        return None

    def reset_state(self, state: Any, done: np.ndarray) -> None:
        return None

    def act(self, obs: Observation, state: Any, deterministic: bool = True) -> tuple[PolicyOutput, Any]:
        cfg = self.config
        n, w, a, f = obs.features.shape
        if cfg.rule == "long":  # always long: the positioning layer alone decides the size
            action = np.full((n, a), LONG, dtype=np.int64)
            return PolicyOutput(action=action, action_probs=np.eye(3, dtype=np.float32)[action]), None
        if cfg.rule == "random":
            action = self._rng.choice(3, size=(n, a), p=np.asarray(cfg.probs)).astype(np.int64)
            probs = np.broadcast_to(np.asarray(cfg.probs, np.float32), (n, a, 3)).copy()
            return PolicyOutput(action=action, action_probs=probs), None
        if cfg.signal_index >= f:
            raise ConfigError(f"rule signal_index {cfg.signal_index} >= number of features {f}")
        if w < self.window:
            raise ConfigError(f"rule {cfg.rule} needs a window of {self.window} bars, observation has {w}")
        x = obs.features[:, :, :, cfg.signal_index].astype(np.float64)  # (N, W, A)
        if cfg.rule == "ma_crossover":
            up = x[:, -cfg.fast :].mean(1) > x[:, -cfg.slow :].mean(1)
            action = np.where(up, LONG, HOLD if cfg.long_only else SHORT)
        else:
            m = x[:, -cfg.lookback :].mean(1) - cfg.center
            action = np.where(m > cfg.band, LONG, np.where(m < -cfg.band, HOLD if cfg.long_only else SHORT, HOLD))
        action = action.astype(np.int64)
        return PolicyOutput(action=action, action_probs=np.eye(3, dtype=np.float32)[action]), None

    def save(self, directory: str | Path) -> None:
        root = Path(directory)
        from safetensors.numpy import save as st_save

        atomic_write_bytes(root / "weights.safetensors", st_save({"none": np.zeros(1, np.float32)}))
        atomic_write_json(root / "policy.json", {"kind": self.kind, "config": self.config.to_dict(), "meta": self.meta})

    @classmethod
    def load(cls, directory: str | Path) -> RulePolicy:
        path = Path(directory) / "policy.json"
        if not path.exists():
            raise RunDirError(f"{directory}: no policy.json")
        meta = read_json(path)
        if meta.get("kind") != cls.kind:
            raise RunDirError(f"{path}: kind {meta.get('kind')!r}, expected {cls.kind!r}")
        policy = cls(RuleConfig.parse(meta["config"]))
        policy.meta = dict(meta.get("meta", {}))
        return policy


def default_behaviours(feature_names: tuple[str, ...] | list[str], centers: dict[str, float], seed: int,
                       n_assets: int = 1) -> list[RulePolicy]:
    """The standard behaviour mix for offline data: MA crossover and momentum on a trend signal, plus random.

    The signal is ``zscore_24`` when present (the tactical feature set), else the first feature whose name starts
    with ``ret_`` (e.g. the simulator's basic features), else column 0. ``centers`` maps signal names to their
    training-window medians.
    """
    names = list(feature_names)
    signal = "zscore_24" if "zscore_24" in names else next((n for n in names if n.startswith("ret_")), names[0])
    idx = names.index(signal)
    c = float(centers.get(signal, 0.0))
    return [
        RulePolicy(RuleConfig(rule="ma_crossover", signal_index=idx, signal_name=signal, fast=4, slow=16, seed=seed),
                   n_assets),
        RulePolicy(RuleConfig(rule="momentum", signal_index=idx, signal_name=signal, lookback=8, center=c,
                              band=0.0, seed=seed + 1), n_assets),
        RulePolicy(RuleConfig(rule="random", seed=seed + 2), n_assets),
    ]
