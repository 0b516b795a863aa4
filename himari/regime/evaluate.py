"""Regime evaluation against the rule labeller on a later period: agreement, log-likelihood, persistence.

* agreement: overall share of labelled bars where the reported regime equals the label; per regime the recall
  ``P(reported = k | label = k)`` and precision ``P(label = k | reported = k)``;
* log-likelihood: ``sum_t log p(x_t | x_<t)`` of the HMM observations under the model's forward filter, also per
  bar, so models (Student-t vs Gaussian) compare on the same rows;
* persistence: mean run length (bars) of the reported regime and of the labels, and switches per 1000 bars.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from himari.regime.labeller import REGIME_NAMES


def run_lengths(path: np.ndarray) -> np.ndarray:
    """Lengths of the runs of equal consecutive values."""
    if len(path) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(path[1:] != path[:-1]) + 1
    bounds = np.concatenate([[0], change, [len(path)]])
    return np.diff(bounds)


def persistence(path: np.ndarray) -> dict[str, float]:
    runs = run_lengths(path)
    n = max(len(path), 1)
    return {
        "mean_run_bars": float(runs.mean()) if len(runs) else 0.0,
        "switches_per_1000_bars": float(1000.0 * (len(runs) - 1) / n) if len(runs) else 0.0,
    }


def agreement(reported: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Overall and per-regime agreement on rows with a known label (label >= 0)."""
    ok = labels >= 0
    rep, lab = reported[ok], labels[ok]
    out: dict[str, Any] = {"bars": int(ok.sum()), "overall": float((rep == lab).mean()) if ok.any() else float("nan")}
    per: dict[str, dict[str, float]] = {}
    for k, name in enumerate(REGIME_NAMES):
        n_lab = int((lab == k).sum())
        n_rep = int((rep == k).sum())
        hit = int(((lab == k) & (rep == k)).sum())
        per[name] = {
            "label_share": n_lab / max(len(lab), 1),
            "reported_share": n_rep / max(len(lab), 1),
            "recall": hit / n_lab if n_lab else float("nan"),
            "precision": hit / n_rep if n_rep else float("nan"),
        }
    out["per_regime"] = per
    confusion = np.zeros((4, 4), dtype=np.int64)
    np.add.at(confusion, (lab, rep), 1)
    out["confusion_label_by_reported"] = confusion.tolist()
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines of an evaluation summary produced by the CLI."""
    lines = []
    agr = summary["agreement"]
    lines.append(f"agreement with labeller: {agr['overall'] * 100:.1f}% of {agr['bars']} labelled bars")
    lines.append(f"{'regime':<10} {'label%':>7} {'model%':>7} {'recall':>7} {'precis.':>7}")
    for name, row in agr["per_regime"].items():
        lines.append(
            f"{name:<10} {row['label_share'] * 100:7.1f} {row['reported_share'] * 100:7.1f} "
            f"{row['recall'] * 100:7.1f} {row['precision'] * 100:7.1f}"
        )
    for key, value in summary.get("loglik_per_bar", {}).items():
        lines.append(f"held-out log-likelihood per bar [{key}]: {value:.4f}")
    for key, value in summary.get("persistence", {}).items():
        lines.append(f"persistence [{key}]: mean run {value['mean_run_bars']:.1f} bars, {value['switches_per_1000_bars']:.1f} switches/1000 bars")
    if "verdict" in summary:
        lines.append(summary["verdict"])
    return "\n".join(lines)
