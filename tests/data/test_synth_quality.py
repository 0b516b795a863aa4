"""Stylized facts and the TimeGAN post-hoc scores (himari.data.synth_quality) against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.synth_quality import (
    discriminative_score,
    predictive_score,
    rolling_max_drawdown,
    run_lengths,
    stylized_facts,
)
from himari.errors import DataError


def test_run_lengths_and_drawdown_exact() -> None:
    runs = run_lengths(np.array([0, 0, 1, -1, 1, 1, 1, 3]))
    assert {k: v.tolist() for k, v in runs.items()} == {0: [2], 1: [1, 3], 3: [1]}
    close = np.array([1.0, 2.0, 1.0, 1.5, 3.0, 1.5])
    np.testing.assert_allclose(rolling_max_drawdown(close, 3), [0.5, 0.5])


def test_stylized_facts_of_known_series() -> None:
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal(20_000) * 0.01
    facts = stylized_facts(gauss, np.exp(np.cumsum(gauss)), np.zeros(20_000, dtype=int))
    assert abs(facts["excess_kurtosis"]) < 0.2 and abs(facts["acf_abs_1"]) < 0.03
    assert facts["duration_LOW_VOL"] == 20_000 and facts["share_LOW_VOL"] == 1.0 and facts["duration_CRISIS"] == 0.0
    # volatility clustering: |r| autocorrelated; a heavy tail: positive excess kurtosis
    vol = np.repeat(rng.choice([0.005, 0.03], size=200), 100)
    clustered = rng.standard_normal(20_000) * vol
    f2 = stylized_facts(clustered, np.exp(np.cumsum(clustered)))
    assert f2["acf_abs_24"] > 0.2 and f2["excess_kurtosis"] > 2.0
    np.testing.assert_allclose(f2["q01"], np.quantile(clustered, 0.01))
    with pytest.raises(DataError, match="200"):
        stylized_facts(gauss[:50], np.ones(50))


def test_post_hoc_scores_separate_different_data() -> None:
    rng = np.random.default_rng(1)
    real = rng.standard_normal((400, 8, 2))
    same = rng.standard_normal((400, 8, 2))
    far = rng.standard_normal((400, 8, 2)) * 4 + 3
    assert discriminative_score(real, far, seed=0, iters=60) > 0.4
    assert discriminative_score(real, same, seed=0, iters=60) < 0.15
    assert predictive_score(same, real, seed=0, iters=30) < predictive_score(far, real, seed=0, iters=30)
