"""Bar-by-bar tactical inputs equal the batch transform on real data (bundled BTCUSDT hourly bars), across a gap,
and a saved stream continues identically (JSON + npz, no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from himari.data.bars import Bars
from himari.data.loaders import load_bars
from himari.errors import DataError, RunDirError
from himari.features.ekf import ekf_filter, ekf_step
from himari.features.kalman import kalman_filter, kalman_step
from himari.tactical.incremental import TacticalStream
from himari.tactical.pipeline import TacticalConfig, TacticalPipeline

GAP_AT = "2021-08-13 06:00"  # a real gap in the bundled BTCUSDT series (bars missing before this one)


@pytest.fixture(scope="module")
def btc() -> Bars:
    return load_bars("BTCUSDT").between("2020-01-01", "2021-10-01")


@pytest.fixture(scope="module")
def pipeline(btc: Bars) -> TacticalPipeline:
    return TacticalPipeline().fit(btc, "2020-01-01", "2021-01-01")


def _head(bars: Bars, n: int) -> Bars:
    return bars.with_frame(bars.frame.iloc[:n])


def _rows(stream: TacticalStream, bars: Bars) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = stream.update_bars(bars)
    return (np.stack([r.features for r in rows]), np.stack([r.regime_posterior for r in rows]),
            np.array([r.valid for r in rows]))


def test_stream_equals_batch_transform_across_a_gap(btc: Bars, pipeline: TacticalPipeline) -> None:
    gap_index = int(np.flatnonzero(btc.index == GAP_AT)[0])
    assert btc.gap_before[gap_index]
    n0, n1 = gap_index - 120, gap_index + 200  # 120 bars before the gap, 200 after (restart + warm-up)
    stream = TacticalStream.from_history(pipeline, _head(btc, n0))
    features, posterior, valid = _rows(stream, btc.with_frame(btc.frame.iloc[n0:n1]))
    batch = pipeline.transform(_head(btc, n1))
    np.testing.assert_array_equal(valid, batch.valid[n0:n1])
    assert valid[:100].all() and not valid[120:200].all()  # valid before the gap, warm-up after it
    # Bit-equal on this data. The technical kernel sees the last 640 bars of the segment (its recursions forget
    # their start below 1e-20) and the regime's trailing moments are summed over the window, where the batch
    # carries pandas' running sums: both agree to float64 roundoff, far below float32's resolution here.
    np.testing.assert_array_equal(features, batch.features[n0:n1])
    np.testing.assert_allclose(posterior, batch.regime_posterior[n0:n1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("normalizer", ["zscore", "spectral"])
def test_stream_with_fitted_normalizers(btc: Bars, normalizer: str) -> None:
    bars = btc.between("2020-06-01", "2021-03-01")
    pipe = TacticalPipeline(TacticalConfig(normalizer=normalizer)).fit(bars, "2020-06-01", "2021-01-01")
    n0 = len(bars) - 60
    features, _, valid = _rows(TacticalStream.from_history(pipe, _head(bars, n0)), bars.with_frame(bars.frame.iloc[n0:]))
    batch = pipe.transform(bars)
    np.testing.assert_array_equal(valid, batch.valid[n0:])
    assert valid.all()
    # raw features agree to ~1e-12 relative (see above); the z-score is a per-row affine map, spectral an FIR
    np.testing.assert_allclose(features, batch.features[n0:], rtol=1e-5, atol=1e-5)


def test_saved_stream_continues_identically(btc: Bars, pipeline: TacticalPipeline, tmp_path: Path) -> None:
    start = int(np.flatnonzero(btc.index == "2021-05-01 00:00")[0])
    stream = TacticalStream.from_history(pipeline, _head(btc, start))
    stream.update_bars(btc.with_frame(btc.frame.iloc[start:start + 30]))
    stream.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "tactical_stream.json").read_text())
    assert meta["kind"] == "tactical_stream" and meta["bars_seen"] == start + 30
    resumed = TacticalStream.load(tmp_path / "s", pipeline)
    rest = btc.with_frame(btc.frame.iloc[start + 30:start + 60])
    a, b = _rows(stream, rest), _rows(resumed, rest)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    other = TacticalPipeline().fit(btc, "2020-02-01", "2021-01-01")
    with pytest.raises(RunDirError, match="another fitted pipeline"):
        TacticalStream.load(tmp_path / "s", other)
    with pytest.raises(RunDirError, match="needs"):
        TacticalStream.load(tmp_path / "missing", pipeline)


def test_update_rejects_bad_bars(btc: Bars, pipeline: TacticalPipeline) -> None:
    stream = TacticalStream.from_history(pipeline, _head(btc, 9000))
    last = int(btc.timestamps_ns[8999])
    with pytest.raises(DataError, match="not after the last bar"):
        stream.update(last, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(DataError, match="non-finite or non-positive"):
        stream.update(last + 3_600_000_000_000, 1.0, 1.0, 1.0, float("nan"), 1.0)
    with pytest.raises(DataError, match="non-finite or non-positive"):
        stream.update(last + 3_600_000_000_000, 1.0, 1.0, 0.0, 1.0, 1.0)


def test_filter_steps_equal_batch_filters(btc: Bars, pipeline: TacticalPipeline) -> None:
    logp = np.log(btc.close[:3000])
    gap = btc.gap_before[:3000].copy()
    gap[1500] = True  # a restart inside the series
    kf = kalman_filter(logp, pipeline._require().kalman, gap, trend=True)
    ek = ekf_filter(logp, pipeline._require().ekf, gap)
    k_state = e_state = None
    for t, y in enumerate(logp.tolist()):
        start = t == 0 or bool(gap[t])
        k_state = kalman_step(k_state, y, pipeline._require().kalman, start, trend=True)
        e_state = ekf_step(e_state, y, pipeline._require().ekf, start)
        assert (k_state.m, k_state.b) == (kf.level[t], kf.slope[t])
        assert (e_state.m, e_state.h) == (ek.level[t], ek.log_var[t])


def test_hmm_filter_step_equals_batch_filter(btc: Bars, pipeline: TacticalPipeline) -> None:
    hmm = pipeline.hmm
    z, _ = pipeline.regime_observations(_head(btc, 4000))
    starts = np.zeros(len(z), dtype=bool)
    starts[2000] = True
    batch = hmm.filter(z, starts).posterior
    alpha = None
    for t in range(len(z)):
        alpha = hmm.filter_step(alpha, z[t], bool(starts[t]))
        # The recursion is the batch's, operation for operation; the emission density of one row goes through
        # LAPACK's solve with one right-hand side instead of T, which rounds differently in the last bit (~1e-16).
        np.testing.assert_allclose(alpha, batch[t], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(hmm.regime_of_states(batch), hmm.regime_posterior(z, starts))
    fresh = hmm.filter_step(None, z[5], False)  # no previous posterior: starts from startprob
    np.testing.assert_allclose(fresh, hmm.filter(z[5:6]).posterior[0], rtol=1e-12)


def test_recursive_columns_equal_the_kernel(btc: Bars) -> None:
    from himari.features.technical import segment_features
    from himari.tactical.incremental import _RECURSIVE_INDEX, TAIL_BARS, _recursive_features

    cols = [np.ascontiguousarray(a[-TAIL_BARS:]) for a in (btc.open, btc.high, btc.low, btc.close, btc.volume)]
    full = segment_features(*cols, btc.timeframe.periods_per_year)[-1]
    np.testing.assert_array_equal(_recursive_features(cols[1], cols[2], cols[3]), full[_RECURSIVE_INDEX])
