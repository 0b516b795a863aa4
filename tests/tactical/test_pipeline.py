"""TacticalPipeline: contract shapes/dtypes, truncation invariance of every output, fit-window isolation,
save/load round trip, leakage refusal; on synthetic bars (Bars.from_arrays) and a real slice."""

from __future__ import annotations

import numpy as np
import pytest

from himari.data.bars import Bars
from himari.errors import LeakageError, RunDirError
from himari.features.technical import N_FEATURES
from himari.tactical.pipeline import TacticalConfig, TacticalPipeline
from tests.features.helpers import synthetic_bars

SMALL_LABELLER = {"pct_window": 300, "pct_min_periods": 100}


@pytest.fixture(scope="module")
def syn() -> Bars:
    return synthetic_bars(3600, seed=7, gaps=(1700,))


@pytest.fixture(scope="module")
def fitted(syn: Bars) -> TacticalPipeline:
    cfg = TacticalConfig.parse({"labeller": SMALL_LABELLER, "percentile_window": 200, "percentile_min_periods": 100})
    return TacticalPipeline(cfg).fit(syn, syn.index[0], syn.index[2400])


def test_contract(fitted: TacticalPipeline, syn: Bars) -> None:
    tf = fitted.transform(syn)
    t = len(syn)
    assert tf.timestamps_ns.dtype == np.int64 and np.array_equal(tf.timestamps_ns, syn.timestamps_ns)
    assert tf.features.shape == (t, N_FEATURES + 4) and tf.features.dtype == np.float32
    assert len(tf.feature_names) == tf.features.shape[1]
    assert np.isfinite(tf.features).all()
    assert tf.regime_posterior.shape == (t, 4) and tf.regime_posterior.dtype == np.float32
    np.testing.assert_allclose(tf.regime_posterior.sum(axis=1), 1.0, atol=1e-5)
    assert tf.valid.dtype == bool and 0.7 < tf.valid.mean() < 1.0
    assert np.all(tf.features[~tf.valid] == 0.0)
    v = tf.features[tf.valid]
    assert v.min() >= -1.0 and v.max() <= 1.0  # percentile normalizer maps to (-1, 1)
    gap = int(np.flatnonzero(syn.gap_before)[0])
    assert not tf.valid[gap : gap + 168].any()  # windows spanning the gap are invalid


