"""RiskEngine / PositionManager: hypothesis properties, invalid inputs, state resume, causality, reasons."""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himari.data.bars import Bars
from himari.data.timeframe import Timeframe
from himari.risk import PositionManager, RiskConfig, RiskEngine
from himari.sizing import (
    DecisionContext,
    PolicySignal,
    SizingConfig,
    continuous_signal,
    delta_signal,
    discrete_signal,
)
from himari.sizing.kelly import bayesian_kelly
from himari.sizing.sizer import SizingResult

TF = Timeframe.parse("1h")
SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
LOW_VOL = np.array([1.0, 0.0, 0.0, 0.0])
CRISIS = np.array([0.0, 0.0, 0.0, 1.0])


def make_returns(seed: int, n_assets: int, vol: float, length: int = 150) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(4, (length, n_assets)) * vol


def sizing_for(proposal: np.ndarray) -> SizingResult:
    n = len(proposal)
    kelly = bayesian_kelly(np.full((1, n), np.nan))  # not informative: the Kelly gate passes
    z = np.zeros(n)
    return SizingResult(np.asarray(proposal, float), np.sign(proposal), z, z + 1, z + 1, z, kelly, ())


def ctx(
    returns: np.ndarray,
    posterior: np.ndarray,
    equity: float = 1.0,
    peak: float | None = 1.0,
    t: int = 0,
    **kw: object,
) -> DecisionContext:
    n = returns.shape[1]
    return DecisionContext(t, TF, returns, posterior, equity, np.zeros(n), peak, **kw)  # type: ignore[arg-type]


assets = st.integers(1, 3)
seeds = st.integers(0, 10_000)
vols = st.floats(0.001, 0.05)
weights = st.floats(-5.0, 5.0, allow_nan=False)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(assets)
    proposal = np.array([draw(weights) for _ in range(n)])
    raw = np.array([[draw(st.floats(0.0, 1.0)) for _ in range(4)] for _ in range(n)]) + 1e-3
    posterior = raw / raw.sum(1, keepdims=True)
    return proposal, posterior, make_returns(draw(seeds), n, draw(vols))


@SETTINGS
@given(scenario(), st.floats(0.5, 1.0))
def test_target_within_leverage_cap_and_proposal(
    sc: tuple[np.ndarray, np.ndarray, np.ndarray], equity: float
) -> None:
    proposal, posterior, returns = sc
    cfg = RiskConfig()
    d = RiskEngine(cfg, tuple(f"a{i}" for i in range(len(proposal)))).decide(
        sizing_for(proposal), ctx(returns, posterior, equity)
    )
    assert np.abs(d.target).sum() <= d.leverage_cap + 1e-12
    assert d.leverage_cap <= cfg.max_leverage
    assert np.all(np.abs(d.target) <= np.abs(proposal) + 1e-12)
    assert np.all(d.target * proposal >= 0)  # never flips the sign
    assert np.all((d.scale >= 0) & (d.scale <= 1))


CORRUPTIONS = (
    "posterior_nan",
    "posterior_sum",
    "stale",
    "old_data",
    "equity_nan",
    "equity_zero",
    "gap",
    "history",
)


@SETTINGS
@given(scenario(), st.sampled_from(CORRUPTIONS))
def test_invalid_inputs_give_flat(sc: tuple[np.ndarray, np.ndarray, np.ndarray], corruption: str) -> None:
    proposal, posterior, returns = sc
    posterior, returns = posterior.copy(), returns.copy()
    kw: dict[str, object] = {}
    equity = 1.0
    if corruption == "posterior_nan":
        posterior[:, 0] = np.nan
    elif corruption == "posterior_sum":
        posterior *= 1.5
    elif corruption == "stale":
        kw["is_stale"] = True
    elif corruption == "old_data":
        kw["data_age_bars"] = 2.0
    elif corruption == "equity_nan":
        equity = float("nan")
    elif corruption == "equity_zero":
        equity = 0.0
    elif corruption == "gap":
        returns[-1, :] = np.nan
    elif corruption == "history":
        returns[:-10, :] = np.nan
    engine = RiskEngine(RiskConfig(), tuple(f"a{i}" for i in range(len(proposal))))
    d = engine.decide(sizing_for(proposal), ctx(returns, posterior, equity, **kw))
    assert np.all(d.target == 0.0)
    assert d.gates[0].name == "validity" and d.gates[0].reason != "inputs valid"
    if np.any(proposal):
        assert "validity" in d.binding


