"""Per-request decisions with the market data memoized per bar history.

Building the market (each symbol's fitted tactical pipeline over the trailing history: 44 features, filters,
normalizers, the HMM forward filter) is the expensive part of a decision and depends only on the bars. The decider
keeps the last few markets keyed by a digest of the bars (timestamps and OHLCV bytes of every symbol), so a bar
history is transformed once however many requests (and accounts) ask about it; each request then runs only
``DecisionEngine.decide_at`` (observation -> policy forward -> sizing -> risk). That is exactly the body of
``DecisionEngine.decide`` with ``build_market`` cached, so served decisions equal the engine's.

Decisions are memoized too, keyed by the bars digest and the account: asking again about the same bar with the same
account returns the same decision (an API answer for bar t must not drift because the risk layer's hysteresis or
budget state advanced on a previous identical request). The risk state therefore advances once per distinct
(bars, account), as it advances once per bar in backtests and paper trading.

Engines without ``build_market``/``decide_at`` (test doubles) are called through ``decide``.

Thread safety: the API calls :meth:`Decider.decide` from several worker threads. Building a market (the fitted
pipelines' ``transform``, the expensive part) runs concurrently; the caches and the stateful part of the engine
(``decide_at``: policy, sizing and risk state) run under one lock, so decisions are made one at a time, in a
definite order, exactly as by a single thread.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from himari.data.bars import Bars
from himari.trading.history import symbol_digest


def bars_digest(bars_by_symbol: Mapping[str, Bars], symbols: tuple[str, ...],
                known: Mapping[str, bytes] | None = None) -> bytes:
    """Digest of every symbol's bars in model order (``known`` holds digests already computed, e.g. kept bars)."""
    parts = [(known or {}).get(s) or symbol_digest(bars_by_symbol[s]) for s in symbols]
    return b"".join(parts)


def account_digest(account: Any | None) -> bytes:
    """Digest of an ``AccountSnapshot``'s fields (b"" for no account)."""
    if account is None:
        return b""
    h = hashlib.blake2b(digest_size=16)
    for name in ("equity", "peak_equity", "position", "entry_price", "time_in_position"):
        value = np.asarray(getattr(account, name, np.nan))
        h.update(name.encode())
        h.update(str(value.dtype).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.digest()


class Decider:
    """``decide(bars_by_symbol, account) -> (Decision, cache)`` with LRUs of built markets and of decisions.

    ``cache`` is ``"decision"`` (same bars and account seen before), ``"market"`` (same bars, new account) or
    ``"none"`` (market built for this request).
    """

    def __init__(
        self, engine: Any, symbols: tuple[str, ...], cache_size: int = 8, decision_cache_size: int = 1024
    ) -> None:
        self.engine = engine
        self.symbols = symbols
        self.cache_size = int(cache_size)
        self.decision_cache_size = int(decision_cache_size)
        self._markets: OrderedDict[bytes, Any] = OrderedDict()
        self._decisions: OrderedDict[tuple[bytes, bytes], tuple[Any, dict[str, Any]]] = OrderedDict()
        self._cacheable = all(hasattr(engine, name) for name in ("build_market", "decide_at", "policy"))
        self._lock = threading.Lock()

    def decide(
        self, bars_by_symbol: Mapping[str, Bars], account: Any | None, digests: Mapping[str, bytes] | None = None
    ) -> tuple[Any, str, dict[str, Any]]:
        """(decision, cache source, a fresh shallow copy of ``decision.to_dict()``)."""
        if not self._cacheable or self.cache_size <= 0:
            with self._lock:
                decision = self.engine.decide(dict(bars_by_symbol), account)
                return decision, "none", decision.to_dict()
        key = bars_digest(bars_by_symbol, self.symbols, digests)
        decision_key = (key, account_digest(account))
        with self._lock:
            if self.decision_cache_size > 0:
                cached = self._decisions.get(decision_key)
                if cached is not None:
                    self._decisions.move_to_end(decision_key)
                    return cached[0], "decision", dict(cached[1])
            market = self._markets.get(key)
            if market is not None:
                self._markets.move_to_end(key)
        source = "market" if market is not None else "none"
        if market is None:
            # outside the lock: transforms of different bar histories run concurrently (pure functions of the bars)
            market = self.engine.build_market(bars_by_symbol, getattr(self.engine, "history_bars", None))
        snapshot = account
        if snapshot is None:
            from himari.trading.engine import AccountSnapshot

            snapshot = AccountSnapshot.flat(len(self.symbols))
        with self._lock:
            if key not in self._markets:
                self._markets[key] = market
                if len(self._markets) > self.cache_size:
                    self._markets.popitem(last=False)
            if self.decision_cache_size > 0:
                cached = self._decisions.get(decision_key)  # decided by another thread meanwhile
                if cached is not None:
                    return cached[0], "decision", dict(cached[1])
            decision, _ = self.engine.decide_at(
                market, market.num_bars - 1, snapshot, self.engine.policy.initial_state(1)
            )
            payload = decision.to_dict()
            if self.decision_cache_size > 0:
                self._decisions[decision_key] = (decision, payload)
                if len(self._decisions) > self.decision_cache_size:
                    self._decisions.popitem(last=False)
        return decision, source, dict(payload)


def self_check(engine: Any, symbols: tuple[str, ...], timeframe: Any, n_bars: int, seed: int = 0) -> None:
    """Decide once on a seeded random walk of ``n_bars`` bars per symbol; ConfigError unless the engine answers
    with finite targets. ``himari serve`` runs it before listening: a bundle that cannot decide is not served."""
    import math

    from himari.data.timeframe import Timeframe
    from himari.errors import ConfigError, HimariError
    from himari.utils.seeding import make_rng

    tf = Timeframe.parse(timeframe)
    rng = make_rng(seed)
    start_ns = 1_704_067_200_000_000_000  # 2024-01-01T00:00Z
    ts = start_ns + np.arange(n_bars, dtype=np.int64) * tf.nanoseconds
    bars = {}
    for symbol in symbols:
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n_bars)))
        open_ = np.concatenate([[100.0], close[:-1]])
        high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.005, n_bars))
        low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.005, n_bars))
        volume = rng.uniform(1.0, 10.0, n_bars)
        bars[symbol] = Bars.from_arrays(ts, open_, high, low, close, volume, symbol=symbol, timeframe=tf,
                                        source="self-check")
    try:
        payload = engine.decide(bars, None).to_dict()
    except HimariError as exc:
        raise ConfigError(f"the bundle cannot decide on a synthetic market: {exc}") from None
    targets = payload.get("target_position", [])
    values = list(targets.values()) if isinstance(targets, dict) else list(np.ravel(targets))
    if not values or not all(math.isfinite(float(v)) for v in values):
        raise ConfigError(f"the bundle cannot decide: non-finite target positions {values[:4]}")
