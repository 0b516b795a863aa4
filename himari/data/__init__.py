"""Data layer: the canonical OHLCV bars, loaders, validation, splits, bundled data, synthetic markets."""

from himari.data.bars import Bars
from himari.data.loaders import load_bars
from himari.data.timeframe import Timeframe

__all__ = ["Bars", "Timeframe", "load_bars"]
