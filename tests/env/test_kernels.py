"""The compiled step/observe kernels against the NumPy execution kernels and direct array formulas.

``test_reference.py`` checks the whole simulator against the plain-loop reference episode by episode; these tests
check the compiled kernels against the vectorized NumPy accounting of :mod:`himari.env.execution` (the functions
the backtester's pre-fill marking uses) on many random states at once, including the corners the episode tests
rarely reach: wiped-out accounts, funding on both fill timings, the gross cap, unfillable and invalid rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from himari.env.execution import CostConfig, funding, mark_to_market, rebalance
from himari.env.market import EXEC_COLUMNS, MarketData
from himari.env.protocol import ACCOUNT_FIELDS, LONG, SHORT
from himari.env.sim import (
    SimConfig,
    SimState,
    SimVecEnv,
    base_position,
    observe,
    observe_pair,
    replace_rows,
    reset,
    step,
    take_rows,
)
from tests.env._synth import make_market


def _numpy_step(state: SimState, action: np.ndarray, market: MarketData, config: SimConfig) -> dict:
    """The simulator step written with the NumPy execution kernels (the pre-numba implementation)."""
    costs = config.costs
    t, t1 = state.t, state.t + 1
    if costs.fill == "next_open":
        pre, post, price = market.gap_return[t1], market.intrabar_return[t1], market.mark_open[t1]
    else:
        pre, post, price = market.log_return[t1], None, market.mark_close[t1]
    m1 = mark_to_market(state.position, state.equity, pre)
    m1_pos, m1_eq = m1.position, m1.equity
    rate = costs.funding_rate_per_bar(market.timeframe.seconds)
    fund = np.zeros_like(m1_eq)
    if rate != 0.0 and costs.fill == "next_close":
        m1_pos, m1_eq, fund = funding(m1_pos, m1_eq, rate)
    cap = config.max_position
    lo = -cap if config.allow_short else 0.0
    if config.action_kind == "discrete":
        hold = m1_pos if config.hold_mode == "keep" else np.zeros_like(m1_pos)
        if config.discrete_rebalance:
            long_t, short_t = cap, lo
        else:
            long_t = np.where(m1_pos > 0, m1_pos, cap)
            short_t = np.where(m1_pos < 0, m1_pos, lo) if lo < 0 else lo
        target = np.where(action == LONG, long_t, np.where(action == SHORT, short_t, hold))
    elif config.action_kind == "continuous":
        target = np.clip(action, lo, cap)
    else:
        target = np.clip(base_position(market, config, t) + config.delta_scale * np.tanh(action), lo, cap)
    if config.max_gross_exposure is not None:
        gross = np.abs(target).sum(axis=1, keepdims=True)
        target = target * np.minimum(1.0, config.max_gross_exposure / np.maximum(gross, 1e-12))
    valid = market.valid[t]
    target = np.where(valid, target, 0.0 if config.invalid_policy == "flat" else m1_pos)
    fill = rebalance(
        m1_pos, target, price, m1_eq, market.volatility[t], costs.fee_rate, costs.slippage_rate,
        costs.vol_slippage_coef, can_fill=market.fillable[t],
    )  # fmt: skip
    pos, eq, g2 = fill.position, fill.equity, np.zeros_like(fill.equity)
    if post is not None:
        m2 = mark_to_market(pos, eq, post)
        pos, eq, g2 = m2.position, m2.equity, m2.log_growth
        if rate != 0.0:
            pos, eq, fund = funding(pos, eq, rate)
    old_sign, new_sign = np.sign(m1_pos), np.sign(fill.position)
    entered = (new_sign != old_sign) & (new_sign != 0)
    eq_final = np.maximum(eq, 0.0)
    return {
        "position": pos,
        "equity": eq_final,
        "target": target,
        "fill_price": fill.fill_price,
        "traded": fill.turnover,
        "fee": fill.fee.sum(axis=1),
        "slippage": fill.slippage_cost.sum(axis=1),
        "funding": fund,
        "turnover": fill.turnover.sum(axis=1),
        "market_log_return": m1.log_growth + g2,
        "entry_price": np.where(entered, fill.fill_price, np.where(new_sign == 0, 0.0, state.entry_price)),
        "time_in_position": np.where(new_sign == 0, 0, np.where(entered, 1, state.time_in_position + 1)),
        "drawdown": 1.0 - eq_final / np.maximum(state.peak_equity, eq_final),
    }


def _random_state(
    market: MarketData, config: SimConfig, n: int, rng: np.random.Generator, lev: float
) -> SimState:
    s = reset(market, config, n, rng)
    a = market.num_assets
    pos = rng.normal(0.0, lev, (n, a)) * (rng.random((n, a)) < 0.8)
    entry = np.where(pos != 0, market.mark_close[s.t][:, :] * np.exp(rng.normal(0, 0.05, (n, a))), 0.0)
    equity = np.exp(rng.normal(0.0, 0.3, n))
    return s._replace(
        position=pos,
        entry_price=entry,
        time_in_position=np.where(pos != 0, rng.integers(1, 50, (n, a)), 0),
        equity=equity,
        peak_equity=equity * np.exp(np.abs(rng.normal(0.0, 0.2, n))),
    )


CASES = [
    dict(action_kind="discrete"),
    dict(action_kind="discrete", hold_mode="flat", allow_short=False),
    dict(action_kind="discrete", discrete_rebalance=True, invalid_policy="keep", max_gross_exposure=1.2),
    dict(action_kind="continuous", max_position=3.0, max_gross_exposure=2.0,
         costs=CostConfig(funding_rate_per_8h=0.001)),
    dict(action_kind="continuous", max_position=3.0,
         costs=CostConfig(fill="next_close", funding_rate_per_8h=-0.002, order_type="maker")),
    dict(action_kind="delta", costs=CostConfig(fill="next_close", vol_slippage_coef=0.5)),
]  # fmt: skip


@pytest.mark.parametrize("case", range(len(CASES)))
def test_step_kernel_matches_numpy_execution(case: int) -> None:
    market = make_market(seed=case, t_len=400, n_assets=3, messy=True, vol=0.03)
    config = SimConfig(window=4, episode_length=50, **CASES[case])
    rng = np.random.default_rng(case)
    for lev in (0.5, 40.0):  # 40x leverage on 3% bars wipes some accounts out
        state = _random_state(market, config, 256, rng, lev)
        if config.action_kind == "discrete":
            action = rng.integers(0, 3, (256, 3))
        else:
            action = rng.normal(0.0, 2.0, (256, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no divide-by-zero / invalid warnings, also for wiped accounts
            _, _, info = step(state, action, market, config)
        with np.errstate(divide="ignore", invalid="ignore"):
            ref = _numpy_step(state, action, market, config)
        new_state, _, _ = step(state, action, market, config)
        got = {
            **info,
            "entry_price": new_state.entry_price,
            "time_in_position": new_state.time_in_position,
        }
        for key, want in ref.items():
            np.testing.assert_allclose(got[key], want, rtol=1e-12, atol=1e-15, err_msg=key)


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_wiped_account(fill: str) -> None:
    """A move that takes equity to <= 0: equity and positions 0, market log return -inf, terminated, no warning."""
    market = make_market(seed=11, t_len=200, n_assets=1, vol=0.03)
    config = SimConfig(window=4, episode_length=50, costs=CostConfig(fill=fill))
    state = reset(market, config, 64, np.random.default_rng(0))
    move = market.gap_return if fill == "next_open" else market.log_return
    r = move[state.t + 1, 0]
    lev = np.where(r > 0, -2.0, 2.0) / np.maximum(np.abs(np.expm1(r)), 1e-4)  # loses 200% of equity
    state = state._replace(position=lev[:, None])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new_state, _, info = step(state, np.zeros((64, 1), dtype=np.int64), market, config)
    assert np.isneginf(info["market_log_return"]).all()
    assert (info["equity"] == 0.0).all() and (new_state.position == 0.0).all()
    assert info["terminated"].all() and not info["truncated"].any()


def test_observe_matches_direct_indexing() -> None:
    market = make_market(seed=7, t_len=300, n_assets=2, messy=True)
    rng = np.random.default_rng(7)
    for config in (
        SimConfig(window=6, episode_length=40),
        SimConfig(window=1, episode_length=100, delta_base="constant"),
    ):
        state = _random_state(market, config, 33, rng, 1.0)
        obs = observe(state, market, config)
        idx = state.t[:, None] + np.arange(1 - config.window, 1)
        np.testing.assert_array_equal(obs.features, market.features[idx])
        np.testing.assert_array_equal(obs.regime, market.regime_posterior[idx])
        held = (state.entry_price > 0) & (state.position != 0)
        mark = market.mark_close[state.t]
        unreal = np.where(
            held, np.sign(state.position) * np.log(mark / np.where(held, state.entry_price, 1.0)), 0
        )
        expected = {
            "position": state.position,
            "unrealized_pnl": unreal,
            "time_in_position": state.time_in_position / config.episode_length,
            "equity_log": np.broadcast_to(np.log(state.equity)[:, None], unreal.shape),
            "drawdown": np.broadcast_to((1 - state.equity / state.peak_equity)[:, None], unreal.shape),
            "base_position": base_position(market, config, state.t),
        }
        assert obs.account.dtype == np.float32 and obs.account.shape == (33, 2, len(ACCOUNT_FIELDS))
        for k, name in enumerate(ACCOUNT_FIELDS):
            np.testing.assert_allclose(
                obs.account[:, :, k], expected[name], rtol=1e-6, atol=1e-7, err_msg=name
            )


def test_auto_reset_final_obs_rows() -> None:
    """Episodes of different lengths end at different steps: final_obs differs from obs exactly in their rows."""
    market = make_market(seed=8, t_len=400, n_assets=1)
    config = SimConfig(window=5, episode_length=30)
    env = SimVecEnv(market, config, 6, starts=[10, 20, 30, 40, 50, 60], lengths=[3, 5, 3, 8, 5, 9])
    env.reset()
    for k in range(9):
        before = env.state
        res = env.step(np.full((6, 1), LONG))
        done = res.info["done"]
        ended = observe(step(before, np.full((6, 1), LONG), market, config)[0], market, config)
        for name, o, f, e in zip(
            ("features", "regime", "account"), res.obs, res.final_obs, ended, strict=True
        ):
            np.testing.assert_array_equal(f, e, err_msg=f"step {k}: {name}")
            np.testing.assert_array_equal(o[~done], f[~done])
        if done.any():  # restarted at their fixed starts (evaluation mode), flat, equity 1
            np.testing.assert_array_equal(env.state.t[done], np.array([10, 20, 30, 40, 50, 60])[done])
            assert (res.obs.account[done, :, 0] == 0).all() and (env.state.equity[done] == 1.0).all()
            rows = np.flatnonzero(done)
            np.testing.assert_array_equal(observe(take_rows(env.state, rows), market, config).features,
                                          res.obs.features[rows])  # fmt: skip


def test_execution_table_columns() -> None:
    market = make_market(seed=9, t_len=100, n_assets=2, messy=True)
    table = market.execution_table
    assert table.shape == (100, 2, len(EXEC_COLUMNS)) and not table.flags.writeable
    cols = dict(zip(EXEC_COLUMNS, np.moveaxis(table, -1, 0), strict=True))
    np.testing.assert_allclose(cols["gross_gap"], np.exp(market.gap_return))
    np.testing.assert_allclose(cols["gross_intrabar"], np.exp(market.intrabar_return))
    np.testing.assert_allclose(cols["gross_total"], np.exp(market.log_return))
    np.testing.assert_array_equal(cols["mark_open"], market.mark_open)
    np.testing.assert_array_equal(cols["mark_close"], market.mark_close)
    np.testing.assert_array_equal(cols["volatility"], market.volatility)
    np.testing.assert_array_equal(cols["fillable"] == 1.0, market.fillable)
    np.testing.assert_array_equal(cols["valid"] == 1.0, market.valid)
    assert market.execution_table is table  # computed once


def test_observe_pair_equals_two_observes() -> None:
    market = make_market(seed=12, t_len=300, n_assets=2, messy=True)
    config = SimConfig(window=5, episode_length=40)
    rng = np.random.default_rng(12)
    state = _random_state(market, config, 40, rng, 1.0)
    renewed = rng.random(40) < 0.3
    rows = np.flatnonzero(renewed)
    other = replace_rows(state, rows, take_rows(_random_state(market, config, 40, rng, 2.0), rows))
    first, second = observe_pair(state, other, renewed, market, config)
    for got, want in ((first, observe(state, market, config)), (second, observe(other, market, config))):
        for x, y in zip(got, want, strict=True):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first.account[renewed], second.account[renewed])


def test_kernel_disk_cache_only_where_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only install (no writable cache folder) compiles in memory instead of failing at the first call."""
    from himari.utils import jit

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(jit.os, "access", lambda *_: False)
    assert not jit._disk_cache_writable()
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere")
    assert jit._disk_cache_writable()
