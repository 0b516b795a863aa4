"""Synthetic markets for the simulator tests (small, seeded, with listing dates, gaps and invalid rows)."""

from __future__ import annotations

import numpy as np

from himari.env.market import MarketData

HOUR_NS = 3600 * 10**9


def random_prices(
    rng: np.random.Generator, t_len: int, n_assets: int, vol: float = 0.01
) -> tuple[np.ndarray, ...]:
    """OHLC (T, A) from a log random walk with a small open gap to the previous close."""
    r = rng.normal(0.0, vol, (t_len, n_assets))
    close = 100.0 * np.exp(np.cumsum(r, axis=0))
    prev = np.vstack([close[:1], close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, vol / 10, (t_len, n_assets)))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0, vol, (t_len, n_assets)))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0, vol, (t_len, n_assets)))
    return open_, high, low, close


def make_market(
    seed: int = 0,
    t_len: int = 400,
    n_assets: int = 1,
    n_features: int = 3,
    messy: bool = False,
    vol: float = 0.01,
) -> MarketData:
    """A synthetic market; ``messy`` adds a late listing (asset 1), a missing bar, a time-axis gap and invalid rows."""
    rng = np.random.default_rng(seed)
    o, h, lo, c = random_prices(rng, t_len, n_assets, vol)
    ts = np.arange(t_len, dtype=np.int64) * HOUR_NS
    feats = rng.normal(size=(t_len, n_assets, n_features)).astype(np.float32)
    post = rng.dirichlet(np.ones(4), size=(t_len, n_assets)).astype(np.float32)
    valid = np.ones((t_len, n_assets), dtype=bool)
    if messy:
        ts[t_len // 2 :] += 5 * HOUR_NS  # a gap in the whole time axis
        valid[t_len // 3 : t_len // 3 + 4] = False  # invalid (warm-up-like) rows
        if n_assets > 1:
            for arr in (o, h, lo, c):
                arr[: t_len // 4, 1] = np.nan  # asset 1 lists late
                arr[t_len // 5 * 3, 1] = np.nan  # one missing bar in asset 1
    return MarketData.from_arrays(
        ts, o, h, lo, c, features=feats, regime_posterior=post, valid=valid, timeframe="1h"
    )
