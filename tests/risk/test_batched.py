"""The batched stateless gates equal the RiskEngine (stateful gates off) stream by stream."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.timeframe import Timeframe
from himari.risk import RiskConfig, RiskEngine
from himari.risk.batched import BATCHED_GATES, batched_covariance, batched_risk
from himari.sizing import DecisionContext
from himari.sizing.kelly import bayesian_kelly
from himari.sizing.sizer import SizingResult

TF = Timeframe.parse("1h")


def _sizing(proposal: np.ndarray) -> SizingResult:
    z = np.zeros(len(proposal))
    return SizingResult(
        proposal,
        np.sign(proposal),
        z,
        z + 1,
        z + 1,
        z,
        bayesian_kelly(np.full((1, len(proposal)), np.nan)),
        (),
    )


VARIANTS = {
    "default": {},
    # vol and drawdown off, tight margin: VaR, margin and leverage become the binding gates
    "tail": {
        "vol_enabled": False,
        "drawdown_enabled": False,
        "margin_buffer": 0.9,
        "portfolio_var_limit_daily": 0.05,
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("n_assets", [1, 3])
def test_batched_matches_engine(n_assets: int, variant: str) -> None:
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
    cfg = RiskConfig.parse(
        VARIANTS[variant],
        evt_enabled=False,
        kelly_cap_enabled=False,
        budget_enabled=False,
        portfolio_var_method="covariance",
    )
    out = batched_risk(proposal, returns, posterior, equity, peak, cfg, TF.periods_per_year, TF.seconds)
    names = tuple(f"a{i}" for i in range(n_assets))
    for i in range(n):
        ctx = DecisionContext(
            0, TF, returns[i], posterior[i], float(equity[i]), np.zeros(n_assets), float(peak[i])
        )
        ref = RiskEngine(cfg, names).decide(_sizing(proposal[i]), ctx)
        np.testing.assert_allclose(out.target[i], ref.target, rtol=1e-9, atol=1e-12, err_msg=f"stream {i}")
        assert out.leverage_cap[i] == pytest.approx(ref.leverage_cap)
        for g in ref.gates:
            if g.name in BATCHED_GATES and ref.gates[0].scale.all():
                np.testing.assert_allclose(out.gate_scales[g.name][i], g.scale, rtol=1e-9, err_msg=g.name)
    stack = np.array([out.gate_scales[g] for g in BATCHED_GATES])
    binding = {BATCHED_GATES[k] for k in np.unique(stack.argmin(0)[stack.min(0) < 1])}
    assert len(binding) >= 2  # the comparison exercised more than one gate
    assert np.all(np.abs(out.target).sum(1) <= out.leverage_cap + 1e-12)
    assert np.all(np.abs(out.target) <= np.abs(np.nan_to_num(proposal)) + 1e-12)


def test_batched_covariance_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    window = rng.normal(size=(2, 50, 3))
    window[0, 5, 1] = np.nan
    cov = batched_covariance(window, np.ones((2, 3), dtype=bool))
    np.testing.assert_allclose(cov[1], np.cov(window[1].T))
    np.testing.assert_allclose(cov[0], np.cov(np.delete(window[0], 5, axis=0).T))
    only_two = batched_covariance(window, np.array([[True, False, True]] * 2))
    np.testing.assert_allclose(only_two[0][np.ix_([0, 2], [0, 2])], np.cov(window[0][:, [0, 2]].T))
    assert np.all(only_two[0][1] == 0)
