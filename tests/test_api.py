"""The short Python API (himari/api.py): DataFrame in / DataFrame out, load_run(...).decide(...), Gymnasium ids."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import pandas as pd
import pytest

import himari
from himari.data.bars import Bars
from himari.data.loaders import bars_from_frame
from himari.errors import DataError
from himari.features.technical import compute_features


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.paper.real_bundle import build_mlp_bundle

    return build_mlp_bundle(tmp_path_factory.mktemp("api") / "run")


@pytest.fixture(scope="module")
def frame(btc_bars: Bars) -> pd.DataFrame:
    return btc_bars.between("2022-06-01", "2022-10-01").frame


def test_bars_from_frame_matches_the_file_path(frame: pd.DataFrame) -> None:
    bars = bars_from_frame(frame, "BTCUSDT")
    assert str(bars.timeframe) == "1h" and bars.frame.equals(frame)
    columns = frame.reset_index()  # a "timestamp" column of epoch milliseconds, capitalised names
    columns["timestamp"] = columns["timestamp"].astype("int64") // 1_000_000
    columns.columns = [c.capitalize() for c in columns.columns]
    assert bars_from_frame(columns).frame.equals(frame)


def test_bad_frames_name_the_row(frame: pd.DataFrame) -> None:
    broken = frame.copy()
    broken.iloc[10, broken.columns.get_loc("high")] = -5.0
    with pytest.raises(DataError, match=r"<DataFrame>: row 11: high"):
        bars_from_frame(broken)
    with pytest.raises(DataError, match="missing column"):
        bars_from_frame(frame.drop(columns=["volume"]))
    with pytest.raises(DataError, match="expected Bars, a pandas DataFrame"):
        himari.as_bars(42)


def test_features_frame_is_the_feature_table_and_causal(frame: pd.DataFrame) -> None:
    out = himari.features_frame(frame)
    table = compute_features(bars_from_frame(frame))
    assert list(out.columns) == [*table.names, "valid"]
    np.testing.assert_array_equal(out[list(table.names)].to_numpy(), table.values)
    assert out.index.equals(frame.index)
    t = 1500  # truncation invariance: row t computed on frame[: t + 1] is the same
    head = himari.features_frame(frame.iloc[: t + 1])
    pd.testing.assert_series_equal(head.iloc[t], out.iloc[t])


def test_regimes_frame_with_and_without_a_model(frame: pd.DataFrame, run_dir: Path) -> None:
    rules = himari.regimes_frame(frame)
    assert list(rules.columns) == ["label", "label_name"] and (rules["label"] >= -1).all()
    fitted = himari.regimes_frame(frame, model=run_dir)
    posterior = fitted[["p_low_vol", "p_trending", "p_high_vol", "p_crisis"]].to_numpy()
    np.testing.assert_allclose(posterior.sum(axis=1), 1.0, atol=1e-5)
    assert (fitted["regime"] == np.array(["LOW_VOL", "TRENDING", "HIGH_VOL", "CRISIS"])[posterior.argmax(1)]).all()


def test_load_run_decides_like_the_engine(frame: pd.DataFrame, run_dir: Path) -> None:
    from himari.trading.bundle import load_bundle
    from himari.trading.engine import DecisionEngine

    run = himari.load_run(run_dir)
    assert run.symbols == ("BTCUSDT",) and run.model_id == "mlp-test"
    from_frame = run.decide(frame)
    reference = DecisionEngine(load_bundle(run_dir)).decide(bars_from_frame(frame, "BTCUSDT"))
    assert from_frame.timestamp_ns == int(frame.index[-1].value)
    np.testing.assert_array_equal(from_frame.target_position, reference.target_position)
    np.testing.assert_array_equal(from_frame.regime_posterior, reference.regime_posterior)
    assert from_frame.actions == reference.actions
    with pytest.raises(DataError, match="no bars for BTCUSDT"):
        run.decide({"ETHUSDT": frame})
    with pytest.raises(DataError, match="trained on 1h bars"):
        run.decide(frame.resample("4h").agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                             "volume": "sum"}))


def test_gymnasium_ids(frame: pd.DataFrame) -> None:
    import himari.env.registration  # noqa: F401  (registers the ids)

    env = gymnasium.make("himari/Trading-v0", data=frame, window=8, episode_length=64)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    total = 0.0
    for _ in range(64):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        total += reward
        if terminated or truncated:
            break
    assert truncated and np.isfinite(total)
    vec = gymnasium.make_vec("himari/BTCUSDT-v0", num_envs=3, start="2023-01-01", end="2023-03-01", window=8)
    obs, _ = vec.reset(seed=0)
    assert obs.shape[0] == 3 and type(vec.unwrapped).__name__ == "HimariVectorEnv"
    assert "himari/SOLUSDT-v0" in gymnasium.registry


def test_gym_env_on_a_fitted_pipeline(run_dir: Path) -> None:
    from himari.env.registration import make_env
    from himari.errors import LeakageError

    env = gymnasium.make("himari/BTCUSDT-v0", start="2022-06-01", end="2022-09-01", tactical=run_dir, window=4)
    market = env.unwrapped.market
    from himari.tactical.pipeline import TacticalPipeline

    assert market.num_features == len(TacticalPipeline.load(run_dir / "bundle" / "tactical" / "BTCUSDT").feature_names)
    posterior = np.asarray(market.regime_posterior)[100:]  # the fitted HMM's, not the basic features' uniform 0.25
    assert not np.allclose(posterior, 0.25) and np.allclose(posterior.sum(axis=-1), 1.0, atol=1e-4)
    with pytest.raises(LeakageError):
        make_env("BTCUSDT", start="2022-02-01", end="2022-04-01", tactical=run_dir)
