"""Consensus autoencoder (himari.features.representation) and its tactical feature option: shapes, causality by
truncation, fit-window isolation, seeds, safetensors round trip, the bar-by-bar stream, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from himari.data.bars import Bars
from himari.errors import ConfigError, DataError, RunDirError
from himari.features.representation import ConsensusAEConfig, ConsensusAutoencoder, causal_windows
from himari.features.technical import N_FEATURES
from himari.tactical.incremental import TacticalStream
from himari.tactical.pipeline import AUTOENCODER_FILE, PIPELINE_FILE, TacticalConfig, TacticalPipeline
from tests.features.helpers import synthetic_bars

SMALL = {"labeller": {"pct_window": 300, "pct_min_periods": 100}, "percentile_window": 200,
         "percentile_min_periods": 100}
AE = {"window": 4, "latent": 3, "hidden": 16, "iters": 60, "batch_size": 64}


@pytest.fixture(scope="module")
def syn() -> Bars:
    return synthetic_bars(3000, seed=11, gaps=(1600,))


@pytest.fixture(scope="module")
def fitted(syn: Bars) -> TacticalPipeline:
    cfg = TacticalConfig.parse({**SMALL, "autoencoder": AE})
    return TacticalPipeline(cfg).fit(syn, syn.index[0], syn.index[2000])


def test_causal_windows_exact() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    valid = np.array([True, True, True, False, True, True])
    w, ok = causal_windows(x, valid, 2)
    np.testing.assert_array_equal(w[2], [2, 3, 4, 5])  # rows 1, 2, oldest first
    np.testing.assert_array_equal(ok, [False, True, True, False, False, True])


def test_feature_option_shapes_and_names(fitted: TacticalPipeline, syn: Bars) -> None:
    tf = fitted.transform(syn)
    assert tf.features.shape == (len(syn), N_FEATURES + 4 + 3)
    assert tf.feature_names[-3:] == ("ae_0", "ae_1", "ae_2") and len(tf.feature_names) == tf.features.shape[1]
    codes = tf.features[tf.valid, -3:]
    assert np.isfinite(codes).all() and np.abs(codes).max() < 1.0 and codes.std(axis=0).min() > 0
    assert np.all(tf.features[~tf.valid] == 0.0)
    base = fitted._transform_base(syn)
    np.testing.assert_array_equal(tf.features[tf.valid, :-3], base.features[tf.valid])
    # a row is valid only when its whole window is: the first W-1 valid base rows are not
    first = int(np.argmax(base.valid))
    assert not tf.valid[first:first + 3].any() and tf.valid[first + 3]
    replace = TacticalPipeline(TacticalConfig.parse({**SMALL, "autoencoder": {**AE, "mode": "replace"}}))
    replace.fit(syn, syn.index[0], syn.index[2000])
    r = replace.transform(syn)
    assert r.features.shape == (len(syn), 3)
    np.testing.assert_array_equal(r.features, tf.features[:, -3:])  # same seed and data: same codes


def test_truncation_invariance(fitted: TacticalPipeline, syn: Bars) -> None:
    full = fitted.transform(syn)
    for cut in (300, 1599, 1600, 1601, 1800, 2001, 2600):
        part = fitted.transform(syn.head(cut))
        np.testing.assert_allclose(part.features, full.features[:cut], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(part.valid, full.valid[:cut])


def test_fit_uses_the_fit_window_only_and_is_seeded(syn: Bars) -> None:
    cfg = TacticalConfig.parse({**SMALL, "autoencoder": AE})
    a = TacticalPipeline(cfg).fit(syn, syn.index[0], syn.index[2000])
    frame = syn.frame.copy()
    frame.iloc[2000:, :4] *= 2.5  # change the future
    b = TacticalPipeline(cfg).fit(syn.with_frame(frame), syn.index[0], syn.index[2000])
    assert a.state_dict() == b.state_dict()  # includes the SHA-256 of the autoencoder weights
    other = TacticalPipeline(cfg.replace(autoencoder={**AE, "seed": 1})).fit(syn, syn.index[0], syn.index[2000])
    assert other.state_dict()["autoencoder"]["sha256"] != a.state_dict()["autoencoder"]["sha256"]


def test_save_load_round_trip_and_tampering(fitted: TacticalPipeline, syn: Bars, tmp_path) -> None:
    fitted.save(tmp_path)
    assert (tmp_path / AUTOENCODER_FILE).exists()
    back = TacticalPipeline.load(tmp_path)
    np.testing.assert_array_equal(back.transform(syn).features, fitted.transform(syn).features)
    raw = bytearray((tmp_path / AUTOENCODER_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / AUTOENCODER_FILE).write_bytes(bytes(raw))
    with pytest.raises(RunDirError, match="SHA-256"):
        TacticalPipeline.load(tmp_path)
    (tmp_path / AUTOENCODER_FILE).unlink()
    with pytest.raises(RunDirError, match="missing"):
        TacticalPipeline.load(tmp_path)
    payload = json.loads((tmp_path / PIPELINE_FILE).read_text())
    payload["autoencoder"] = None
    (tmp_path / PIPELINE_FILE).write_text(json.dumps(payload))
    with pytest.raises(RunDirError, match="records no weights"):
        TacticalPipeline.load(tmp_path)


def test_stream_rows_equal_the_batch(fitted: TacticalPipeline, syn: Bars, tmp_path) -> None:
    n0, n1 = 2200, 2260
    stream = TacticalStream.from_history(fitted, syn.head(n0))
    rows = stream.update_bars(syn.with_frame(syn.frame.iloc[n0:n0 + 30]))
    stream.save(tmp_path)
    resumed = TacticalStream.load(tmp_path, fitted)
    rows += resumed.update_bars(syn.with_frame(syn.frame.iloc[n0 + 30:n1]))
    batch = fitted.transform(syn.head(n1))
    np.testing.assert_array_equal(np.array([r.valid for r in rows]), batch.valid[n0:n1])
    np.testing.assert_allclose(np.stack([r.features for r in rows]), batch.features[n0:n1], atol=1e-6)


def test_bad_input() -> None:
    with pytest.raises(ConfigError):
        TacticalConfig.parse({"autoencoder": {"window": 0}})
    with pytest.raises(ConfigError):
        TacticalConfig.parse({"autoencoder": {"bogus": 1}})
    x = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(DataError, match="valid windows"):
        ConsensusAutoencoder.fit(x, np.ones(10, bool), np.ones(10, bool), ConsensusAEConfig(window=4))
    model = ConsensusAutoencoder.fit(np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32),
                                     np.ones(200, bool), np.ones(200, bool), ConsensusAEConfig(window=2, iters=5))
    with pytest.raises(DataError, match="expected"):
        model.encode(np.zeros((5, 4)), np.ones(5, bool))
