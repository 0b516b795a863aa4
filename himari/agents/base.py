"""The inference contract every policy implements, whatever trained it.

Backtests, WFO, the API server and paper trading only use this interface, so any policy (PPO MLP/LSTM/transformer,
multi-asset, sizer, supervised classifier, CQL, DT, CGDT, FLAG-TRADER, ensembles) plugs into the same code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from himari.env.protocol import ActionKind, Observation


class PolicyOutput(NamedTuple):
    action: np.ndarray  # (N, A): int64 in {HOLD, LONG, SHORT} for discrete; float target/delta otherwise
    action_probs: np.ndarray | None = None  # (N, A, 3) for discrete policies
    value: np.ndarray | None = None  # (N,) critic estimate where the policy has one
    direction_action: np.ndarray | None = None  # (N, A) HOLD/LONG/SHORT of a stacked policy's L2 (delta base sign)


@runtime_checkable
class Policy(Protocol):
    kind: str  # registry key, e.g. "mlp", "lstm", "transformer", "multiasset", "sizer", "cql", ...
    action_kind: ActionKind
    window: int  # observation window (bars) the policy expects
    n_assets: int

    def initial_state(self, n: int) -> Any:
        """Recurrent/context state for n parallel streams (None for stateless policies)."""
        ...

    def reset_state(self, state: Any, done: np.ndarray) -> Any:
        """Reset the state of streams whose episode just ended (bool (N,))."""
        ...

    def act(self, obs: Observation, state: Any, deterministic: bool = True) -> tuple[PolicyOutput, Any]:
        """Decide for bar t from an observation holding data <= t only."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write ``policy.json`` (kind, config) and weights as safetensors, atomically."""
        ...
