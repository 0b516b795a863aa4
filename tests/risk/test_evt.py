"""EVT (POT + GPD): the McNeil-Frey VaR/ES formulas against hand computations, fits, the refit cache."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from himari.risk.evt import (
    EvtTailCache,
    fit_pot,
    fit_tails,
    gpd_es,
    gpd_mle,
    gpd_var,
    scheduled_fit_ns,
    tail_es_columns,
    tail_risk,
    unit_losses,
)
from tests.risk.reference_gates import evt_gate

U, XI, BETA, N, NU, Q = 0.02, 0.25, 0.01, 1000, 50, 0.99


def test_var_es_hand_computation() -> None:
    # (n/N_u)(1-q) = 20 * 0.01 = 0.2 ; 0.2^-0.25 = 1.4953487812 ; VaR = 0.02 + 0.04 * 0.4953487812
    var = gpd_var(U, XI, BETA, N, NU, Q)
    assert var == pytest.approx(0.0398139512, abs=1e-9)
    # ES = VaR/(1-ξ) + (β - ξu)/(1-ξ) = 0.0530852683 + 0.0066666667
    assert gpd_es(var, U, XI, BETA) == pytest.approx(0.0597519349, abs=1e-9)
    # the formula without the exceedance rate n/N_u (the original's bug) is a different, much larger number
    naive = U + (BETA / XI) * ((1 - Q) ** (-XI) - 1)
    assert naive > var * 1.3


def test_var_is_the_tail_quantile_of_the_pot_model() -> None:
    # P(L > VaR) = (N_u/n) · GPD survival of (VaR - u) must equal 1 - q
    var = gpd_var(U, XI, BETA, N, NU, Q)
    assert (NU / N) * stats.genpareto.sf(var - U, XI, scale=BETA) == pytest.approx(1 - Q, rel=1e-10)
    # at q = 1 - N_u/n the VaR is exactly the threshold
    assert gpd_var(U, XI, BETA, N, NU, 1 - NU / N) == pytest.approx(U)


def test_es_is_the_conditional_tail_mean() -> None:
    var = gpd_var(U, XI, BETA, N, NU, Q)
    dist = stats.genpareto(XI, loc=U, scale=BETA)
    mass = dist.sf(var)
    mean_tail, _ = integrate.quad(lambda x: x * dist.pdf(x), var, np.inf)
    assert gpd_es(var, U, XI, BETA) == pytest.approx(mean_tail / mass, rel=1e-6)


def test_xi_zero_limit_is_exponential() -> None:
    assert gpd_var(U, 0.0, BETA, N, NU, Q) == pytest.approx(U - BETA * math.log(0.2))
    assert gpd_var(U, 1e-7, BETA, N, NU, Q) == pytest.approx(gpd_var(U, 0.0, BETA, N, NU, Q), rel=1e-5)
    assert gpd_es(0.05, U, 1.2, BETA) == math.inf


def test_fit_recovers_gpd_shape() -> None:
    rng = np.random.default_rng(0)
    body = rng.uniform(0.0, 0.01, 9000)
    tail = 0.01 + stats.genpareto.rvs(0.3, scale=0.005, size=1000, random_state=rng)
    u, xi, beta, n_u = fit_pot(np.concatenate([body, tail]), 0.9)
    assert u == pytest.approx(0.01, abs=1e-3)
    assert abs(n_u - 1000) <= 1
    assert xi == pytest.approx(0.3, abs=0.1)
    assert beta == pytest.approx(0.005, rel=0.2)


def test_tail_risk_matches_student_t_quantile() -> None:
    rng = np.random.default_rng(1)
    scale = 0.01
    losses = stats.t.rvs(4, scale=scale, size=20000, random_state=rng)
    est = tail_risk(losses, 0.99, 0.95, 25, 250)
    assert est.method == "gpd"
    assert est.var == pytest.approx(stats.t.ppf(0.99, 4) * scale, rel=0.08)
    assert est.n_exceed == pytest.approx(1000, abs=2)


def test_small_samples_fall_back_to_empirical() -> None:
    losses = np.random.default_rng(2).normal(0, 0.01, 100)
    est = tail_risk(losses, 0.99, 0.95, 25, 250)
    assert est.method == "empirical"
    assert est.var == pytest.approx(np.quantile(losses, 0.99))
    assert tail_risk(np.array([np.nan]), 0.99, 0.95, 25, 250).method == "none"


def test_unit_losses_are_simple_returns() -> None:
    long, short = unit_losses(np.array([math.log(1.1), math.log(0.9)]))
    np.testing.assert_allclose(long, [-0.1, 0.1])
    np.testing.assert_allclose(short, [0.1, -0.1])


def test_cache_refits_on_schedule_and_roundtrips() -> None:
    rng = np.random.default_rng(3)
    r = rng.standard_t(4, (3000, 2)) * 0.005
    cache = EvtTailCache(2, refit_every_bars=10)
    bar = 3600 * 10**9
    kwargs = dict(window=2000, level=0.99, threshold_quantile=0.95, min_exceedances=25, min_bars=250)
    assert cache.needs_refit(0, bar)
    cache.refit(0, r[:2500], **kwargs)
    assert not cache.needs_refit(9 * bar, bar)
    assert cache.needs_refit(10 * bar, bar)
    # the schedule is absolute: a cache fitted at 20 bars is current from 20 to 29 bars, whenever it started
    assert scheduled_fit_ns(27 * bar, 10, bar) == 20 * bar
    cache.refit(20 * bar, r[:2500], **kwargs)
    assert not cache.needs_refit(29 * bar, bar) and cache.needs_refit(30 * bar, bar)
    clone = EvtTailCache(2, 10)
    clone.load_state_dict(json.loads(json.dumps(cache.state_dict())))
    np.testing.assert_array_equal(clone.es_long, cache.es_long)
    assert clone.long == cache.long
    assert not clone.needs_refit(25 * bar, bar)


def test_tail_columns_equal_a_cache_started_on_any_bar() -> None:
    """The training market's ES column at every bar equals what a trading session's cache holds there, whichever
    bar the session started on (the fit at each scheduled time uses the rows up to that time)."""
    rng = np.random.default_rng(4)
    bar = 3600 * 10**9
    ts = np.arange(3000, dtype=np.int64) * bar + 5 * bar
    r = rng.standard_t(4, (3000, 2)) * 0.005
    kwargs = dict(window=2000, level=0.99, threshold_quantile=0.95, min_exceedances=25, min_bars=250)
    es_long, es_short = tail_es_columns(r, ts, bar, refit_every_bars=168, **kwargs)
    for start in (2100, 2333):
        cache = EvtTailCache(2, 168)
        for t in range(start, start + 400):
            if cache.needs_refit(int(ts[t]), bar):
                fit_ns = int(scheduled_fit_ns(int(ts[t]), 168, bar))
                cache.refit(fit_ns, r[: int(np.searchsorted(ts, fit_ns, side="right"))], **kwargs)
            np.testing.assert_array_equal(cache.es_long, es_long[t])
            np.testing.assert_array_equal(cache.es_short, es_short[t])
    long, _ = fit_tails(r[:1000], **kwargs)
    assert [t.method for t in long] == ["gpd", "gpd"] or all(t.es > 0 for t in long)


def test_evt_gate_limits_position_es() -> None:
    g = evt_gate(
        np.array([2.0, -1.0, 0.0]), np.array([0.02, 0.02, 0.02]), np.array([0.05, 0.01, 0.05]), 0.02, 0.99
    )
    # long 2 x 2 % = 4 % -> 0.5 ; short 1 x 1 % within limit ; flat -> 1
    np.testing.assert_allclose(g.scale, [0.5, 1.0, 1.0])
    assert "ES99%" in g.reason


@pytest.mark.parametrize("xi", [-0.3, 0.0, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("size", [40, 400])
def test_fast_mle_matches_scipy_genpareto_fit(xi: float, size: int) -> None:
    y = stats.genpareto.rvs(xi, scale=0.01, size=size, random_state=int(100 * xi) + size)
    fast_xi, fast_beta = gpd_mle(y)
    ref_xi, _, ref_beta = stats.genpareto.fit(y, floc=0.0)
    ll_fast = stats.genpareto.logpdf(y, fast_xi, scale=fast_beta).sum()
    ll_ref = stats.genpareto.logpdf(y, ref_xi, scale=ref_beta).sum()
    assert ll_fast >= ll_ref - 1e-6
    assert fast_xi == pytest.approx(ref_xi, abs=2e-3)
    assert fast_beta == pytest.approx(ref_beta, rel=2e-3)
