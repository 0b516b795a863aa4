"""The simulator's timing contract, episode mechanics, evaluation mode, action semantics and real data."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.bars import Bars
from himari.env.execution import CostConfig
from himari.env.market import MarketData
from himari.env.protocol import ACCOUNT_FIELDS, HOLD, LONG, SHORT, VecEnv
from himari.env.rewards import RewardConfig
from himari.env.sim import SimConfig, SimVecEnv, observe, reset, step
from himari.errors import ConfigError, DataError
from tests.env._synth import HOUR_NS, make_market, random_prices

FREE = CostConfig(taker_fee_bps=0.0, slippage_bps=0.0, vol_slippage_coef=0.0)


def _market_with_return_feature(seed: int, t_len: int = 3000, shift: int = 0) -> MarketData:
    """iid returns; feature 0 at bar t = the bar's own close-to-close log return shifted by ``shift`` bars
    (shift=0: observed return; shift=-1: the *next* bar's return, a deliberate leak used as a positive control)."""
    rng = np.random.default_rng(seed)
    o, h, lo, c = random_prices(rng, t_len, 1, vol=0.01)
    r = np.zeros(t_len)
    r[1:] = np.log(c[1:, 0] / c[:-1, 0])
    feat = np.roll(r, shift)[:, None, None]
    if shift < 0:
        feat[shift:] = 0.0
    ts = np.arange(t_len, dtype=np.int64) * HOUR_NS
    return MarketData.from_arrays(ts, o, h, lo, c, features=feat.astype(np.float32))


def _sign_policy_mean_reward(market: MarketData, fill: str) -> tuple[float, float]:
    config = SimConfig(action_kind="continuous", window=2, episode_length=200, costs=FREE.replace(fill=fill))
    env = SimVecEnv(market, config, 64, seed=0)
    obs = env.reset()
    rewards = []
    for _ in range(200):
        action = np.sign(obs.features[:, -1, :, 0])  # +-1 from the latest bar's feature
        res = env.step(action)
        rewards.append(res.info["reward_pnl"])
        obs = res.obs
    r = np.concatenate(rewards)
    return float(r.mean()), float(r.std() / np.sqrt(r.size))


@pytest.mark.parametrize("fill", ["next_open", "next_close"])
def test_policy_is_never_paid_on_an_observed_return(fill: str) -> None:
    """A feature equal to the current bar's return must not predict the reward; the next bar's return must."""
    seen_mean, seen_se = _sign_policy_mean_reward(_market_with_return_feature(0, shift=0), fill)
    assert abs(seen_mean) < 4 * seen_se  # no edge from what was observed
    leak_mean, _ = _sign_policy_mean_reward(_market_with_return_feature(0, shift=-1), fill)
    if fill == "next_open":
        # positive control: knowing bar t+1's return earns ~E|r| ~ 0.8 sigma per step — the reward is paid on t+1
        assert leak_mean > 0.005 and leak_mean > 20 * seen_se
    else:
        # a close fill at t+1 starts earning after bar t+1: even the next bar's return is no longer an edge
        assert abs(leak_mean) < 4 * seen_se


def test_future_data_never_reaches_observation_or_earlier_rewards() -> None:
    """Changing every bar after k changes no observation for decisions <= k and no reward paid on bars <= k."""
    base = make_market(seed=5, t_len=200, n_assets=2)
    k = 120
    rng = np.random.default_rng(1)
    o, h, lo, c = (x.copy() for x in (base.open, base.high, base.low, base.close))
    for arr in (o, h, lo, c):
        arr[k + 1 :] *= 1.5
    feats = base.features.copy()
    feats[k + 1 :] = rng.normal(size=feats[k + 1 :].shape)
    changed = MarketData.from_arrays(
        base.timestamps_ns, o, h, lo, c, features=feats, regime_posterior=base.regime_posterior
    )
    config = SimConfig(window=6, episode_length=100, reward=RewardConfig(kind="dsr", warmup_steps=2))
    s_a = reset(base, config, 3, np.random.default_rng(0), starts=np.array([60, 70, 80]))
    s_b = reset(changed, config, 3, np.random.default_rng(0), starts=np.array([60, 70, 80]))
    actions = rng.integers(0, 3, size=(100, 3, 2))
    for i in range(100):
        decision_bar = s_a.t.copy()
        ob_a, ob_b = observe(s_a, base, config), observe(s_b, changed, config)
        same_obs = decision_bar <= k
        for x, y in zip(ob_a, ob_b, strict=True):
            np.testing.assert_array_equal(x[same_obs], y[same_obs])
        s_a, terms_a, _ = step(s_a, actions[i], base, config)
        s_b, terms_b, _ = step(s_b, actions[i], changed, config)
        paid_before_change = decision_bar + 1 <= k
        np.testing.assert_array_equal(
            terms_a["reward"][paid_before_change], terms_b["reward"][paid_before_change]
        )


def test_truncation_final_obs_and_auto_reset() -> None:
    market = make_market(seed=1, t_len=300)
    config = SimConfig(window=8, episode_length=20)
    env: VecEnv = SimVecEnv(market, config, 16, seed=3, start_index=50, end_index=250)
    obs = env.reset()
    assert obs.features.shape == (16, 8, 1, 3) and obs.account.shape == (16, 1, len(ACCOUNT_FIELDS))
    assert env.n_account == len(ACCOUNT_FIELDS) and env.n_regimes == 4 and env.n_features == 3
    sim = env  # type: ignore[assignment]
    starts = sim.state.start.copy()
    assert ((starts >= 50) & (starts < 250 - 20)).all()
    for i in range(20):
        res = env.step(np.full((16, 1), LONG))
        if i < 19:
            assert not (res.truncated | res.terminated).any()
            np.testing.assert_array_equal(res.obs.features, res.final_obs.features)
    assert res.truncated.all() and not res.terminated.any()
    # final_obs is the observation at bar start + 20; obs is the first observation of the new episode
    np.testing.assert_array_equal(res.final_obs.features[:, -1], market.features[starts + 20])
    np.testing.assert_array_equal(res.obs.features[:, -1], market.features[sim.state.start])
    assert (
        (sim.state.equity == 1.0).all() and (sim.state.position == 0).all() and (sim.state.steps == 0).all()
    )
    assert (res.final_obs.account[:, 0, 0] > 0).all() and (res.obs.account[:, 0, 0] == 0).all()


def test_ruin_is_termination() -> None:
    t_len = 60
    close = np.full(t_len, 100.0)
    close[40:] = 70.0  # -30% at bar 40
    ts = np.arange(t_len, dtype=np.int64) * HOUR_NS
    market = MarketData.from_arrays(ts, close, close, close, close)
    config = SimConfig(
        action_kind="continuous", max_position=3.0, window=2, episode_length=30, ruin_equity=0.5, costs=FREE
    )
    env = SimVecEnv(market, config, 1, starts=[20])
    env.reset()
    steps = 0
    while True:
        res = env.step(np.array([[3.0]]))
        steps += 1
        if res.terminated[0] or res.truncated[0]:
            break
    assert steps == 20 and res.terminated[0] and not res.truncated[0]
    assert res.info["equity"][0] == pytest.approx(0.1)  # 1 + 3 * (-0.3)
    assert env.state.equity[0] == 1.0  # auto-reset


def test_evaluation_mode_covers_the_range_once_and_buy_and_hold_is_exact() -> None:
    market = make_market(seed=2, t_len=300)
    config = SimConfig(window=10, episode_length=5, costs=FREE)
    env = SimVecEnv.for_evaluation(market, config, 40, 280, num_envs=1)
    env.reset()
    assert env.state.start[0] == 40 and env.state.length[0] == 239
    steps = 0
    while True:
        res = env.step(np.array([[LONG]]))
        steps += 1
        if res.truncated[0]:
            break
    assert steps == 239
    assert res.info["equity"][0] == pytest.approx(market.close[279, 0] / market.open[41, 0], rel=1e-12)

    chunks = SimVecEnv.for_evaluation(market, config, 40, 280, num_envs=4)
    chunks.reset()
    ends = chunks.state.start + chunks.state.length
    np.testing.assert_array_equal(chunks.state.start[1:], ends[:-1])
    assert chunks.state.start[0] == 40 and ends[-1] == 279
    again = SimVecEnv.for_evaluation(market, config, 40, 280, num_envs=4)
    again.reset(seed=123)  # starts do not depend on the seed
    np.testing.assert_array_equal(again.state.start, chunks.state.start)


def test_same_seed_same_run_different_seed_different_starts() -> None:
    market = make_market(seed=3, t_len=400, n_assets=2)
    config = SimConfig(window=4, episode_length=15)

    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = SimVecEnv(market, config, 8, seed=seed)
        env.reset()
        rng = np.random.default_rng(0)
        rewards = [env.step(rng.integers(0, 3, size=(8, 2))).reward for _ in range(40)]
        return np.array(rewards), env.state.start.copy()

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_discrete_hold_modes_and_no_short() -> None:
    market = make_market(seed=4, t_len=100)
    for hold_mode, expected in (("keep", 1.0), ("flat", 0.0)):
        config = SimConfig(window=2, episode_length=10, hold_mode=hold_mode, costs=FREE)
        state = reset(market, config, 1, np.random.default_rng(0), starts=np.array([10]))
        state, _, _ = step(state, np.array([[LONG]]), market, config)
        state, _, info = step(state, np.array([[HOLD]]), market, config)
        assert np.sign(info["target"][0, 0]) == expected
    config = SimConfig(window=2, episode_length=10, allow_short=False)
    state = reset(market, config, 1, np.random.default_rng(0), starts=np.array([10]))
    state, _, info = step(state, np.array([[SHORT]]), market, config)
    assert info["target"][0, 0] == 0.0


def test_delta_action_is_bounded_around_vol_target_base() -> None:
    market = make_market(seed=6, t_len=100)
    config = SimConfig(
        action_kind="delta", window=2, episode_length=10, target_annual_vol=0.4, max_position=3.0
    )
    state = reset(market, config, 3, np.random.default_rng(0), starts=np.array([20, 20, 20]))
    _, _, info = step(state, np.array([[0.0], [100.0], [-100.0]]), market, config)
    base = min(0.4 / (market.volatility[20, 0] * np.sqrt(market.timeframe.periods_per_year)), 3.0)
    np.testing.assert_allclose(info["target"][:, 0], [base, base + 0.3, base - 0.3])
    acc = observe(state, market, config).account
    assert acc[0, 0, ACCOUNT_FIELDS.index("base_position")] == pytest.approx(base, rel=1e-6)


def test_bad_actions_and_windows_raise() -> None:
    market = make_market(seed=7, t_len=100, n_assets=2)
    config = SimConfig(window=4, episode_length=10)
    env = SimVecEnv(market, config, 2)
    env.reset()
    with pytest.raises(DataError, match="shape"):
        env.step(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(DataError, match="0, 1, 2"):
        env.step(np.full((2, 2), 5))
    with pytest.raises(DataError, match="NaN"):
        SimVecEnv(market, config.replace(action_kind="continuous"), 2).step(np.full((2, 2), np.nan))
    with pytest.raises(ConfigError, match="too short"):
        SimVecEnv(market, config.replace(episode_length=200), 2)
    with pytest.raises(ConfigError, match="episode_length"):
        SimConfig.parse({"episode_length": 0})


def test_multi_asset_late_listing_keeps_unlisted_asset_flat() -> None:
    market = make_market(seed=8, t_len=300, n_assets=3, messy=True)
    config = SimConfig(window=4, episode_length=60, max_gross_exposure=2.0)
    state = reset(market, config, 4, np.random.default_rng(0), starts=np.array([5, 10, 20, 30]))
    for _ in range(60):
        state, _, info = step(state, np.full((4, 3), LONG), market, config)
        unlisted = ~market.present[state.t, 1]
        assert (info["position"][unlisted, 1] == 0).all()
        assert (np.abs(info["target"]).sum(axis=1) <= 2.0 + 1e-12).all()


def test_real_btc_buy_and_hold_with_costs(btc_recent: Bars) -> None:
    """Long from the first fill to the end of 2022 on real bars, default costs: equity = P_end / P_entry - cost."""
    market = MarketData.from_frames([btc_recent.between("2022-01-01", "2023-01-01")])
    config = SimConfig(window=24, invalid_policy="keep", ruin_equity=0.1)
    env = SimVecEnv.for_evaluation(market, config, 0, market.num_bars)
    env.reset()
    lo = int(env.state.start[0]) + 1  # bar 23's features are still warming up: the first order is at bar 24
    assert not market.valid[lo - 1, 0] and market.valid[lo, 0]
    while True:
        res = env.step(np.array([[LONG]]))
        if res.truncated[0] or res.terminated[0]:
            break
    c = config.costs
    slip = c.slippage_rate + c.vol_slippage_coef * market.volatility[lo, 0]
    cost = slip + c.fee_rate * (1 + slip)
    expected = market.close[-1, 0] / market.open[lo + 1, 0] - cost
    assert res.info["equity"][0] == pytest.approx(expected, rel=1e-10)
    assert 0.3 < expected < 0.45  # BTC lost ~65% in 2022


def test_evaluate_stitches_chunks_in_time_order() -> None:
    from himari.env.evaluate import evaluate

    market = make_market(seed=9, t_len=300, n_assets=1)
    config = SimConfig(window=6, episode_length=10, costs=FREE)
    calls: list[np.ndarray] = []

    def always_long(obs: object, episode_start: np.ndarray) -> np.ndarray:
        calls.append(episode_start.copy())
        return np.full((episode_start.shape[0], 1), LONG)

    one = evaluate(always_long, market, config, 50, 290, num_envs=1)
    assert calls[0].all() and not calls[1].any()
    np.testing.assert_array_equal(one.bars, np.arange(51, 290))
    close, open_ = market.close[:, 0], market.open[:, 0]
    assert one.total_log_return == pytest.approx(np.log(close[289] / open_[51]), rel=1e-10)

    four = evaluate(always_long, market, config, 50, 290, num_envs=4)
    np.testing.assert_array_equal(four.bars, np.arange(51, 290))
    env = SimVecEnv.for_evaluation(market, config, 50, 290, num_envs=4)
    env.reset()
    starts, ends = env.state.start, env.state.start + env.state.length
    expected = sum(np.log(close[e] / open_[s + 1]) for s, e in zip(starts, ends, strict=True))
    assert four.total_log_return == pytest.approx(expected, rel=1e-10)
    assert not four.terminated and (four.position > 0).all()


def test_reset_without_seed_continues_the_stream() -> None:
    market = make_market(seed=10, t_len=500)
    env = SimVecEnv(market, SimConfig(window=4, episode_length=20), 32, seed=4)
    env.reset()
    first = env.state.start.copy()
    env.reset()
    second = env.state.start.copy()
    env.reset(seed=4)
    np.testing.assert_array_equal(env.state.start, first)
    assert not np.array_equal(first, second)


def test_no_fill_across_a_gap_and_the_jump_is_paid_on_resumption() -> None:
    t_len = 40
    ts = np.arange(t_len, dtype=np.int64) * HOUR_NS
    ts[20:] += 3 * HOUR_NS  # bars 20.. come 3 hours late: a gap between bar 19 and bar 20
    close = np.full(t_len, 100.0)
    close[20:] = 110.0
    market = MarketData.from_arrays(ts, close, close, close, close)
    config = SimConfig(window=2, episode_length=10, costs=FREE)
    state = reset(market, config, 1, np.random.default_rng(0), starts=np.array([18]))
    state, _, info = step(state, np.array([[LONG]]), market, config)  # decided at 18, filled at open 19
    assert info["position"][0, 0] == pytest.approx(1.0)
    state, _, info = step(state, np.array([[SHORT]]), market, config)  # decided at 19: bar 20 is after a gap
    assert info["traded"][0, 0] == 0.0 and info["position"][0, 0] == pytest.approx(1.0)  # no fill, kept long
    assert info["equity"][0] == pytest.approx(1.1)  # the jump across the gap is paid to the position held
    state, _, info = step(state, np.array([[SHORT]]), market, config)  # decided at 20, fills at 21
    assert info["position"][0, 0] == pytest.approx(-1.0)


def test_account_fields_have_the_same_scale_in_training_and_evaluation() -> None:
    market = make_market(seed=12, t_len=400)
    config = SimConfig(window=4, episode_length=50, costs=FREE)
    train = SimVecEnv(market, config, 1, starts=[100])
    evaluation = SimVecEnv.for_evaluation(market, config, 100, 390)  # one long episode from bar 100
    train.reset(), evaluation.reset()
    assert evaluation.state.start[0] == 100 and evaluation.state.length[0] > 50
    k = ACCOUNT_FIELDS.index("time_in_position")
    for _ in range(10):
        a = train.step(np.array([[LONG]])).obs.account
        b = evaluation.step(np.array([[LONG]])).obs.account
        np.testing.assert_array_equal(a, b)
    assert a[0, 0, k] == pytest.approx(10 / 50)
    unreal = ACCOUNT_FIELDS.index("unrealized_pnl")
    assert a[0, 0, unreal] == pytest.approx(np.log(market.close[110, 0] / market.open[101, 0]), rel=1e-5)
