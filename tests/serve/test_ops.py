"""The Grafana dashboard and alert rules only query metrics the server and paper loop export."""

from __future__ import annotations

import json
import re
from importlib import resources

import yaml

from himari.ops.metrics import Metrics


def _exported_sample_names() -> set[str]:
    m = Metrics()
    m.set_model("m", "1")
    m.observe_decision({"symbols": ["BTCUSDT"], "actions": ["LONG"], "target_position": [0.5],
                        "gates": [{"name": "drawdown", "scale": [0.5], "reason": "x"}],
                        "regime_posterior": [[0.1, 0.2, 0.3, 0.4]]}, 0.001, {"BTCUSDT": 0.0}, now_s=10.0)
    m.observe_account("champion", 1.0, 0.0)
    m.fills.labels(stream="champion", side="buy").inc()
    m.errors.labels(kind="data").inc()
    m.cache.labels(result="none").inc()
    m.requests.labels(route="/v1/decide", status="200").inc()
    m.request_latency.labels(route="/v1/decide", status="200").observe(0.001)
    text = m.render()[0].decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bhimari_[a-z_]+", expr))


def test_dashboard_queries_exported_metrics() -> None:
    text = resources.files("himari.ops").joinpath("grafana_dashboard.json").read_text()
    dashboard = json.loads(text)
    exported = _exported_sample_names()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used <= exported, used - exported
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for needed in ("equity", "drawdown", "latency", "risk gate", "staleness", "regime", "decisions by action"):
        assert needed in titles


def test_alert_rules_are_well_formed_and_use_exported_metrics() -> None:
    rules = yaml.safe_load(resources.files("himari.ops").joinpath("alerts.yml").read_text())
    exported = _exported_sample_names()
    items = rules["groups"][0]["rules"]
    assert {r["alert"] for r in items} >= {"HimariDecisionLatencyHigh", "HimariDataStale", "HimariDrawdownHigh"}
    for rule in items:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert _metric_names(rule["expr"]) <= exported, rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
