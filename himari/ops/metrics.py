"""Prometheus metrics shared by the API server and the paper loop (one registry per process or app, no globals).

Names (all prefixed ``himari_``), used by the Grafana dashboard and alert rules in :mod:`himari.ops`:

- ``decision_latency_seconds`` (histogram): time inside the decision engine per decision;
- ``http_request_duration_seconds`` (histogram, by route and status) and ``http_requests_total``;
- ``decisions_total`` (counter, by symbol and action HOLD/LONG/SHORT);
- ``exposure`` (gauge, by symbol: final target position as a fraction of equity) and ``gross_exposure``;
- ``equity``, ``drawdown`` (gauges, by stream: the API's caller account or the paper loop's champion/shadow);
- ``risk_gate_activations_total`` (counter, by gate: the gate scaled the position below 1);
- ``data_staleness_seconds`` (gauge, by symbol: wall time since the last bar closed, at decision time);
- ``regime_probability`` (gauge, by symbol and regime) and ``model_info`` (model id and version);
- ``fills_total`` (paper: by stream and side), ``errors_total`` (by kind);
- ``http_rejected_total`` (503 + Retry-After, by reason: queue_full, timeout) and ``worker_pool_pending`` /
  ``worker_pool_capacity`` / ``worker_pool_workers`` (the API's bounded worker pool).

- ``gc_pause_seconds`` (histogram, by generation) and ``gc_pause_max_seconds`` (gauge, by generation): the garbage
  collector's pauses while this process served (:meth:`Metrics.watch_gc`): a collection holds the GIL, so a pause
  delays every thread, ``/health`` on the event loop included.

``http_requests_total`` counts the status each client was actually sent (``client_closed`` when it left first).
"""

from __future__ import annotations

import gc
import math
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
REGIME_NAMES_DEFAULT = ("LOW_VOL", "TRENDING", "HIGH_VOL", "CRISIS")


