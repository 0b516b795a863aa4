"""Labels, purging/embargo, supervised splits and offline trajectories (himari/agents/offline/datasets.py)."""

from __future__ import annotations

import numpy as np
import pytest

from himari.agents.offline.datasets import (
    LabelConfig,
    build_supervised,
    collect_trajectories,
    discounted_returns_to_go,
    forward_labels,
    purge_embargo,
    purged_kfold,
    window_valid,
)
from himari.agents.rules import RuleConfig, RulePolicy
from himari.env.protocol import ACCOUNT_FIELDS, HOLD, LONG, SHORT
from himari.errors import ConfigError, LeakageError


def test_forward_labels_hand_example() -> None:
    # decision at t fills at open[t+1]; label = sign of log(close[t+h] / open[t+1]) beyond the threshold
    open_ = np.array([100.0, 100.0, 110.0, 90.0, 100.0, 100.0])
    close = np.array([100.0, 105.0, 100.0, 100.0, 100.0, 100.0])
    seg = np.zeros(6, np.int64)
    labels, fwd, valid = forward_labels(open_, close, seg, horizon=1, threshold=0.01)
    assert valid.tolist() == [True, True, True, True, True, False]
    np.testing.assert_allclose(fwd[:5], np.log([105 / 100, 100 / 110, 100 / 90, 100 / 100, 100 / 100]))
    assert labels.tolist() == [LONG, SHORT, LONG, HOLD, HOLD, HOLD]


def test_labels_never_span_a_gap_or_the_end() -> None:
    n = 20
    close = np.linspace(100, 120, n)
    seg = np.zeros(n, np.int64)
    seg[10:] = 1  # a gap before bar 10
    _, fwd, valid = forward_labels(close, close, seg, horizon=3, threshold=0.0)
    assert not valid[7:10].any() and valid[:7].all()  # t=7..9 would need bars across the gap
    assert valid[10:17].all() and not valid[17:].any()  # the last 3 bars have no future
    assert np.isnan(fwd[~valid]).all()


def test_label_is_strictly_forward_and_inputs_strictly_backward() -> None:
    """Changing bars after t+h never changes label t; changing bars after t never changes the inputs of sample t."""
    rng = np.random.default_rng(0)
    n, h = 300, 6
    close = np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    seg = np.zeros(n, np.int64)
    labels, _, _ = forward_labels(open_, close, seg, h, 0.002)
    t = 150
    close2, open2 = close.copy(), open_.copy()
    close2[t + h + 1 :] *= 3.0
    open2[t + h + 1 :] *= 3.0
    labels2, _, _ = forward_labels(open2, close2, seg, h, 0.002)
    assert labels2[t] == labels[t]
    cfg = LabelConfig(horizon_bars=h, window=5, embargo_bars=0)
    feats = rng.normal(size=(n, 3)).astype(np.float32)
    reg = np.full((n, 4), 0.25, np.float32)
    ts = np.arange(n, dtype=np.int64) * 3_600_000_000_000
    data = build_supervised(feats, reg, np.ones(n, bool), ts, open_, close, seg, cfg, [0, ts[200], ts[-1] + 1],
                            ("train", "test"))
    feats2 = feats.copy()
    feats2[t + 1 :] += 100.0
    data2 = build_supervised(feats2, reg, np.ones(n, bool), ts, open_, close, seg, cfg, [0, ts[200], ts[-1] + 1],
                             ("train", "test"))
    np.testing.assert_array_equal(data.windows(np.array([t])), data2.windows(np.array([t])))
    np.testing.assert_array_equal(data.windows(np.array([t]))[0, -1, :3], feats[t])


def test_threshold_comes_from_costs() -> None:
    cfg = LabelConfig(fee_bps=10.0, slippage_bps=5.0)
    assert cfg.threshold == pytest.approx(np.log1p(2 * 15e-4))
    assert LabelConfig(fee_bps=10.0, slippage_bps=5.0, threshold_mult=2.0).threshold == pytest.approx(2 * cfg.threshold)


def test_purge_and_embargo() -> None:
    h = 5
    label_end = np.arange(100) + h
    train = purge_embargo(np.arange(100), label_end, [(40, 60)], embargo_bars=7)
    for i in train:  # no label interval [i, i+h] touches the held-out block, none in the embargo after it
        assert label_end[i] < 40 or i >= 60
        assert not 60 <= i < 67
    assert set(range(35)) <= set(train.tolist()) and 35 not in train  # 35 + 5 = 40 overlaps: purged
    assert 67 in train and 66 not in train


