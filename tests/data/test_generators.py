"""Learned market generators (himari.data.bar_rows, timegan, tabddpm) and their orchestration
(himari.training.synthetic): exact row encoding, shapes, seeds, safetensors round trips, conditional sampling, the
synthetic pre-training market, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from himari.data.bar_rows import bar_rows, rows_of_bars, rows_to_bars, sequence_windows
from himari.data.bars import Bars
from himari.data.generators import SyntheticSourceConfig
from himari.data.tabddpm import TabDDPM, TabDDPMConfig, boosted_transitions, markov_path, markov_transitions
from himari.data.timegan import TimeGAN, TimeGANConfig
from himari.errors import ConfigError, DataError, RunDirError
from himari.training.synthetic import fit_generator, generate_bars, load_generator, save_generator
from tests.features.helpers import synthetic_bars

TINY_GAN = TimeGANConfig(seq_len=8, hidden=8, batch_size=16, embedding_iters=10, supervised_iters=10, joint_iters=5)
TINY_DDPM = TabDDPMConfig(hidden=16, layers=1, diffusion_steps=10, iters=20, batch_size=64)


@pytest.fixture(scope="module")
def bars() -> Bars:
    return synthetic_bars(1500, seed=3, gaps=(700,))


def test_rows_invert_exactly(bars: Bars) -> None:
    rows, ok = rows_of_bars(bars)
    assert rows.shape == (len(bars), 3) and not ok[0] and not ok[700] and ok[1:700].all()
    seg = rows[1:700]
    back = rows_to_bars(seg, float(bars.close[0]), int(bars.timestamps_ns[1]), "1h", "X", seed=0)
    np.testing.assert_allclose(back.close, bars.close[1:700], rtol=1e-10)
    # open = previous close in generated bars; wicks reproduce high/low relative to max/min(open, close)
    again, _ok2 = bar_rows(back.open, back.high, back.low, back.close, back.gap_before)
    np.testing.assert_allclose(again[1:, 0], seg[1:, 0], atol=1e-12)
    assert (back.high >= np.maximum(back.open, back.close)).all() and (back.low <= np.minimum(back.open, back.close)).all()


def test_sequence_windows_never_cross_a_gap() -> None:
    rows = np.arange(20, dtype=float)[:, None]
    ok = np.ones(20, bool)
    ok[[0, 10]] = False
    w = sequence_windows(rows, ok, 4)
    assert w.shape == (6 + 6, 4, 1)  # rows 1..9 (9 rows -> 6 windows), 11..19 (9 rows -> 6 windows)
    assert not any(set(win[:, 0]) & {0.0, 10.0} for win in w)
    with pytest.raises(DataError, match="consecutive"):
        sequence_windows(rows, ok, 12)


def test_timegan_shapes_seeds_and_round_trip(bars: Bars, tmp_path) -> None:
    rows, ok = rows_of_bars(bars)
    rows, ok = rows[:300], ok[:300]
    a = TimeGAN.fit(rows, ok, TINY_GAN, seed=1)
    b = TimeGAN.fit(rows, ok, TINY_GAN, seed=1)
    sa, sb = a.sample_windows(5, seed=2), b.sample_windows(5, seed=2)
    assert sa.shape == (5, 8, 3) and np.isfinite(sa).all()
    np.testing.assert_array_equal(sa, sb)  # same data and seed: same networks and samples
    assert not np.array_equal(sa, a.sample_windows(5, seed=3))
    assert a.sample_rows(19, seed=0).shape == (19, 3)
    a.save(tmp_path)
    back = TimeGAN.load(tmp_path)
    np.testing.assert_array_equal(back.sample_windows(5, seed=2), sa)
    with pytest.raises(RunDirError, match="not a tabddpm"):
        TabDDPM.load(tmp_path)
    with pytest.raises(DataError, match="valid rows"):
        TimeGAN.fit(rows[:10], ok[:10], TINY_GAN)


def test_tabddpm_conditional_sampling_and_round_trip(bars: Bars, tmp_path) -> None:
    rows, ok = rows_of_bars(bars)
    labels = np.where(ok, (np.abs(rows[:, 0]) > np.nanquantile(np.abs(rows[:, 0]), 0.9)).astype(int) * 3, -1)
    model = TabDDPM.fit(rows, labels, TINY_DDPM, seed=0)
    x = model.sample(np.array([0, 3, 3, 0]), seed=1)
    assert x.shape == (4, 3) and np.isfinite(x).all()
    np.testing.assert_array_equal(x, model.sample(np.array([0, 3, 3, 0]), seed=1))
    path_rows, path = model.sample_path(50, seed=0)
    assert path_rows.shape == (50, 3) and set(np.unique(path)) <= {0, 1, 2, 3}
    model.save(tmp_path)
    back = TabDDPM.load(tmp_path)
    np.testing.assert_array_equal(back.sample(np.array([0, 3]), seed=4), model.sample(np.array([0, 3]), seed=4))
    (tmp_path / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunDirError, match="safetensors"):
        TabDDPM.load(tmp_path)
    with pytest.raises(DataError, match=r"classes must lie"):
        model.sample(np.array([4]), seed=0)
    with pytest.raises(DataError, match="n_classes"):
        TabDDPM.fit(rows, np.where(ok, 7, -1), TINY_DDPM)


def test_markov_chain_helpers_exact() -> None:
    trans = markov_transitions(np.array([0, 0, 1, -1, 1, 1]), 2)
    # counts + 1: (0->0)=1+1, (0->1)=1+1, (1->1)=1+1 (1->-1, -1->1 skipped), (1->0)=0+1
    np.testing.assert_allclose(trans, [[0.5, 0.5], [1 / 3, 2 / 3]])
    boosted = boosted_transitions(trans, {1: 3.0})
    np.testing.assert_allclose(boosted, [[0.25, 0.75], [1 / 7, 6 / 7]])
    rng = np.random.default_rng(0)
    path = markov_path(np.array([[0.0, 1.0], [1.0, 0.0]]), 6, rng, start=0)
    np.testing.assert_array_equal(path, [0, 1, 0, 1, 0, 1])
    with pytest.raises(DataError):
        boosted_transitions(trans, {5: 2.0})


@pytest.mark.parametrize("method", ["mjd", "tabddpm", "timegan"])
def test_fit_generate_save_load(method: str, tmp_path) -> None:
    real = synthetic_bars(1200, seed=5)
    gen = fit_generator(method, real, seed=0, size="tiny")
    syn = generate_bars(gen, 300, seed=1, symbol="S")
    assert len(syn) == 300 and syn.symbol == "S" and np.isfinite(syn.close).all()
    assert syn.close[0] / real.close[-1] < 1.5  # starts at the fit scale
    save_generator(gen, tmp_path)
    back = load_generator(tmp_path)
    assert back.method == method
    np.testing.assert_array_equal(generate_bars(back, 300, seed=1, symbol="S").close, syn.close)
    assert not np.array_equal(generate_bars(gen, 300, seed=2, symbol="S").close, syn.close)


def test_bad_generator_input(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown generator"):
        fit_generator("gan", synthetic_bars(600, seed=1))
    with pytest.raises(DataError, match=">= 500"):
        fit_generator("tabddpm", synthetic_bars(100, seed=1))
    with pytest.raises(RunDirError, match=r"no generator\.json"):
        load_generator(tmp_path)
    (tmp_path / "generator.json").write_text(json.dumps({"format": "himari.generator/1", "kind": "vae"}))
    with pytest.raises(RunDirError, match="unknown generator kind"):
        load_generator(tmp_path)
    with pytest.raises(ConfigError):
        SyntheticSourceConfig.parse({"method": "vae"})
    with pytest.raises(DataError, match=r"shape \(T, 3\)"):
        rows_to_bars(np.zeros((5, 2)), 1.0, 0, "1h", "X", 0)
    assert torch.get_num_threads() >= 1
