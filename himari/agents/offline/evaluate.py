"""Honest classification evaluation of any discrete policy on the purged label splits.

Metrics (``y`` true labels, ``p`` predicted probabilities, ``ŷ = argmax p``):

* accuracy ``mean(ŷ = y)``; balanced accuracy = mean per-class recall over the classes present in ``y``;
* macro-F1 = unweighted mean of per-class F1 over the three classes;
* log-loss ``-mean log p(y)`` (probabilities clipped at 1e-12).

Always reported beside the majority-class baseline: predict the most frequent *training* label with the training
class frequencies as probabilities. A model that does not beat it has learned nothing usable from the labels.

Policies are run as ``n_streams`` chronological streams over the split's decision bars (observations built from the
per-bar inputs, flat account), so stateful sequence models (DT, CGDT) see their context grow as in deployment.
The trading evaluation (costs, sizing, risk) is the backtester's job; this measures label agreement only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score

from himari.agents.offline.common import N_ACTIONS
from himari.agents.offline.datasets import SupervisedData
from himari.env.protocol import ACCOUNT_FIELDS, REGIME_NAMES, Observation


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and log-loss of probabilities ``(n, 3)`` against labels ``(n,)``."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if y.size == 0:
        return {"n": 0, "accuracy": float("nan"), "balanced_accuracy": float("nan"), "macro_f1": float("nan"),
                "log_loss": float("nan")}
    pred = p.argmax(1)
    return {
        "n": int(y.size),
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=list(range(N_ACTIONS)), average="macro", zero_division=0)),
        "log_loss": float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-12, 1.0)))),
        "predicted_counts": np.bincount(pred, minlength=N_ACTIONS).tolist(),  # type: ignore[dict-item]
    }


def majority_baseline(train_labels: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """Metrics of predicting the majority training class with the training class frequencies as probabilities."""
    counts = np.bincount(np.asarray(train_labels, np.int64), minlength=N_ACTIONS).astype(np.float64)
    prior = (counts + 1.0) / (counts.sum() + N_ACTIONS)  # Laplace-smoothed training frequencies
    probs = np.broadcast_to(prior, (np.asarray(y_true).size, N_ACTIONS))
    out = classification_metrics(y_true, probs)
    out["majority_class"] = int(counts.argmax())  # type: ignore[assignment]
    return out


def stream_probs(policy: Any, data: SupervisedData, idx: np.ndarray, n_streams: int = 16) -> np.ndarray:
    """``(n, 3)`` action probabilities of ``policy`` at decision bars ``idx`` (sorted), as chronological streams."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return np.zeros((0, N_ACTIONS), np.float32)
    n_regimes = len(REGIME_NAMES)
    n_feat = data.inputs.shape[1] - n_regimes
    window = max(int(policy.window), 1)
    k = max(1, min(n_streams, idx.size))
    edges = (np.arange(k + 1) * idx.size) // k
    lengths = np.diff(edges)
    out = np.zeros((idx.size, N_ACTIONS), np.float32)
    state = policy.initial_state(k)
    offsets = np.arange(-window + 1, 1)
    account = np.zeros((k, 1, len(ACCOUNT_FIELDS)), np.float32)
    for j in range(int(lengths.max())):
        pos = edges[:-1] + np.minimum(j, lengths - 1)
        rows = np.maximum(idx[pos][:, None] + offsets[None, :], 0)
        x = data.inputs[rows]  # (k, W, F+R)
        obs = Observation(x[:, :, None, :n_feat], x[:, :, None, n_feat:], account)
        result, state = policy.act(obs, state, deterministic=True)
        active = j < lengths
        out[pos[active]] = np.asarray(result.action_probs)[active, 0]
    return out


def evaluate_policy(policy: Any, data: SupervisedData, splits: tuple[str, ...] = ("validation", "test"),
                    n_streams: int = 16) -> dict[str, Any]:
    """Per split: the policy's metrics and the majority baseline's, side by side, plus class counts."""
    train_labels = data.labels[data.splits["train"]]
    report: dict[str, Any] = {"train_class_counts": np.bincount(train_labels, minlength=N_ACTIONS).tolist()}
    for split in splits:
        idx = data.splits.get(split, np.zeros(0, np.int64))
        y = data.labels[idx]
        probs = stream_probs(policy, data, idx, n_streams)
        model = classification_metrics(y, probs)
        base = majority_baseline(train_labels, y)
        report[split] = {
            "model": model,
            "majority_baseline": base,
            "class_counts": np.bincount(y, minlength=N_ACTIONS).tolist(),
            "beats_majority_log_loss": bool(idx.size and model["log_loss"] < base["log_loss"]),
            "beats_majority_balanced_accuracy": bool(idx.size and model["balanced_accuracy"] > base["balanced_accuracy"]),
        }
    return report
