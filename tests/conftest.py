"""Shared test fixtures. Tests use explicit seeds and one torch thread per worker."""

from __future__ import annotations

import os

os.environ.setdefault("HIMARI_NO_PROGRESS", "1")
os.environ.setdefault("HIMARI_TORCH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

from himari.data.bars import Bars
from himari.data.loaders import load_bars


@pytest.fixture(scope="session")
def btc_bars() -> Bars:
    """The bundled real BTCUSDT hourly bars (2017-08 .. 2024-12)."""
    return load_bars("BTCUSDT")


@pytest.fixture(scope="session")
def btc_recent(btc_bars: Bars) -> Bars:
    """BTCUSDT 2022-01-01 .. 2023-07-01: enough for quick end-to-end tests."""
    return btc_bars.between("2022-01-01", "2023-07-01")
