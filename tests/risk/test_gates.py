"""The simple gates: drawdown thresholds, portfolio VaR, safe margin, leverage, budget, Kelly cap, vol target."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from himari.errors import ConfigError
from himari.risk.budget import RiskBudget, budget_target
from himari.risk.config import RiskConfig, per_bar_limit
from himari.risk.drawdown import decayed_peak
from himari.risk.gate import scale_to_limit
from himari.sizing.kelly import bayesian_kelly
from tests.risk.reference_gates import (
    covariance_var,
    drawdown,
    drawdown_scale,
    historical_var,
    kelly_cap_gate,
    leverage_gate,
    margin_usage,
    portfolio_var_gate,
    quantile_linear,
    regime_leverage_cap,
    safe_margin_gate,
    scalar_scale,
    vol_target_gate,
)

TH, CUTS = (0.03, 0.06, 0.10), (0.30, 0.60, 0.95)


@pytest.mark.parametrize(
    ("dd", "scale"),
    [
        (0.0, 1.0),
        (0.0299, 1.0),
        (0.03, 0.7),
        (0.0599, 0.7),
        (0.06, 0.4),
        (0.0999, 0.4),
        (0.10, 0.05),
        (0.6, 0.05),
    ],
)
def test_drawdown_thresholds(dd: float, scale: float) -> None:
    assert drawdown_scale(dd, TH, CUTS) == pytest.approx(scale)


def test_drawdown_recovers_with_equity() -> None:
    peak = 100.0
    path = [100, 96, 93, 89, 93, 96, 99, 101]
    scales = [drawdown_scale(drawdown(e, max(peak, e)), TH, CUTS) for e in path]
    assert scales == pytest.approx([1.0, 0.7, 0.4, 0.05, 0.4, 0.7, 1.0, 1.0])
    assert drawdown_scale(drawdown(float("nan"), 1.0), TH, CUTS) == 0.0


def test_portfolio_var_cov_and_historical() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, (100, 2))
    cov = np.cov(r.T)
    w = np.array([0.5, -0.3])
    assert covariance_var(w, cov, 0.99) == pytest.approx(stats.norm.ppf(0.99) * np.sqrt(w @ cov @ w))
    assert historical_var(w, r, 0.99) == pytest.approx(np.quantile(-(np.expm1(r) @ w), 0.99))
    x = rng.normal(size=37)
    assert quantile_linear(x, 0.9) == pytest.approx(np.quantile(x, 0.9))
    g = portfolio_var_gate(w * 10, cov, r, 0.99, 0.01)
    var = max(covariance_var(w * 10, cov, 0.99), historical_var(w * 10, r, 0.99))
    assert g.scale[0] == pytest.approx(0.01 / var)
    assert portfolio_var_gate(np.zeros(2), cov, r, 0.99, 0.01).scale.tolist() == [1.0, 1.0]


def test_safe_margin() -> None:
    x, sigma = np.array([2.0, -1.0]), np.array([0.01, 0.02])
    usage = margin_usage(x, sigma, 16, 3.0, 0.001, 0.005)
    assert usage == pytest.approx(2 * (0.12 + 0.006) + 1 * (0.24 + 0.006))
    assert safe_margin_gate(x, sigma, 16, 3.0, 0.001, 0.005, 0.2).scale[0] == 1.0  # 49.8 % used < 80 %
    g = safe_margin_gate(2 * x, sigma, 16, 3.0, 0.001, 0.005, 0.2)
    assert g.scale[0] == pytest.approx(0.8 / (2 * usage))
    assert safe_margin_gate(x, np.array([np.nan, 0.01]), 16, 3.0, 0.0, 0.0, 0.2).scale[0] == 0.0


def test_leverage_cap_by_regime() -> None:
    levels = np.array([3.0, 2.5, 1.5, 0.5])
    low = regime_leverage_cap(np.array([[1.0, 0, 0, 0]]), levels, 3.0, np.array([True]))
    crisis = regime_leverage_cap(np.array([[0, 0, 0, 1.0]]), levels, 3.0, np.array([True]))
    mixed = regime_leverage_cap(
        np.array([[0.5, 0, 0, 0.5], [1.0, 0, 0, 0]]), levels, 3.0, np.array([True, True])
    )
    assert (low, crisis, mixed) == (3.0, 0.5, 1.75)
    assert leverage_gate(np.array([2.0, -1.5]), 1.75).scale[0] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="non-increasing"):
        RiskConfig.parse(leverage_by_regime=(1.0, 1.0, 1.5, 3.0))


def test_budget_target_and_smoothing() -> None:
    ppy = 8760.0
    kwargs = dict(window=720, min_bars=48, sensitivity=0.25, budget_min=0.5, budget_max=1.2)
    assert budget_target(None, ppy, **kwargs) == 1.0
    assert budget_target(np.full(10, 0.001), ppy, **kwargs) == 1.0
    rng = np.random.default_rng(0)
    good = rng.normal(0.001, 0.005, 500)
    bad = rng.normal(-0.001, 0.005, 500)
    assert budget_target(good, ppy, **kwargs) == 1.2
    assert budget_target(bad, ppy, **kwargs) == 0.5
    r = rng.normal(0, 0.01, 500)
    sharpe = r.mean() / r.std(ddof=1) * np.sqrt(ppy)
    assert budget_target(r, ppy, **kwargs) == pytest.approx(np.clip(1 + 0.25 * sharpe, 0.5, 1.2))
    b = RiskBudget(halflife_bars=10, budget_min=0.5, budget_max=1.2)
    for t in range(10):
        b.update(t, 0.5)
    assert b.value == pytest.approx(0.75)  # half-way after one half-life
    b.update(9, 0.5)  # same bar: no update
    assert b.value == pytest.approx(0.75)


def test_kelly_cap_gate() -> None:
    good = bayesian_kelly(np.array([0.01] * 60 + [-0.01] * 40), max_position=10.0, min_outcomes=50)
    g = kelly_cap_gate(np.array([good.position[0] * 2]), good)
    assert g.scale[0] == pytest.approx(0.5)
    none = bayesian_kelly(np.array([0.01] * 40 + [-0.01] * 60), min_outcomes=50)
    g = kelly_cap_gate(np.array([0.5]), none)
    assert g.scale[0] == 0.0 and "no positive posterior edge" in g.reason
    warm = bayesian_kelly(np.array([-0.01] * 5), min_outcomes=50)
    assert kelly_cap_gate(np.array([0.5]), warm).scale[0] == 1.0


def test_vol_target_gate_and_limits() -> None:
    cov = np.array([[1e-4]])
    g = vol_target_gate(np.array([2.0]), cov, 8760.0, 0.6)
    assert g.scale[0] == pytest.approx(0.6 / (2 * 0.01 * np.sqrt(8760)))
    assert per_bar_limit(0.24, 3600) == pytest.approx(0.24 / np.sqrt(24))
    with pytest.raises(ConfigError):
        RiskConfig.parse(drawdown_thresholds=(0.06, 0.03), drawdown_cuts=(0.3, 0.6))


def test_scale_to_limit() -> None:
    np.testing.assert_allclose(
        scale_to_limit(np.array([0.0, 0.5, 2.0, np.nan, np.inf]), 1.0), [1, 1, 0.5, 0, 0]
    )
    np.testing.assert_allclose(scale_to_limit(np.array([2.0, 2.0]), np.array([1.0, 4.0])), [0.5, 1.0])
    assert [scalar_scale(v, 1.0) for v in (0.0, 2.0, float("nan"), float("inf"))] == [1.0, 0.5, 0.0, 0.0]


def test_decayed_peak() -> None:
    assert decayed_peak(1.0, 0.8, 24.0, 24.0) == pytest.approx(0.9)
    assert decayed_peak(1.0, 0.8, 0.0, 24.0) == pytest.approx(1.0)
    assert decayed_peak(1.0, 1.1, 5.0, 24.0) == 1.1  # a new high resets it
