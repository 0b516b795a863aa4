"""MarketData: construction, validation errors, alignment of several symbols, gaps, causality of derived arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from himari.data.bars import Bars
from himari.env.market import BASIC_FEATURE_NAMES, MarketData, basic_features, trailing_volatility
from himari.errors import DataError
from tests.env._synth import HOUR_NS, make_market, random_prices


def _bars(symbol: str, start: str, n: int, seed: int, drop: tuple[int, ...] = ()) -> Bars:
    rng = np.random.default_rng(seed)
    o, h, lo, c = (x[:, 0] for x in random_prices(rng, n, 1))
    ts = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    keep = np.ones(n, dtype=bool)
    keep[list(drop)] = False
    return Bars.from_arrays(ts[keep], o[keep], h[keep], lo[keep], c[keep], np.ones(keep.sum()), symbol, "1h")


@dataclass(frozen=True)
class Frame:
    timestamps_ns: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    regime_posterior: np.ndarray
    valid: np.ndarray


def _frame(bars: Bars, n_features: int = 2) -> Frame:
    t_len = len(bars)
    feats = np.arange(t_len * n_features, dtype=np.float32).reshape(t_len, n_features)
    post = np.tile(np.array([0.7, 0.1, 0.1, 0.1], np.float32), (t_len, 1))
    valid = np.ones(t_len, dtype=bool)
    valid[:3] = False  # warm-up
    return Frame(bars.timestamps_ns, feats, ("a", "b")[:n_features], post, valid)


def test_from_arrays_shapes_and_readonly() -> None:
    m = make_market(n_assets=2, n_features=3)
    assert m.features.shape == (400, 2, 3) and m.regime_posterior.shape == (400, 2, 4)
    assert m.close.dtype == np.float64 and m.features.dtype == np.float32
    with pytest.raises(ValueError):
        m.close[0, 0] = 1.0
    np.testing.assert_allclose(m.log_return[1:], np.log(m.close[1:] / m.close[:-1]), rtol=1e-9, atol=1e-15)
    assert not m.tradable[-1].any()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["ts"].__setitem__(5, d["ts"][4]), "row 5.*strictly increasing"),
        (lambda d: d["close"].__setitem__(7, -1.0), "row 7.*close must be finite and > 0"),
        (lambda d: d["open"].__setitem__(9, np.nan), "row 9.*partially missing"),
        (lambda d: d["feats"].__setitem__(11, np.nan), "row 11.*non-finite feature"),
    ],
)
def test_from_arrays_rejects_bad_input_naming_row(mutate: object, message: str) -> None:
    rng = np.random.default_rng(0)
    o, h, lo, c = (x[:, 0].copy() for x in random_prices(rng, 20, 1))
    d = {"ts": np.arange(20, dtype=np.int64) * HOUR_NS, "open": o, "close": c, "feats": np.zeros((20, 1))}
    mutate(d)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        MarketData.from_arrays(d["ts"], d["open"], h, lo, d["close"], features=d["feats"])


def test_union_handles_late_listing_and_gaps() -> None:
    btc = _bars("BTC", "2021-01-01", 50, 1, drop=(20,))  # one missing bar in BTC
    sol = _bars("SOL", "2021-01-01 10:00", 40, 2)  # lists 10 bars later
    m = MarketData.from_frames([btc, sol], [_frame(btc), _frame(sol)], join="union")
    assert m.num_bars == 50 and m.symbols == ("BTC", "SOL")
    assert not m.present[:10, 1].any() and m.present[10:, 1].all()
    assert not m.tradable[:10, 1].any()
    # before listing the marks equal the first open: no return is paid there
    assert (m.log_return[:10, 1] == 0).all() and m.mark_close[0, 1] == sol.open[0]
    # BTC's missing bar 20: no order decided at 19 can fill at 20, none at 20 (absent) either
    assert not m.present[20, 0] and not m.fillable[19, 0] and not m.fillable[20, 0] and m.fillable[21, 0]
    # valuation across the missing bar: bar 20 pays 0, bar 21 pays the whole move from close[19]
    assert m.log_return[20, 0] == 0.0
    assert m.log_return[21, 0] == pytest.approx(
        np.log(btc.close[20] / btc.close[19])
    )  # btc row 20 == time 21
    # features and validity come from the matching frame rows; warm-up rows are not tradable
    assert m.features[10, 1, 0] == 0.0 and not m.valid[10:13, 1].any() and m.valid[13, 1]
    assert m.features[13, 1, 0] == _frame(sol).features[3, 0]
    np.testing.assert_allclose(m.regime_posterior[13, 1], [0.7, 0.1, 0.1, 0.1])


def test_intersection_drops_and_marks_axis_gap() -> None:
    btc = _bars("BTC", "2021-01-01", 50, 1, drop=(20,))
    sol = _bars("SOL", "2021-01-01 10:00", 40, 2)
    m = MarketData.from_frames([btc, sol], [_frame(btc), _frame(sol)], join="intersection")
    assert m.num_bars == 39 and m.present.all()
    i = int(np.flatnonzero(np.diff(m.timestamps_ns) != HOUR_NS)[0])
    assert not m.fillable[i].any() and m.fillable[i + 1].all()


def test_from_frames_rejects_mismatched_inputs() -> None:
    btc = _bars("BTC", "2021-01-01", 30, 1)
    eth = _bars("ETH", "2021-01-01", 30, 2)
    with pytest.raises(DataError, match="feature names differ"):
        MarketData.from_frames([btc, eth], [_frame(btc, 2), _frame(eth, 1)])
    with pytest.raises(DataError, match="no timestamp in common"):
        MarketData.from_frames([btc, _bars("SOL", "2022-01-01", 5, 3)], join="intersection")


def test_trailing_volatility_matches_pandas_and_is_causal() -> None:
    r = np.random.default_rng(0).normal(0, 0.01, 300)
    vol = trailing_volatility(r, 24)
    expected = pd.Series(r).rolling(24, min_periods=1).std(ddof=0).to_numpy()
    np.testing.assert_allclose(vol, expected, rtol=1e-8, atol=1e-12)
    for cut in (1, 30, 150, 299):
        np.testing.assert_allclose(trailing_volatility(r[:cut], 24), vol[:cut], rtol=1e-10, atol=1e-14)


def test_basic_features_are_causal_and_break_at_gaps() -> None:
    bars = _bars("BTC", "2021-01-01", 200, 4, drop=(100,))
    full = basic_features(bars)
    assert full.feature_names == BASIC_FEATURE_NAMES
    for cut in (30, 99, 120, 199):
        part = basic_features(bars.head(cut))
        np.testing.assert_allclose(part.features, full.features[:cut], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(part.valid, full.valid[:cut])
    # bar 100 is missing: the 24 bars after the gap are invalid (windows would span it)
    assert not full.valid[100:124].any() and full.valid[124]


def test_slice_recomputes_and_index_of() -> None:
    m = make_market(t_len=100)
    s = m.slice(10, 60)
    assert s.num_bars == 50 and not s.tradable[-1].any()
    np.testing.assert_array_equal(s.close, m.close[10:60])
    assert m.index_of(pd.Timestamp(int(m.timestamps_ns[37]), tz="UTC")) == 37


def test_real_btc_market(btc_recent: Bars) -> None:
    m = MarketData.from_frames([btc_recent])
    assert m.num_bars == len(btc_recent) and m.symbols == ("BTCUSDT",)
    gaps = np.flatnonzero(btc_recent.gap_before)
    for g in gaps:  # no fill across a real gap
        assert not m.fillable[g - 1, 0]
    assert m.tradable.mean() > 0.95
    np.testing.assert_allclose(np.exp(m.log_return[1:, 0].sum()), btc_recent.close[-1] / btc_recent.close[0])


def test_from_frames_with_the_fitted_tactical_pipeline(btc_bars: Bars) -> None:
    """Real BTC + ETH bars through the fitted TacticalPipeline: rows are aligned, warm-up rows are not tradable."""
    from himari.data.loaders import load_bars
    from himari.env.sim import SimConfig, SimVecEnv
    from himari.tactical.pipeline import TacticalPipeline

    btc = btc_bars.between("2023-01-01", "2023-03-15")
    eth = load_bars("ETHUSDT").between("2023-01-01", "2023-03-15")
    pipe = TacticalPipeline().fit(btc, "2023-01-01", "2023-02-15")
    frames = [pipe.transform(btc), pipe.transform(eth)]
    m = MarketData.from_frames([btc, eth], frames)
    assert m.feature_names == frames[0].feature_names and m.num_features == frames[0].features.shape[1]
    np.testing.assert_array_equal(m.valid[:, 0], frames[0].valid[: m.num_bars] & m.present[:, 0])
    i = int(np.flatnonzero(frames[1].valid)[0])
    np.testing.assert_array_equal(m.features[i, 1], frames[1].features[i])
    assert not m.tradable[~m.valid].any()
    env = SimVecEnv(m, SimConfig(window=8, episode_length=50), 4, seed=0)
    obs = env.reset()
    assert obs.features.shape == (4, 8, 2, m.num_features) and np.isfinite(obs.features).all()
    res = env.step(np.ones((4, 2), dtype=np.int64))
    assert np.isfinite(res.reward).all()
