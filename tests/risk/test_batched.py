"""The batched risk gates (what trains and what trades) equal the plain per-stream reference, every gate on."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.timeframe import Timeframe
from himari.risk import RiskConfig
from himari.risk.batched import GATE_NAMES, batched_covariance, batched_historical_var, batched_risk
from himari.sizing import DecisionContext
from himari.sizing.kelly import KellyEstimate, bayesian_kelly
from tests.risk.reference_gates import historical_var, reference_risk

TF = Timeframe.parse("1h")

VARIANTS = {
    "default": {},
    # vol and drawdown off, tight margin: VaR, margin and leverage become the binding gates
    "tail": {
        "vol_enabled": False,
        "drawdown_enabled": False,
        "margin_buffer": 0.9,
        "portfolio_var_limit_daily": 0.05,
    },
    # tight tail and budget: EVT, Kelly and the budget bind
    "stateful": {"evt_es_limit_daily": 0.02, "budget_min": 0.3},
}


def _kelly(rng: np.random.Generator, n: int, a: int) -> KellyEstimate:
    """Per-stream Kelly estimates from random outcome histories (some informative, some without edge)."""
    rows = []
    for _ in range(n):
        outcomes = rng.normal(rng.uniform(-0.002, 0.003), 0.01, (int(rng.integers(10, 120)), a))
        rows.append(bayesian_kelly(outcomes, min_outcomes=50, max_position=2.0))
    return KellyEstimate(*(np.stack([np.asarray(getattr(k, f)) for k in rows]) for f in KellyEstimate._fields))


@pytest.mark.parametrize("var_method", ["covariance", "historical", "max"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("n_assets", [1, 3])
def test_batched_matches_reference(n_assets: int, variant: str, var_method: str) -> None:
    rng = np.random.default_rng(n_assets)
    n, w = 64, 120
    returns = rng.standard_t(4, (n, w, n_assets)) * rng.uniform(0.002, 0.03, (n, 1, n_assets))
    returns[rng.random((n, w, n_assets)) < 0.03] = np.nan  # gaps inside the window
    proposal = rng.uniform(-4, 4, (n, n_assets))
    proposal[rng.random((n, n_assets)) < 0.1] = 0.0
    posterior = rng.dirichlet(np.ones(4), (n, n_assets))
    posterior[0, 0] = np.nan  # invalid posterior
    equity = rng.uniform(0.8, 1.0, n)
    peak = np.ones(n)
    brake_peak = np.where(rng.random(n) < 0.5, rng.uniform(0.85, 1.0, n), np.nan)
    es_long = rng.uniform(0.005, 0.05, (n, n_assets))
    es_short = rng.uniform(0.005, 0.05, (n, n_assets))
    es_long[1, 0] = np.nan  # no tail estimate: a long position there is denied
    kelly = _kelly(rng, n, n_assets)
    budget = rng.uniform(0.5, 1.2, n)
    cfg = RiskConfig.parse(VARIANTS[variant], portfolio_var_method=var_method)
    out = batched_risk(proposal, returns, posterior, equity, peak, cfg, TF.periods_per_year, TF.seconds,
                       brake_peak=brake_peak, es_long=es_long, es_short=es_short, kelly=kelly, budget=budget)
    names = tuple(f"a{i}" for i in range(n_assets))
    for i in range(n):
        ctx = DecisionContext(0, TF, returns[i], posterior[i], float(equity[i]), np.zeros(n_assets), float(peak[i]))
        reference = float(np.fmin(peak[i], brake_peak[i]))
        target, gates, lev_cap = reference_risk(
            proposal[i], ctx, cfg, names, es_long=es_long[i], es_short=es_short[i],
            kelly=KellyEstimate(*(np.asarray(v)[i] for v in kelly)), budget=float(budget[i]),
            budget_target_value=1.0, brake_reference=reference,
        )
        np.testing.assert_allclose(out.target[i], target, rtol=1e-9, atol=1e-12, err_msg=f"stream {i}")
        assert out.leverage_cap[i] == pytest.approx(lev_cap)
        if gates[0].scale.all():
            for g in gates:
                np.testing.assert_allclose(out.gate_scales[g.name][i], g.scale, rtol=1e-9, err_msg=g.name)
    stack = np.array([out.gate_scales[g] for g in GATE_NAMES])
    binding = {GATE_NAMES[k] for k in np.unique(stack.argmin(0)[stack.min(0) < 1])}
    assert len(binding) >= 3  # the comparison exercised several gates
    assert np.all(np.abs(out.target).sum(1) <= out.leverage_cap + 1e-12)
    assert np.all(np.abs(out.target) <= np.abs(np.nan_to_num(proposal)) + 1e-12)


def test_batched_covariance_and_historical_var_match_numpy() -> None:
    rng = np.random.default_rng(0)
    window = rng.normal(size=(2, 50, 3))
    window[0, 5, 1] = np.nan
    valid = np.ones((2, 3), dtype=bool)
    cov = batched_covariance(window, valid)
    np.testing.assert_allclose(cov[1], np.cov(window[1].T))
    np.testing.assert_allclose(cov[0], np.cov(np.delete(window[0], 5, axis=0).T))
    only_two = batched_covariance(window, np.array([[True, False, True]] * 2))
    np.testing.assert_allclose(only_two[0][np.ix_([0, 2], [0, 2])], np.cov(window[0][:, [0, 2]].T))
    assert np.all(only_two[0][1] == 0)
    x = rng.normal(size=(2, 3))
    hv = batched_historical_var(x, window * 0.01, valid, 0.99)
    assert hv[1] == pytest.approx(historical_var(x[1], window[1] * 0.01, 0.99))
    assert hv[0] == pytest.approx(historical_var(x[0], np.delete(window[0], 5, axis=0) * 0.01, 0.99))