def test_truncation_invariance_all_outputs(fitted: TacticalPipeline, syn: Bars) -> None:
    full = fitted.transform(syn)
    for cut in (150, 400, 1699, 1700, 1701, 1900, 2500, 3100, len(syn)):
        part = fitted.transform(syn.head(cut))
        np.testing.assert_allclose(part.features, full.features[:cut], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(part.regime_posterior, full.regime_posterior[:cut], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(part.valid, full.valid[:cut])


@pytest.mark.parametrize("normalizer", ["zscore", "spectral"])
def test_fitted_normalizers_truncation_and_leakage(syn: Bars, normalizer: str) -> None:
    cfg = TacticalConfig.parse({"labeller": SMALL_LABELLER, "normalizer": normalizer, "include_filters": False})
    pipe = TacticalPipeline(cfg).fit(syn, syn.index[0], syn.index[2400])
    full = pipe.transform(syn)
    assert full.features.shape[1] == N_FEATURES and np.isfinite(full.features).all()
    for cut in (500, 2000, 3000):
        np.testing.assert_allclose(pipe.transform(syn.head(cut)).features, full.features[:cut], rtol=1e-6, atol=1e-6)
    with pytest.raises(LeakageError):
        pipe.transform(syn, eval_start=syn.index[2000])
    pipe.transform(syn, eval_start=syn.index[2400])  # at the fit end: fine


def test_fit_never_reads_bars_after_train_end(syn: Bars) -> None:
    cfg = TacticalConfig.parse({"labeller": SMALL_LABELLER})
    a = TacticalPipeline(cfg).fit(syn, syn.index[0], syn.index[2400])
    frame = syn.frame.copy()
    frame.iloc[2400:, :4] *= 3.0  # change the future
    b = TacticalPipeline(cfg).fit(syn.with_frame(frame), syn.index[0], syn.index[2400])
    assert a.state_dict() == b.state_dict()


def test_save_load_round_trip(fitted: TacticalPipeline, syn: Bars, tmp_path) -> None:
    fitted.save(tmp_path)
    back = TacticalPipeline.load(tmp_path)
    x, y = fitted.transform(syn), back.transform(syn)
    np.testing.assert_array_equal(x.features, y.features)
    np.testing.assert_array_equal(x.regime_posterior, y.regime_posterior)
    assert back.fit_window == fitted.fit_window
    with pytest.raises(RunDirError):
        TacticalPipeline.load(tmp_path / "missing")
    with pytest.raises(RunDirError):
        TacticalPipeline().transform(syn)


def test_em_fit_on_real_slice(btc_recent: Bars) -> None:
    cfg = TacticalConfig.parse({"hmm_fit": "em", "hmm_em_iters": 3, "labeller": {"pct_window": 720, "pct_min_periods": 200}})
    pipe = TacticalPipeline(cfg).fit(btc_recent, "2022-01-01", "2022-10-01")
    assert sorted(pipe.hmm.state_to_regime.tolist()) == [0, 1, 2, 3]
    tf = pipe.transform(btc_recent, eval_start="2022-10-01")
    late = tf.timestamps_ns >= np.datetime64("2022-10-01", "ns").astype(np.int64)
    assert tf.valid[late].mean() > 0.9
    with pytest.raises(LeakageError):
        pipe.transform(btc_recent, eval_start="2022-06-01")
    # truncation invariance on real data (real gaps inside), regime posterior included
    for cut in (3000, 7000, len(btc_recent) - 1):
        part = pipe.transform(btc_recent.head(cut))
        np.testing.assert_allclose(part.features, tf.features[:cut], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(part.regime_posterior, tf.regime_posterior[:cut], rtol=1e-5, atol=1e-6)


def test_transform_cache_returns_exact_recomputation(fitted: TacticalPipeline, syn: Bars) -> None:
    from himari.tactical.pipeline import clear_transform_cache

    first = fitted.transform(syn)
    again = fitted.transform(syn)  # cache hit
    clear_transform_cache()
    fresh = fitted.transform(syn)
    for out in (again, fresh):
        np.testing.assert_array_equal(out.features, first.features)
        np.testing.assert_array_equal(out.regime_posterior, first.regime_posterior)
        np.testing.assert_array_equal(out.valid, first.valid)
    frame = syn.frame.copy()
    frame.iloc[-1, 3] *= 1.01  # different content -> different key, last row changes
    changed = fitted.transform(syn.with_frame(frame))
    assert not np.array_equal(changed.features[-1], first.features[-1])


def test_short_inputs_and_wrong_timeframe(fitted: TacticalPipeline, syn: Bars) -> None:
    from himari.errors import DataError

    for n in (1, 2, 30):
        tf = fitted.transform(syn.head(n))
        assert tf.features.shape == (n, N_FEATURES + 4) and not tf.valid.any()
        assert np.isfinite(tf.features).all() and np.isfinite(tf.regime_posterior).all()
    four_hourly = Bars.from_arrays(syn.index[::4], syn.open[::4], syn.high[::4], syn.low[::4], syn.close[::4],
                                   syn.volume[::4], "SYN", "4h")
    with pytest.raises(DataError, match="fitted on 3600s bars"):
        fitted.transform(four_hourly)


def test_trailing_history_gives_the_full_history_features(btc_bars):
    """Paper trading and the API rebuild features from a bounded trailing history (SessionConfig.history_bars);
    every feature and the regime posterior must then equal the full-series values (bounded memory)."""
    from himari.tactical.pipeline import TacticalPipeline

    bars = btc_bars.between("2023-04-01", "2024-03-01")
    tp = TacticalPipeline().fit(bars, "2023-06-01", "2023-12-01")
    full = tp.transform(bars)
    part = tp.transform(bars.with_frame(bars.frame.iloc[-3000:]))
    np.testing.assert_allclose(part.features[-200:], full.features[-200:], rtol=0, atol=1e-6)
    np.testing.assert_allclose(part.regime_posterior[-200:], full.regime_posterior[-200:], rtol=0, atol=1e-6)
