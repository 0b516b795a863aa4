"""One supervised training loop for the label-trained models (BaselineMLP classifier, FLAG-TRADER).

Cross-entropy on BUY/HOLD/SELL labels (optionally class-weighted, ``w_c = n / (C n_c)`` from the training split),
AdamW, minibatches drawn with an explicit generator. Model selection uses the validation split only: every
``eval_every`` steps the validation log-loss is computed and the best weights are kept; the test split is never
read here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from himari.agents.offline.common import N_ACTIONS
from himari.agents.offline.datasets import SupervisedData
from himari.errors import DataError
from himari.utils.seeding import make_rng


class WindowClassifier(Protocol):
    net: nn.Module

    def logits_from_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """``(n, W, F+R) -> (n, 3)`` logits for the decision bar (the last bar of each window)."""
        ...


def predict_proba(model: WindowClassifier, data: SupervisedData, idx: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``(n, 3)`` class probabilities for samples ``idx`` (eval mode, no grad)."""
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


def train_supervised(
    model: WindowClassifier,
    data: SupervisedData,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 0.0,
    balanced: bool = False,
    eval_every: int = 100,
    max_eval_samples: int = 4096,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data.splits["train"]``, select the best step by validation log-loss; returns history."""
    train_idx = data.splits.get("train", np.zeros(0, np.int64))
    if train_idx.size == 0:
        raise DataError("train_supervised: the training split has no usable labelled samples")
    val_idx = data.splits.get("validation", np.zeros(0, np.int64))
    rng = make_rng(seed)
    torch.manual_seed(seed)
    if val_idx.size > max_eval_samples:  # evenly spaced subsample, deterministic
        val_idx = val_idx[np.linspace(0, val_idx.size - 1, max_eval_samples).astype(np.int64)]
    params = [p for p in model.net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    weight = torch.from_numpy(class_weights(data.labels[train_idx])) if balanced else None
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def evaluate(step: int, train_loss: float) -> None:
        nonlocal best
        record = {"step": float(step), "train_loss": train_loss}
        if val_idx.size:
            probs = predict_proba(model, data, val_idx)
            y = data.labels[val_idx]
            val_loss = float(-np.mean(np.log(np.clip(probs[np.arange(y.size), y], 1e-12, 1.0))))
            record["val_log_loss"] = val_loss
            record["val_accuracy"] = float(np.mean(probs.argmax(1) == y))
            if best is None or val_loss < best[0]:
                best = (val_loss, step, {k: v.detach().clone() for k, v in model.net.state_dict().items()})
        history.append(record)

    running = float("nan")
    evaluate(0, running)  # the untrained model is a candidate too: selection may honestly find no skill
    for step in range(1, steps + 1):
        model.net.train()
        batch = train_idx[rng.integers(0, train_idx.size, size=min(batch_size, train_idx.size))]
        x = torch.from_numpy(data.windows(batch))
        y = torch.from_numpy(data.labels[batch])
        loss = F.cross_entropy(model.logits_from_windows(x), y, weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        value = float(loss.detach())
        running = value if np.isnan(running) else 0.95 * running + 0.05 * value
        if on_step is not None:
            on_step(step, value)
        if step % eval_every == 0 or step == steps:
            evaluate(step, running)
    if best is not None:
        model.net.load_state_dict(best[2])
    model.net.eval()
    return {
        "history": history,
        "best_step": best[1] if best else steps,
        "best_val_log_loss": best[0] if best else None,
    }