def test_purged_kfold_covers_everything_without_leakage() -> None:
    label_end = np.arange(50) + 3
    seen = []
    for train, test in purged_kfold(50, label_end, 5, embargo_bars=2):
        seen.extend(test.tolist())
        lo, hi = test[0], test[-1] + 1
        assert not np.any((train < hi) & (label_end[train] >= lo))
        assert not np.any((train >= hi) & (train < hi + 2))
    assert sorted(seen) == list(range(50))
    with pytest.raises(ConfigError):
        next(purged_kfold(5, label_end[:5], 1, 0))


def test_window_valid() -> None:
    valid = np.array([1, 1, 1, 0, 1, 1, 1, 1], bool)
    assert window_valid(valid, 3).tolist() == [False, False, True, False, False, False, True, True]


def test_build_supervised_splits_are_purged_and_embargoed() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    close = np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = np.arange(n, dtype=np.int64) * 3_600_000_000_000
    cfg = LabelConfig(horizon_bars=10, window=4, embargo_bars=5)
    data = build_supervised(rng.normal(size=(n, 2)).astype(np.float32), np.full((n, 4), 0.25, np.float32),
                            np.ones(n, bool), ts, close, close, np.zeros(n, np.int64), cfg,
                            [ts[0], ts[600], ts[800], ts[-1] + 1])
    train, val, test = data.splits["train"], data.splits["validation"], data.splits["test"]
    assert data.label_end[train].max() < 600 and data.label_end[val].max() < 800
    assert val.min() >= 605 and test.min() >= 805  # embargo after the earlier block
    assert train.min() >= 3  # full input window
    assert len(np.intersect1d(train, val)) == 0
    with pytest.raises(LeakageError):
        build_supervised(rng.normal(size=(n, 2)).astype(np.float32), np.full((n, 4), 0.25, np.float32),
                         np.ones(n, bool), ts, close, close, np.zeros(n, np.int64), cfg, [ts[0], ts[800], ts[600], ts[-1]])


def test_discounted_returns_to_go() -> None:
    r = np.array([[1.0], [2.0], [3.0], [4.0]])
    done = np.array([[0], [1], [0], [0]], dtype=float)
    g = discounted_returns_to_go(r, done, 0.5)
    np.testing.assert_allclose(g[:, 0], [1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4])


def test_collect_trajectories_in_the_simulator(small_env) -> None:
    behaviours = [RulePolicy(RuleConfig(rule="ma_crossover", fast=2, slow=8)), RulePolicy(RuleConfig(rule="random"))]
    data = collect_trajectories(small_env, behaviours, n_steps=150, seed=5, epsilon=0.2, gamma=0.99)
    t, n = data.actions.shape
    assert (t, n) == (150, 6)
    assert data.states.shape == (150, 6, small_env.n_features + 4 + len(ACCOUNT_FIELDS))
    assert data.behaviour == ("rule:ma_crossover", "rule:random") * 3
    done = data.terminated | data.truncated
    assert done.any() and done[-1].all()  # 64-step episodes end; the collection's end is a truncation
    np.testing.assert_allclose(data.returns_to_go, discounted_returns_to_go(data.rewards, done, 0.99), rtol=1e-6)
    # the stored next state of a non-final step is the following state of the same stream
    mid = ~done[:-1]
    np.testing.assert_allclose(data.next_states[:-1][mid], data.states[1:][mid], rtol=1e-6)
    # the reward is the change of equity_log in the account (net of costs): episode sums equal final equity_log
    eq = ACCOUNT_FIELDS.index("equity_log") - len(ACCOUNT_FIELDS)
    first_done = np.argmax(done[:, 0])
    assert data.rewards[: first_done + 1, 0].sum() == pytest.approx(data.next_states[first_done, 0, eq], abs=1e-5)
    assert set(np.unique(data.actions)) <= {0, 1, 2}
    again = collect_trajectories(small_env, [RulePolicy(RuleConfig(rule="ma_crossover", fast=2, slow=8)),
                                             RulePolicy(RuleConfig(rule="random"))], 150, seed=5, epsilon=0.2)
    np.testing.assert_array_equal(again.actions, data.actions)  # seeded: reproducible


def test_collect_rejects_continuous_env(small_market) -> None:
    from himari.env.sim import SimConfig, SimVecEnv

    env = SimVecEnv(small_market, SimConfig(window=8, episode_length=32, action_kind="continuous"), 2)
    with pytest.raises(ConfigError):
        collect_trajectories(env, [RulePolicy(RuleConfig(rule="random"))], 10, 0)
