"""The 44 technical features: indicator cross-checks vs ``ta``, truncation invariance, gap policy, edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ta

from himari.data.bars import Bars
from himari.features.technical import (
    FEATURE_NAMES,
    MAX_WARMUP,
    N_FEATURES,
    compute_features,
    segment_features,
)
from tests.features.helpers import synthetic_bars


@pytest.fixture(scope="module")
def real_slice(btc_bars: Bars) -> Bars:
    # a contiguous stretch of real BTC bars (no gap in 2023-05..06)
    b = btc_bars.between("2023-05-01", "2023-07-01")
    assert not b.gap_before[1:].any()
    return b


def _col(values: np.ndarray, name: str) -> np.ndarray:
    return values[:, FEATURE_NAMES.index(name)]


def _close_where_both(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9, atol: float = 1e-9) -> None:
    ok = np.isfinite(a) & np.isfinite(np.asarray(b, dtype=float))
    assert ok.sum() > 100
    np.testing.assert_allclose(a[ok], np.asarray(b, dtype=float)[ok], rtol=rtol, atol=atol)


def test_indicators_match_ta(real_slice: Bars) -> None:
    f = compute_features(real_slice).values
    close = real_slice.frame["close"]
    high, low, volume = real_slice.frame["high"], real_slice.frame["low"], real_slice.frame["volume"]
    c = close.to_numpy()
    _close_where_both(_col(f, "rsi_14"), ta.momentum.RSIIndicator(close, 14).rsi())
    m = ta.trend.MACD(close, 26, 12, 9)
    _close_where_both(_col(f, "macd_pct"), 100 * m.macd() / close)
    _close_where_both(_col(f, "macd_signal_pct"), 100 * m.macd_signal() / close)
    _close_where_both(_col(f, "macd_hist_pct"), 100 * m.macd_diff() / close)
    st = ta.momentum.StochasticOscillator(high, low, close, 14, 3)
    _close_where_both(_col(f, "stoch_k"), st.stoch())
    _close_where_both(_col(f, "stoch_d"), st.stoch_signal())
    _close_where_both(_col(f, "roc_12"), ta.momentum.ROCIndicator(close, 12).roc())
    atr = ta.volatility.AverageTrueRange(high, low, close, 14).average_true_range().to_numpy().copy()
    atr[:13] = np.nan  # ta writes zeros in its warm-up
    _close_where_both(_col(f, "atr_14"), atr)
    bb = ta.volatility.BollingerBands(close, 20, 2)
    _close_where_both(_col(f, "bb_upper_dist"), (bb.bollinger_hband() - close) / close, atol=1e-12)
    _close_where_both(_col(f, "bb_lower_dist"), (close - bb.bollinger_lband()) / close, atol=1e-12)
    _close_where_both(_col(f, "bb_width"), bb.bollinger_wband() / 100.0)
    obv = ta.volume.OnBalanceVolumeIndicator(close, volume).on_balance_volume().to_numpy().copy()
    vsum = volume.rolling(24).sum().to_numpy()
    obv_lag = np.concatenate([np.full(24, np.nan), obv[:-24]])
    _close_where_both(_col(f, "obv_norm_24"), (obv - obv_lag) / vsum)
    vwap = ta.volume.VolumeWeightedAveragePrice(high, low, close, volume, 24).volume_weighted_average_price()
    _close_where_both(_col(f, "vwap_dev_24"), c / vwap.to_numpy() - 1.0)


def test_statistics_match_pandas(real_slice: Bars) -> None:
    f = compute_features(real_slice).values
    r = pd.Series(real_slice.log_returns())
    _close_where_both(_col(f, "skew_168"), r.rolling(168).skew(), rtol=1e-6, atol=1e-8)
    _close_where_both(_col(f, "kurt_168"), r.rolling(168).kurt(), rtol=1e-6, atol=1e-8)
    ppy = real_slice.timeframe.periods_per_year
    _close_where_both(_col(f, "rvol_24"), r.rolling(24).std() * np.sqrt(ppy), rtol=1e-8)
    _close_where_both(_col(f, "ret_24"), np.log(real_slice.frame["close"]).diff(24))
    ac1 = r.rolling(168).apply(lambda w: np.corrcoef(w[1:], w[:-1])[0, 1], raw=True)
    _close_where_both(_col(f, "autocorr_1_168"), ac1, rtol=1e-7, atol=1e-10)
    close = real_slice.frame["close"]
    z = (close - close.rolling(168).mean()) / close.rolling(168).std(ddof=0)
    _close_where_both(_col(f, "zscore_168"), z, rtol=1e-7)


def test_truncation_invariance_every_column(btc_bars: Bars) -> None:
    bars = btc_bars.between("2020-02-15", "2020-03-20")  # includes real gaps and the March 2020 crash
    full = compute_features(bars)
    n = len(bars)
    cuts = np.unique(np.linspace(5, n, 23).astype(int))
    for cut in cuts:
        part = compute_features(bars.head(int(cut)))
        np.testing.assert_allclose(part.values, full.values[:cut], rtol=1e-12, atol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(part.valid, full.valid[:cut])


def test_gap_restarts_every_window() -> None:
    bars = synthetic_bars(1200, seed=3, gaps=(600,))
    gap_idx = int(np.flatnonzero(bars.gap_before)[0])
    full = compute_features(bars)
    after = bars.with_frame(bars.frame.iloc[gap_idx:])
    alone = compute_features(after)
    # rows after the gap depend on the post-gap segment only: the pre-gap history is not bridged
    np.testing.assert_allclose(full.values[gap_idx:], alone.values, rtol=1e-12, equal_nan=True)
    assert not full.valid[gap_idx : gap_idx + MAX_WARMUP].any()
    assert full.valid[gap_idx + MAX_WARMUP]
    assert np.isnan(full.values[gap_idx, FEATURE_NAMES.index("ret_1")])  # no return across the gap


def test_warmup_marked_not_filled() -> None:
    bars = synthetic_bars(400, seed=1)
    table = compute_features(bars)
    assert table.values.shape == (400, N_FEATURES)
    assert not table.valid[:MAX_WARMUP].any() and table.valid[MAX_WARMUP:].all()
    assert np.isfinite(table.values[MAX_WARMUP:]).all()
    # a column with a 24-bar window is NaN before index 23 and finite after
    c = _col(table.values, "zscore_24")
    assert np.isnan(c[:23]).all() and np.isfinite(c[23:]).all()


@pytest.mark.parametrize("n", [0, 1, 2, 30])
def test_short_and_constant_segments(n: int) -> None:
    x = np.full(n, 100.0)
    out = segment_features(x, x, x, x, np.zeros(n), 8760.0)
    assert out.shape == (n, N_FEATURES)
    assert not np.isinf(out).any()
    if n == 30:
        assert _col(out, "rsi_14")[14] == 100.0  # no loss -> RSI 100 (ta convention)
        assert _col(out, "close_position")[0] == 0.5
