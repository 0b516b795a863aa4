"""Shared training-data preparation: fit on train only, validation uses the train-fitted pipeline, no later data."""

from __future__ import annotations

import numpy as np
import pytest

from himari.agents.training import prepare_training_data
from himari.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    return prepare_training_data(["BTCUSDT"], "2022-01-01", "2022-03-01", "2022-03-15", warmup_bars=600)


def test_windows_and_ranges(data) -> None:
    m = data.market
    lo, hi = data.train_range
    vlo, vhi = data.val_range
    ts = m.timestamps_ns
    assert hi == vlo and vhi == m.num_bars
    assert ts[lo] >= np.datetime64("2022-01-01", "ns").astype(np.int64)
    assert ts[hi - 1] < np.datetime64("2022-03-01", "ns").astype(np.int64) <= ts[hi]
    assert ts[-1] < np.datetime64("2022-03-15", "ns").astype(np.int64)  # nothing at/after val_end is loaded
    assert lo == 600  # warm-up history before train_start
    fit = data.pipelines["BTCUSDT"].fit_window.to_dict()
    assert fit["end"].startswith("2022-03-01")
    assert m.valid[lo:].all()  # features warmed up by the history


def test_validation_features_do_not_depend_on_later_bars(data) -> None:
    """Adding bars after val_end changes nothing in the prepared market (causal transform, train-only fit)."""
    longer = prepare_training_data(["BTCUSDT"], "2022-01-01", "2022-03-01", "2022-04-01", warmup_bars=600)
    n = data.market.num_bars
    np.testing.assert_array_equal(longer.market.features[:n], data.market.features)
    np.testing.assert_array_equal(longer.market.regime_posterior[:n], data.market.regime_posterior)


def test_bad_windows_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="after train_start"):
        prepare_training_data(["BTCUSDT"], "2022-03-01", "2022-01-01", "2022-04-01")
    with pytest.raises(ConfigError, match="val_end"):
        prepare_training_data(["BTCUSDT"], "2022-01-01", "2022-03-01", "2022-02-01")
