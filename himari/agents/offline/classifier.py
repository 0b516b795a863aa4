"""BaselineMLP: a supervised BUY/HOLD/SELL classifier over a trailing window of features and regime posterior.

``p(a | x_{t-W+1..t}) = softmax(MLP(flatten(x)))``, trained with cross-entropy on the forward-return labels of
``himari.agents.offline.datasets``. As a policy, BUY maps to LONG, SELL to SHORT, HOLD to HOLD.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from himari.agents.base import PolicyOutput
from himari.agents.offline.common import N_ACTIONS, TorchPolicyMixin, bar_inputs, mlp, softmax_np
from himari.config import FrozenConfig
from himari.env.protocol import Observation
from himari.utils.seeding import make_rng


class ClassifierConfig(FrozenConfig):
    n_inputs: int = Field(ge=1)  # F + R per bar
    window: int = Field(16, ge=1, le=1024)
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(256, ge=1)
    balanced_classes: bool = False  # class-weighted loss (better balanced accuracy, worse calibration)
    seed: int = 0


class ClassifierNet(torch.nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.body = mlp(config.window * config.n_inputs, config.hidden, N_ACTIONS, config.dropout)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.body(windows.reshape(windows.shape[0], -1))


class ClassifierPolicy(TorchPolicyMixin):
    """``himari.agents.base.Policy`` for the BaselineMLP classifier (stateless, discrete)."""

    kind: ClassVar[str] = "mlp-classifier"
    config_class: ClassVar[type[FrozenConfig]] = ClassifierConfig
    action_kind = "discrete"

    def __init__(self, config: ClassifierConfig, n_assets: int = 1) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        self.net = ClassifierNet(config)
        self.net.eval()
        self.window = config.window
        self.n_assets = n_assets
        self.meta: dict[str, Any] = {}
        self._rng = make_rng(config.seed)

    def logits_from_windows(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(windows)  # type: ignore[no-any-return]

    def initial_state(self, n: int) -> None:
        return None

    def reset_state(self, state: Any, done: np.ndarray) -> None:
        return None

    def act(self, obs: Observation, state: Any, deterministic: bool = True) -> tuple[PolicyOutput, Any]:
        n, _, a, _ = obs.features.shape
        with torch.no_grad():
            logits = self.net(torch.from_numpy(bar_inputs(obs, self.window))).numpy()
        return probs_to_output(softmax_np(logits).reshape(n, a, N_ACTIONS), deterministic, self._rng), None


def probs_to_output(probs: np.ndarray, deterministic: bool, rng: np.random.Generator,
                    value: np.ndarray | None = None) -> PolicyOutput:
    """Argmax (deterministic) or a sample from ``probs`` (N, A, 3) -> ``PolicyOutput``."""
    if deterministic:
        action = probs.argmax(-1).astype(np.int64)
    else:
        cum = probs.cumsum(-1)
        u = rng.random((*probs.shape[:-1], 1))
        action = np.minimum((u > cum).sum(-1), N_ACTIONS - 1).astype(np.int64)
    return PolicyOutput(action=action, action_probs=probs.astype(np.float32), value=value)
