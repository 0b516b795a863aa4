"""Monitoring assets: the Grafana dashboard JSON and Prometheus alert rules for ``himari serve`` / ``himari paper``."""