def per_symbol(value: Any, symbols: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A per-symbol field of a decision as ``{symbol: value}`` whether it is a mapping, a list or a scalar."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list | tuple) and len(value) == len(symbols):
        return dict(zip(symbols, value, strict=True))
    return {s: value for s in symbols}


def regime_probabilities(
    posterior: Any, regime_names: tuple[str, ...] = REGIME_NAMES_DEFAULT
) -> dict[str, float]:
    """A regime posterior (mapping name -> p, or a list in ``regime_names`` order) as ``{name: p}``."""
    if isinstance(posterior, Mapping):
        return {str(k): float(v) for k, v in posterior.items()}
    if isinstance(posterior, list | tuple) and len(posterior) == len(regime_names):
        return {name: float(p) for name, p in zip(regime_names, posterior, strict=True)}
    return {}


class Metrics:
    """The metric families, registered on their own :class:`CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decision_latency = Histogram(
            "himari_decision_latency_seconds",
            "Time in the decision engine per decision",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.request_latency = Histogram(
            "himari_http_request_duration_seconds",
            "HTTP request duration",
            ["route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.requests = Counter("himari_http_requests", "HTTP requests", ["route", "status"], registry=r)
        self.decisions = Counter("himari_decisions", "Decisions by action", ["symbol", "action"], registry=r)
        self.exposure = Gauge(
            "himari_exposure", "Target position (fraction of equity)", ["symbol"], registry=r
        )
        self.gross_exposure = Gauge("himari_gross_exposure", "Sum of |target position|", registry=r)
        self.equity = Gauge("himari_equity", "Account equity", ["stream"], registry=r)
        self.drawdown = Gauge("himari_drawdown", "Drawdown from peak equity (0..1)", ["stream"], registry=r)
        self.gate_activations = Counter(
            "himari_risk_gate_activations", "Risk gate scaled the position below 1", ["gate"], registry=r
        )
        self.staleness = Gauge(
            "himari_data_staleness_seconds",
            "Seconds since the last bar closed, at decision time",
            ["symbol"],
            registry=r,
        )
        self.regime_probability = Gauge(
            "himari_regime_probability",
            "Regime posterior of the last decision",
            ["symbol", "regime"],
            registry=r,
        )
        self.model_info = Gauge(
            "himari_model_info", "Loaded model", ["model_id", "model_version"], registry=r
        )
        self.fills = Counter("himari_fills", "Paper fills", ["stream", "side"], registry=r)
        self.errors = Counter("himari_errors", "Errors by kind", ["kind"], registry=r)
        self.cache = Counter(
            "himari_decision_cache",
            "Decisions by memo: decision (same bars and account), market (same bars), none (built)",
            ["result"],
            registry=r,
        )
        self.rejected = Counter(
            "himari_http_rejected",
            "Requests answered 503 + Retry-After (queue_full: pool at capacity; timeout: not done in time)",
            ["reason"],
            registry=r,
        )
        self.pool_pending = Gauge("himari_worker_pool_pending", "Requests in the worker pool (running + waiting)",
                                  registry=r)
        self.pool_capacity = Gauge("himari_worker_pool_capacity", "Requests admitted before 503", registry=r)
        self.pool_workers = Gauge("himari_worker_pool_workers", "Worker threads", registry=r)
        self.last_decision_time = Gauge(
            "himari_last_decision_timestamp_seconds", "Unix time of the last decision", registry=r
        )

        self.gc_pause = Histogram("himari_gc_pause", "Garbage-collector pauses (the GIL is held)", ["generation"],
                                  buckets=LATENCY_BUCKETS_S, unit="seconds", registry=r)
        self.gc_pause_max = Gauge("himari_gc_pause_max_seconds", "Longest garbage-collector pause", ["generation"],
                                  registry=r)
        self._gc_max = [0.0, 0.0, 0.0]

    def watch_gc(self) -> None:
        """Record every garbage collection's pause in :attr:`gc_pause` / :attr:`gc_pause_max` while this object
        lives (one process-wide ``gc.callbacks`` hook, shared by all watching :class:`Metrics`)."""
        _GC_WATCHERS.add(self)
        if _gc_hook not in gc.callbacks:
            gc.callbacks.append(_gc_hook)

    def _observe_gc(self, generation: int, pause_s: float) -> None:
        self.gc_pause.labels(generation=str(generation)).observe(pause_s)
        if pause_s > self._gc_max[generation]:
            self._gc_max[generation] = pause_s
            self.gc_pause_max.labels(generation=str(generation)).set(pause_s)

    def set_model(self, model_id: str, model_version: str) -> None:
        self.model_info.labels(model_id=model_id, model_version=model_version).set(1)

    def observe_decision(
        self,
        decision: Mapping[str, Any],
        latency_s: float,
        last_bar_close_s: Mapping[str, float] | None = None,
        now_s: float | None = None,
        repeated: bool = False,
    ) -> None:
        """Record one decision (``Decision.to_dict()``): latency, actions, exposure, gates, regime, staleness.

        ``repeated``: the same decision answered again from the memo; latency, action counts and staleness are
        recorded, exposure/regime gauges are unchanged and gate activations are not counted twice.
        """
        symbols = [str(s) for s in decision.get("symbols", [])]
        self.decision_latency.observe(latency_s)
        actions = per_symbol(decision.get("actions", {}), symbols)
        for symbol, action in actions.items():
            self.decisions.labels(symbol=symbol, action=str(action)).inc()
        now = time.time() if now_s is None else now_s
        self.last_decision_time.set(now)
        for symbol, close_s in (last_bar_close_s or {}).items():
            self.staleness.labels(symbol=symbol).set(max(0.0, now - close_s))
        if repeated:
            return
        targets = per_symbol(decision.get("target_position", {}), symbols)
        gross = 0.0
        for symbol, target in targets.items():
            try:
                value = float(target)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                self.exposure.labels(symbol=symbol).set(value)
                gross += abs(value)
        self.gross_exposure.set(gross)
        for gate in decision.get("gates", []) or []:
            try:
                scale = gate.get("scale", 1.0)  # scalar or one per asset
                values = [float(v) for v in scale] if isinstance(scale, list | tuple) else [float(scale)]
                if values and min(values) < 1.0:
                    self.gate_activations.labels(gate=str(gate.get("name", "?"))).inc()
            except (TypeError, ValueError, AttributeError):
                continue
        posteriors = per_symbol(decision.get("regime_posterior", {}), symbols)
        for symbol, posterior in posteriors.items():
            for regime, p in regime_probabilities(posterior).items():
                self.regime_probability.labels(symbol=symbol, regime=regime).set(p)

    def observe_account(self, stream: str, equity: float, drawdown: float) -> None:
        self.equity.labels(stream=stream).set(equity)
        self.drawdown.labels(stream=stream).set(drawdown)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_GC_WATCHERS: weakref.WeakSet[Metrics] = weakref.WeakSet()
_GC_STARTED = threading.local()


def _gc_hook(phase: str, info: dict[str, int]) -> None:
    """``gc.callbacks`` hook: time each collection (it runs in the thread that triggered it, holding the GIL)."""
    if phase == "start":
        _GC_STARTED.t = time.perf_counter()
        return
    started = getattr(_GC_STARTED, "t", None)
    if started is None:
        return
    pause = time.perf_counter() - started
    generation = int(info.get("generation", 2))
    for metrics in list(_GC_WATCHERS):
        metrics._observe_gc(generation, pause)
