"""Baselines: causality (truncation invariance), definitions, seeds and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from himari.data.bars import Bars
from himari.errors import ConfigError, DataError
from himari.evaluation.baselines import (
    BASELINE_NAMES,
    baseline_positions,
    buy_and_hold,
    ma_crossover,
    random_positions,
    trailing_volatility,
    vol_target_buy_and_hold,
)


def _gbm(n: int, vol_per_bar: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol_per_bar, n)))


def test_all_baselines_are_causal_on_real_data(btc_bars: Bars) -> None:
    bars = btc_bars.between("2022-06-01", "2022-09-01")
    close, gaps = bars.close, bars.gap_before
    full = baseline_positions(close, "1h", seed=3, gap_before=gaps)
    assert set(full) == set(BASELINE_NAMES)
    for cut in (1, 50, 199, 200, 731, 1500, close.size - 1):
        part = baseline_positions(close[: cut + 1], "1h", seed=3, gap_before=gaps[: cut + 1])
        for name in BASELINE_NAMES:
            np.testing.assert_array_equal(part[name], full[name][: cut + 1], err_msg=f"{name} at cut {cut}")


def test_future_prices_do_not_change_past_positions() -> None:
    close = _gbm(600, 0.01, 0)
    shocked = close.copy()
    shocked[400:] *= 3.0  # a huge move after bar 399
    for fn in (lambda c: ma_crossover(c, 10, 40, allow_short=True),
               lambda c: vol_target_buy_and_hold(c, "1h", 0.3, window_bars=48, max_position=2.0)):
        np.testing.assert_array_equal(fn(close)[:400], fn(shocked)[:400])


def test_buy_and_hold() -> None:
    assert buy_and_hold(np.array([1.0, 2.0, 3.0]), 0.5).tolist() == [0.5, 0.5, 0.5]


def test_trailing_volatility_matches_definition_and_skips_gaps() -> None:
    close = _gbm(300, 0.01, 1)
    vol = trailing_volatility(close, 48, 8760.0)
    lr = np.diff(np.log(close))
    t = 200
    assert vol[t] == pytest.approx(lr[t - 48 : t].std(ddof=1) * math.sqrt(8760.0), rel=1e-9)
    assert np.isnan(vol[:24]).all() and np.isfinite(vol[25:]).all()
    jumped = close.copy()
    jumped[150:] *= 1.5  # a 50% jump over a data gap must not count as one bar's return
    gaps = np.zeros(300, dtype=bool)
    gaps[150] = True
    with_gap = trailing_volatility(jumped, 48, 8760.0, gap_before=gaps)
    lr_jumped = np.diff(np.log(jumped))  # lr_jumped[k] is the return into bar k + 1
    window = np.delete(lr_jumped[170 - 48 : 170], 149 - (170 - 48))  # window ending at 170 without the gap
    assert window.size == 47
    assert with_gap[170] == pytest.approx(window.std(ddof=1) * math.sqrt(8760.0), rel=1e-9)
    assert with_gap[t] == pytest.approx(vol[t], rel=1e-9)  # the window ending at 200 no longer holds the gap


def test_vol_target_sizes_to_the_target_and_caps() -> None:
    close = _gbm(3000, 0.01, 2)  # ~0.94 annualized on hourly bars
    pos = vol_target_buy_and_hold(close, "1h", target_vol_annual=0.47, window_bars=720, max_position=1.0)
    assert (pos[:359] == 0).all()  # warm-up
    assert np.median(pos[1000:]) == pytest.approx(0.5, rel=0.1)
    capped = vol_target_buy_and_hold(close, "1h", target_vol_annual=5.0, window_bars=720, max_position=1.5)
    assert capped.max() == 1.5 and (capped[1000:] == 1.5).all()
    # Default window: 30 days of the timeframe (30 daily bars for 1d).
    daily = vol_target_buy_and_hold(_gbm(100, 0.03, 3), "1d")
    assert (daily[:15] == 0).all() and (daily[15:] > 0).all()


def test_ma_crossover_signs() -> None:
    up_then_down = np.concatenate([np.linspace(100, 200, 300), np.linspace(200, 80, 300)])
    long_only = ma_crossover(up_then_down, 10, 50)
    assert (long_only[:49] == 0).all()
    assert (long_only[60:300] == 1.0).all()
    assert (long_only[400:] == 0.0).all()
    both = ma_crossover(up_then_down, 10, 50, max_position=0.7, allow_short=True)
    assert (both[400:] == -0.7).all() and (both[60:300] == 0.7).all()


def test_random_positions_seeded_with_holding_period() -> None:
    a = random_positions(20000, seed=5, mean_holding_bars=24)
    assert np.array_equal(a, random_positions(20000, seed=5, mean_holding_bars=24))
    assert not np.array_equal(a, random_positions(20000, seed=6, mean_holding_bars=24))
    np.testing.assert_array_equal(random_positions(777, seed=5, mean_holding_bars=24), a[:777])
    assert set(np.unique(a)) <= {-1.0, 0.0, 1.0}
    # A redraw every 24 bars on average lands on a different level 2/3 of the time: runs last ~36 bars.
    changes = int((np.diff(a) != 0).sum())
    assert a.size / changes == pytest.approx(36, rel=0.15)
    long_only = random_positions(5000, seed=1, max_position=0.5, allow_short=False)
    assert set(np.unique(long_only)) == {0.0, 0.5}
    assert random_positions(0, seed=1).shape == (0,)


def test_input_errors() -> None:
    bad = np.array([1.0, 2.0, np.nan, 3.0])
    with pytest.raises(DataError, match="bar 2"):
        buy_and_hold(bad)
    with pytest.raises(DataError, match="bar 1"):
        ma_crossover(np.array([1.0, -2.0, 3.0]), 1, 2)
    with pytest.raises(ConfigError):
        ma_crossover(np.ones(10), 5, 5)
    with pytest.raises(ConfigError):
        vol_target_buy_and_hold(np.ones(10), "1h", target_vol_annual=0.0)
    with pytest.raises(ConfigError):
        random_positions(10, seed=1, mean_holding_bars=0.5)
    with pytest.raises(ConfigError):
        buy_and_hold(np.ones(3), max_position=-1.0)
