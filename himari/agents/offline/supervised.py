"""Label training for the window classifiers (BaselineMLP, FLAG-TRADER), as an algorithm of the shared loop.

Loss: cross-entropy on BUY/HOLD/SELL labels, optionally class-weighted with ``w_c = n / (C n_c)`` from the
training split. Minibatches are drawn uniformly (with replacement) from the training split. Selection score: minus
the validation log-loss ``-mean log p(y)`` on at most ``max_eval_samples`` evenly spaced validation samples; the
untrained weights are a candidate too, so selection can honestly find no skill. The test split is never read.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from himari.agents.offline.common import N_ACTIONS
from himari.agents.offline.datasets import SupervisedData
from himari.agents.offline.loop import OfflineAlgorithm
from himari.errors import DataError


class WindowClassifier(Protocol):
    net: nn.Module

    def logits_from_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """``(n, W, F+R) -> (n, 3)`` logits for the decision bar (the last bar of each window)."""
        ...


def predict_proba(model: WindowClassifier, data: SupervisedData, idx: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``(n, 3)`` class probabilities for samples ``idx`` (eval mode, no grad, CPU)."""
    model.net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            x = torch.from_numpy(data.windows(idx[start : start + batch_size]))
            out.append(torch.softmax(model.logits_from_windows(x), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, N_ACTIONS), np.float32)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Balanced weights ``n / (C n_c)`` (0 for absent classes)."""
    counts = np.bincount(labels, minlength=N_ACTIONS).astype(np.float64)
    weights = np.where(counts > 0, labels.size / (N_ACTIONS * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


class SupervisedAlgorithm(OfflineAlgorithm):
    """Cross-entropy on labelled windows; selected by validation log-loss."""

    name: ClassVar[str] = "supervised"
    evaluate_initial: ClassVar[bool] = True

    def __init__(self, model: WindowClassifier, data: SupervisedData, balanced: bool = False,
                 max_eval_samples: int = 4096) -> None:
        self.model = model
        self.module = model.net
        self.data = data
        self.train_idx = data.splits.get("train", np.zeros(0, np.int64))
        if self.train_idx.size == 0:
            raise DataError("supervised training: the training split has no usable labelled samples")
        val_idx = data.splits.get("validation", np.zeros(0, np.int64))
        if val_idx.size > max_eval_samples:  # evenly spaced subsample, deterministic
            val_idx = val_idx[np.linspace(0, val_idx.size - 1, max_eval_samples).astype(np.int64)]
        self.val_idx = val_idx
        self.weight = torch.from_numpy(class_weights(data.labels[self.train_idx])) if balanced else None

    def to(self, device: torch.device) -> None:
        super().to(device)
        if self.weight is not None:
            self.weight = self.weight.to(device)

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.train_idx[rng.integers(0, self.train_idx.size, size=min(batch_size, self.train_idx.size))]
        return (torch.from_numpy(self.data.windows(batch)).to(self.device),
                torch.from_numpy(self.data.labels[batch]).to(self.device))

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        windows, labels = batch
        return F.cross_entropy(self.model.logits_from_windows(windows), labels, weight=self.weight), {}

    def validate(self) -> tuple[float | None, dict[str, float]]:
        if self.val_idx.size == 0:
            return None, {}
        probs = predict_proba(self.model, self.data, self.val_idx)
        y = self.data.labels[self.val_idx]
        log_loss = float(-np.mean(np.log(np.clip(probs[np.arange(y.size), y], 1e-12, 1.0))))
        return -log_loss, {"val_log_loss": log_loss, "val_accuracy": float(np.mean(probs.argmax(1) == y))}
