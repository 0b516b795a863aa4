"""PPOConfig.synthetic: fit_ppo pre-trains on a generator's market fitted on the training range only, then trains
on real data; the walk-forward config carries every method of issue 17 as overrides."""

from __future__ import annotations

import numpy as np
import pytest

from himari.agents.ppo.config import PPOConfig
from himari.agents.training import prepare_training_data
from himari.backtest.variants import merge_overrides
from himari.backtest.wfo import WFOConfig
from himari.data.generators import SyntheticSourceConfig
from himari.env.sim import SimConfig
from himari.errors import ConfigError
from himari.training.ppo import fit_ppo
from himari.training.synthetic import synthetic_source_market


@pytest.fixture(scope="module")
def data(btc_bars):
    return prepare_training_data([btc_bars], "2021-05-01", "2021-07-01", "2021-07-15", warmup_bars=600)


def test_source_market_uses_the_training_range_only(data) -> None:
    source = SyntheticSourceConfig(method="tabddpm", size="tiny", n_bars=1500)
    market = data.market
    syn = synthetic_source_market(source, market, data.train_range, seed=0)
    assert syn.num_bars == 1500 and syn.feature_names == market.feature_names and syn.valid.mean() > 0.5
    # changing bars after the training range changes nothing
    _lo, hi = data.train_range
    future = market.slice(0, hi)
    again = synthetic_source_market(source, future, data.train_range, seed=0)
    np.testing.assert_array_equal(again.close, syn.close)
    other = synthetic_source_market(source, market, data.train_range, seed=1)
    assert not np.array_equal(other.close, syn.close)
    with pytest.raises(ConfigError, match="features"):
        synthetic_source_market(source.replace(tactical={"include_filters": False}), market, data.train_range, 0)


def test_fit_ppo_pretrains_then_trains_on_real_data(data) -> None:
    sim = SimConfig.parse({"action_kind": "discrete", "window": 1, "episode_length": 64})
    base = {"total_steps": 256, "n_steps": 16, "n_minibatches": 2, "n_epochs": 1}
    plain, plain_result = fit_ppo("mlp", data.market, sim, PPOConfig.parse(base), train_range=data.train_range,
                                  seed=0, num_envs=8, progress=False)
    synthetic = {"method": "mjd", "n_bars": 1500, "steps_fraction": 1.0}
    pre, pre_result = fit_ppo("mlp", data.market, sim, PPOConfig.parse({**base, "synthetic": synthetic}),
                              train_range=data.train_range, seed=0, num_envs=8, progress=False)
    assert pre_result.global_step == plain_result.global_step  # the real-data budget is unchanged
    a, b = plain.module.state_dict(), pre.module.state_dict()
    assert not all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_walk_forward_overrides_of_every_method() -> None:
    base = {"test_start": "2022-01-01", "test_end": "2022-02-01"}
    for overrides in ({"tactical": {"autoencoder": {}}}, {"ppo": {"obs_augment": {"jitter": 0.02}}},
                      {"ppo": {"synthetic": {"method": "timegan"}}},
                      {"ppo": {"synthetic": {"method": "tabddpm", "crisis_boost": 3}}}):
        WFOConfig.parse(merge_overrides(base, overrides))
    for bad in ({"tactical": {"autoencoder": {"window": -1}}}, {"ppo": {"obs_augment": {"jitter": 5}}},
                {"ppo": {"synthetic": {"method": "vae"}}}):
        with pytest.raises(ConfigError):
            WFOConfig.parse(merge_overrides(base, bad))
