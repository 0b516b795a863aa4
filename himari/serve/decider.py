"""Per-request decisions with the market data memoized per bar history.

Building the market (each symbol's fitted tactical pipeline over the trailing history: 44 features, filters,
normalizers, the HMM forward filter) is the expensive part of a decision and depends only on the bars. The decider
keeps the last few markets keyed by a digest of the bars (timestamps and OHLCV bytes of every symbol), so a bar
history is transformed once however many requests (and accounts) ask about it; each request then runs only
``DecisionEngine.decide_at`` (observation -> policy forward -> sizing -> risk). That is exactly the body of
``DecisionEngine.decide`` with ``build_market`` cached, so served decisions equal the engine's.

Engines without ``build_market``/``decide_at`` (test doubles) are called through ``decide``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from himari.data.bars import Bars


def bars_digest(bars_by_symbol: Mapping[str, Bars], symbols: tuple[str, ...]) -> bytes:
    """BLAKE2b digest of every symbol's timestamps and OHLCV values (order-sensitive, content-exact)."""
    h = hashlib.blake2b(digest_size=20)
    for symbol in symbols:
        bars = bars_by_symbol[symbol]
        h.update(symbol.encode())
        h.update(np.ascontiguousarray(bars.timestamps_ns).tobytes())
        h.update(np.ascontiguousarray(bars.frame.to_numpy(dtype=np.float64)).tobytes())
    return h.digest()


class Decider:
    """``decide(bars_by_symbol, account) -> (Decision, market_cached: bool)`` with an LRU of built markets."""

    def __init__(self, engine: Any, symbols: tuple[str, ...], cache_size: int = 8) -> None:
        self.engine = engine
        self.symbols = symbols
        self.cache_size = int(cache_size)
        self._markets: OrderedDict[bytes, Any] = OrderedDict()
        self._cacheable = all(hasattr(engine, name) for name in ("build_market", "decide_at", "policy"))
        self.hits = 0
        self.misses = 0

    def decide(self, bars_by_symbol: Mapping[str, Bars], account: Any | None) -> tuple[Any, bool]:
        if not self._cacheable or self.cache_size <= 0:
            return self.engine.decide(dict(bars_by_symbol), account), False
        key = bars_digest(bars_by_symbol, self.symbols)
        market = self._markets.get(key)
        hit = market is not None
        if market is None:
            self.misses += 1
            market = self.engine.build_market(bars_by_symbol, getattr(self.engine, "history_bars", None))
            self._markets[key] = market
            if len(self._markets) > self.cache_size:
                self._markets.popitem(last=False)
        else:
            self.hits += 1
            self._markets.move_to_end(key)
        if account is None:
            from himari.backtest.engine import AccountSnapshot

            account = AccountSnapshot.flat(len(self.symbols))
        decision, _ = self.engine.decide_at(market, market.num_bars - 1, account, self.engine.policy.initial_state(1))
        return decision, hit