@SETTINGS
@given(scenario(), st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_monotone_non_increasing_in_drawdown(
    sc: tuple[np.ndarray, np.ndarray, np.ndarray], dd1: float, dd2: float
) -> None:
    proposal, posterior, returns = sc
    lo, hi = sorted((dd1, dd2))
    names = tuple(f"a{i}" for i in range(len(proposal)))
    small = RiskEngine(RiskConfig(), names).decide(
        sizing_for(proposal), ctx(returns, posterior, 1.0 - lo, 1.0)
    )
    large = RiskEngine(RiskConfig(), names).decide(
        sizing_for(proposal), ctx(returns, posterior, 1.0 - hi, 1.0)
    )
    assert np.all(np.abs(large.target) <= np.abs(small.target) + 1e-12)


@SETTINGS
@given(assets, seeds, vols, st.sampled_from(("discrete", "continuous", "delta")), st.data())
def test_never_larger_in_crisis_than_low_vol(
    n: int, seed: int, vol: float, kind: str, data: st.DataObject
) -> None:
    returns = make_returns(seed, n, vol)
    if kind == "discrete":
        signal = discrete_signal(np.array([data.draw(st.integers(0, 2)) for _ in range(n)]))
    elif kind == "continuous":
        signal = continuous_signal(np.array([data.draw(weights) for _ in range(n)]))
    else:
        signal = delta_signal(np.array([data.draw(weights) for _ in range(n)]))
    names = tuple(f"a{i}" for i in range(n))
    low = PositionManager(SizingConfig(), RiskConfig(), names).decide(
        signal, ctx(returns, np.tile(LOW_VOL, (n, 1)))
    )
    crisis = PositionManager(SizingConfig(), RiskConfig(), names).decide(
        signal, ctx(returns, np.tile(CRISIS, (n, 1)))
    )
    assert np.all(np.abs(crisis.target) <= np.abs(low.target) + 1e-12)
    assert crisis.leverage_cap <= low.leverage_cap


def test_hedged_book_rechecked_after_per_asset_cuts() -> None:
    rng = np.random.default_rng(0)
    common = rng.normal(0, 0.01, (150, 1))
    returns = np.hstack([common, common + rng.normal(0, 0.0005, (150, 1))])
    engine = RiskEngine(RiskConfig.parse(evt_es_limit_daily=0.02), ("A", "B"))
    d = engine.decide(sizing_for(np.array([1.0, -1.0])), ctx(returns, np.tile(LOW_VOL, (2, 1))))
    cov = np.cov(returns[-100:].T)
    vol = np.sqrt(d.target @ cov @ d.target * TF.periods_per_year)
    assert vol <= RiskConfig().vol_cap_annual * max(1.0, d.budget) + 1e-9


class Loop(NamedTuple):
    equity: float
    peak: float
    position: np.ndarray
    strategy_returns: tuple[float, ...]


def _simulate(
    bars: Bars,
    manager: PositionManager,
    start: int,
    stop: int,
    signals: np.ndarray,
    returns: np.ndarray,
    loop: Loop | None = None,
) -> tuple[list, Loop]:
    """A minimal trading loop: decide at t, earn the position on bar t+1's return (the backtester's timing)."""
    equity, peak, position, strat = loop or Loop(1.0, 1.0, np.zeros(1), ())
    strat_list = list(strat)
    out = []
    for t in range(start, stop):
        c = DecisionContext(
            int(bars.timestamps_ns[t]),
            bars.timeframe,
            returns[max(0, t - 2499) : t + 1, None],
            np.array([[0.5, 0.3, 0.15, 0.05]]),
            equity,
            position,
            peak,
            strategy_returns=np.array(strat_list[-720:]),
        )
        d = manager.decide(PolicySignal("discrete", signals[t : t + 1]), c)
        out.append(d)
        if t + 1 < len(returns) and np.isfinite(returns[t + 1]):
            pnl = float(d.target[0] * np.expm1(returns[t + 1]))
            equity *= 1 + pnl
            strat_list.append(float(np.log1p(pnl)))
        peak = max(peak, equity)
        position = d.target
    return out, Loop(equity, peak, position, tuple(strat_list))


@pytest.fixture(scope="module")
def btc_slice(btc_bars: Bars) -> Bars:
    return btc_bars.between("2021-03-01", "2021-07-15")


def test_resume_from_state_and_causality_on_real_data(btc_slice: Bars) -> None:
    returns = btc_slice.log_returns()
    signals = np.random.default_rng(7).integers(-1, 2, len(returns)).astype(float)
    sizing = SizingConfig(kelly_min_outcomes=30, kelly_window_bars=200)
    risk = RiskConfig.parse(evt_refit_every_bars=100)
    start, mid, stop = 2500, 2800, 3000

    def manager() -> PositionManager:
        return PositionManager(sizing, risk, ("BTCUSDT",))

    full, _ = _simulate(btc_slice, manager(), start, stop, signals, returns)
    assert any(np.any(d.target != 0) for d in full)
    assert {b for d in full for b in d.binding} - {"none"}  # some gate did cut
    # data truncated after bar mid (bars <= t only at every decision) gives identical decisions: no look-ahead
    cut, _ = _simulate(btc_slice, manager(), start, mid, signals[: mid + 1], returns[: mid + 1])
    for a, b in zip(full[: mid - start], cut, strict=True):
        np.testing.assert_array_equal(a.target, b.target)
    # stop at mid, persist the state as JSON, resume in a fresh manager: identical decisions after mid
    first = manager()
    _, loop = _simulate(btc_slice, first, start, mid, signals, returns)
    resumed_manager = manager()
    resumed_manager.load_state_dict(json.loads(json.dumps(first.state_dict(), allow_nan=False)))
    resumed, _ = _simulate(btc_slice, resumed_manager, mid, stop, signals, returns, loop)
    for a, b in zip(full[mid - start :], resumed, strict=True):
        np.testing.assert_array_equal(a.target, b.target)
    record = json.dumps(full[-1].to_dict(), allow_nan=False)
    assert "gates" in record and full[-1].reasons()


def test_state_rejects_other_config_and_symbols() -> None:
    m = PositionManager(symbols=("A",))
    with pytest.raises(Exception, match="symbols"):
        PositionManager(symbols=("B",)).load_state_dict(m.state_dict())
    with pytest.raises(Exception, match="RiskConfig"):
        PositionManager(
            risk=RiskConfig.parse(max_leverage=2.0, leverage_by_regime=(2, 2, 1, 0.5)), symbols=("A",)
        ).load_state_dict(m.state_dict())


def test_from_dicts_and_timestamp_going_back() -> None:
    m = PositionManager.from_dicts(
        {"target_vol_annual": 0.3}, {"max_leverage": 2.0, "leverage_by_regime": [2, 2, 1, 0.5]}, ("A",)
    )
    assert m.sizing_config.target_vol_annual == 0.3 and m.risk_config.max_leverage == 2.0
    r = make_returns(0, 1, 0.01)
    m.decide(discrete_signal(np.array([1])), ctx(r, LOW_VOL[None], t=10))
    d = m.decide(discrete_signal(np.array([1])), ctx(r, LOW_VOL[None], t=5))
    assert d.target[0] == 0 and "before the last decision" in d.gates[0].reason


def test_multi_asset_through_a_listing_date() -> None:
    """BTC/ETH/SOL on the union of timestamps around SOL's listing (2020-08-11): SOL is flat, with the reason,
    until it has enough history; the others trade; the leverage cap holds throughout."""
    from himari.risk.bench import aligned_returns

    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    ts, returns, tf = aligned_returns(symbols, "2020-05-01", "2020-09-01")
    listing = int(np.flatnonzero(np.isfinite(returns[:, 2]))[0])
    manager = PositionManager(
        SizingConfig(), RiskConfig.parse(kelly_cap_enabled=False), symbols
    )  # signal has no edge
    posterior = np.tile([0.4, 0.3, 0.2, 0.1], (3, 1))
    sol_first_trade = None
    reasons_before = set()
    for t in range(listing - 30, listing + 120):
        ctx = DecisionContext(
            int(ts[t]), tf, returns[max(0, t - 1999) : t + 1], posterior, 1.0, np.zeros(3), 1.0
        )
        d = manager.decide(discrete_signal(np.array([1, 2, 1])), ctx)
        assert np.abs(d.target).sum() <= d.leverage_cap + 1e-12
        if t - listing + 1 < RiskConfig().min_history_bars:  # finite SOL returns so far
            assert d.target[2] == 0.0
            reasons_before.add(d.gates[0].reason)
        elif sol_first_trade is None and d.target[2] != 0:
            sol_first_trade = t
        if np.isfinite(returns[t]).all() or t < listing:
            assert d.target[0] > 0 and d.target[1] < 0  # BTC long, ETH short keep trading
    assert sol_first_trade is not None
    assert any("SOLUSDT" in r for r in reasons_before)


@pytest.mark.parametrize("halflife_days", [1.0, None])
def test_drawdown_brake_releases_with_decaying_peak(halflife_days: float | None) -> None:
    # equity drops 12 % and then stays flat (the brake held the strategy flat): with a 1-day half-life the reference
    # peak is 0.88 + 0.12 · 2^(-t/24), so dd < 10 % after 7.1 bars, < 6 % after 26.3, < 3 % after 51.4
    cfg = RiskConfig.parse(drawdown_peak_halflife_days=halflife_days)
    engine = RiskEngine(cfg, ("A",))
    returns = make_returns(0, 1, 0.005)
    bar = TF.nanoseconds
    engine.decide(sizing_for(np.array([0.5])), ctx(returns, LOW_VOL[None], equity=1.0, peak=1.0, t=0))
    scales = {}
    for k in range(1, 61):
        d = engine.decide(
            sizing_for(np.array([0.5])), ctx(returns, LOW_VOL[None], equity=0.88, peak=1.0, t=k * bar)
        )
        scales[k - 1] = next(g for g in d.gates if g.name == "drawdown_brake").scale[0]
    expected = [0.05, 0.4, 0.7, 1.0] if halflife_days else [0.05] * 4
    assert [scales[t] for t in (5, 10, 30, 55)] == pytest.approx(expected)
    if halflife_days:  # and the brake peak is part of the resumable state
        clone = RiskEngine(cfg, ("A",))
        clone.load_state_dict(json.loads(json.dumps(engine.state_dict())))
        assert clone.brake_peak == engine.brake_peak
