"""Fixtures for the offline-model tests: a small real simulator market (BTC bars, basic causal features)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from himari.data.bars import Bars
from himari.env.market import MarketData
from himari.env.protocol import ACCOUNT_FIELDS, REGIME_NAMES, Observation
from himari.env.sim import SimConfig, SimVecEnv

requires_llm = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None or importlib.util.find_spec("transformers") is None,
    reason="FLAG-TRADER needs the llm extra (transformers, peft)",
)


@pytest.fixture(scope="module")
def small_market(btc_recent: Bars) -> MarketData:
    """Three months of real BTC hourly bars with the simulator's basic causal feature set."""
    return MarketData.from_frames([btc_recent.between("2022-01-01", "2022-04-01")])


@pytest.fixture
def small_env(small_market: MarketData) -> SimVecEnv:
    cfg = SimConfig(window=8, episode_length=64)
    return SimVecEnv(small_market, cfg, num_envs=6, seed=3, start_index=0, end_index=1500)


def random_obs(rng: np.random.Generator, n: int, window: int, n_assets: int, n_features: int) -> Observation:
    regime = rng.dirichlet(np.ones(len(REGIME_NAMES)), size=(n, window, n_assets)).astype(np.float32)
    return Observation(
        rng.normal(size=(n, window, n_assets, n_features)).astype(np.float32),
        regime,
        (rng.normal(size=(n, n_assets, len(ACCOUNT_FIELDS))) * 0.1).astype(np.float32),
    )
