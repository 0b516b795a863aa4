"""The verdict names the best baseline and never claims an edge the statistics do not support."""

from __future__ import annotations

import math

from himari.evaluation.verdict import best_baseline, make_verdict

BASELINES = {
    "buy_and_hold": {"sharpe": 0.60},
    "vol_target_buy_and_hold": {"sharpe": 0.77},
    "ma_crossover": {"sharpe": 0.30},
    "random": {"sharpe": -0.20},
}


def test_does_not_beat_names_best_baseline() -> None:
    v = make_verdict({"sharpe": 0.41}, BASELINES, sharpe_ci=(-0.3, 1.1), dsr=0.31, n_trials=12)
    assert not v.edge and v.best_baseline == "vol_target_buy_and_hold"
    assert v.text == (
        "Does not beat volatility-targeted buy-and-hold after costs (Sharpe 0.41 vs 0.77); DSR 0.31 (12 trials)."
    )


def test_higher_sharpe_but_ci_includes_baseline() -> None:
    v = make_verdict({"sharpe": 1.2}, BASELINES, sharpe_ci=(0.5, 1.9), dsr=0.97, n_trials=3)
    assert not v.edge
    assert "no demonstrated edge" in v.text and "includes 0.77" in v.text


def test_low_dsr_blocks_edge() -> None:
    v = make_verdict({"sharpe": 2.0}, BASELINES, sharpe_ci=(1.2, 2.8), dsr=0.80, n_trials=40)
    assert not v.edge and "DSR 0.80 < 0.95 (40 trials)" in v.text


def test_missing_evidence_blocks_edge() -> None:
    v = make_verdict({"sharpe": 2.0}, BASELINES)
    assert not v.edge
    assert "no confidence interval" in v.text and "no deflated Sharpe ratio" in v.text


def test_high_pbo_blocks_edge() -> None:
    v = make_verdict({"sharpe": 2.0}, BASELINES, sharpe_ci=(1.2, 2.8), dsr=0.99, n_trials=5, pbo=0.6)
    assert not v.edge and "PBO 0.60" in v.text


def test_edge_only_when_everything_holds() -> None:
    v = make_verdict({"sharpe": 2.0}, BASELINES, sharpe_ci=(1.2, 2.8), dsr=0.97, n_trials=5, pbo=0.1)
    assert v.edge
    assert v.text.startswith("Beats volatility-targeted buy-and-hold after costs (Sharpe 2.00 vs 0.77")
    assert "DSR 0.97 (5 trials)" in v.text and "PBO 0.10" in v.text


def test_undefined_and_missing_values() -> None:
    v = make_verdict({"sharpe": math.nan}, BASELINES, sharpe_ci=(1.0, 2.0), dsr=0.99)
    assert not v.edge and "undefined" in v.text
    v = make_verdict({"sharpe": 1.0}, {}, sharpe_ci=(0.5, 1.5), dsr=0.99)
    assert not v.edge and v.best_baseline is None and "No baseline" in v.text
    v = make_verdict({"sharpe": 1.0}, {"random": {"sharpe": math.nan}}, sharpe_ci=(0.5, 1.5), dsr=0.99)
    assert not v.edge and "undefined" in v.text and "No edge claimed" in v.text
    assert best_baseline({"a": {"sharpe": None}, "b": {"sharpe": math.nan}, "c": {"sharpe": -1.0}}) == ("c", -1.0)
