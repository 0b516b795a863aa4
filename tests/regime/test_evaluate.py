"""Evaluation helpers and hysteresis: exact small cases."""

from __future__ import annotations

import numpy as np
import pytest

from himari.regime.evaluate import agreement, persistence, run_lengths
from himari.regime.student_t_hmm import apply_hysteresis


def test_run_lengths_and_persistence() -> None:
    path = np.array([0, 0, 1, 1, 1, 3, 0])
    assert run_lengths(path).tolist() == [2, 3, 1, 1]
    p = persistence(path)
    assert p["mean_run_bars"] == pytest.approx(7 / 4)
    assert p["switches_per_1000_bars"] == pytest.approx(1000 * 3 / 7)
    assert run_lengths(np.array([], dtype=int)).size == 0


def test_agreement_per_regime() -> None:
    labels = np.array([0, 0, 1, 2, 3, -1, 3])
    reported = np.array([0, 1, 1, 2, 2, 0, 3])
    out = agreement(reported, labels)
    assert out["bars"] == 6
    assert out["overall"] == pytest.approx(4 / 6)
    assert out["per_regime"]["LOW_VOL"]["recall"] == pytest.approx(0.5)
    assert out["per_regime"]["HIGH_VOL"]["precision"] == pytest.approx(0.5)
    assert out["per_regime"]["CRISIS"]["recall"] == pytest.approx(0.5)
    assert np.array(out["confusion_label_by_reported"]).sum() == 6


def test_hysteresis_switches_only_past_margin() -> None:
    post = np.array([
        [0.6, 0.4, 0.0, 0.0],
        [0.45, 0.55, 0.0, 0.0],  # argmax flips but by < 0.2: keep regime 0
        [0.35, 0.65, 0.0, 0.0],  # now 0.65 >= 0.35 + 0.2: switch to 1
        [0.5, 0.5, 0.0, 0.0],
        [0.1, 0.2, 0.7, 0.0],
    ])
    assert apply_hysteresis(post, 0.2).tolist() == [0, 0, 1, 1, 2]
    assert apply_hysteresis(post, 0.0).tolist() == post.argmax(axis=1).tolist() == [0, 1, 1, 0, 2]
    # causal: the path on a prefix is the prefix of the path
    assert apply_hysteresis(post[:3], 0.2).tolist() == [0, 0, 1]
