"""Synthetic bars for feature / regime tests (explicit seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from himari.data.bars import Bars


def synthetic_bars(n: int = 3000, seed: int = 0, gaps: tuple[int, ...] = (), start: str = "2020-01-01") -> Bars:
    """Hourly OHLCV from a random walk with two volatility regimes; ``gaps`` drops those bar indices (each leaves a
    one-hour hole in the timestamps)."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n) // 500) % 2 == 0, 0.004, 0.015)
    drift = np.where((np.arange(n) // 700) % 3 == 1, 0.0008, 0.0)
    r = drift + vol * rng.standard_t(5, size=n) / np.sqrt(5 / 3)
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.empty(n)
    open_[0] = 100.0
    open_[1:] = close[:-1] * np.exp(rng.normal(0, 1e-4, n - 1))
    spread = np.abs(rng.normal(0, 1, (2, n))) * vol * close * 0.5
    high = np.maximum(open_, close) + spread[0]
    low = np.minimum(open_, close) - spread[1]
    volume = rng.lognormal(3.0, 0.5, n) * (1.0 + 5.0 * np.abs(r))
    ts = pd.date_range(start, periods=n, freq="1h", tz="UTC")
    keep = np.ones(n, dtype=bool)
    keep[list(gaps)] = False
    return Bars.from_arrays(ts[keep], open_[keep], high[keep], low[keep], close[keep], volume[keep], "SYN", "1h")
