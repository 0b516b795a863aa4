"""Operations: the inference API server (FastAPI), its auth, schemas, Prometheus metrics and dashboard page.

The server decides through :class:`himari.trading.engine.DecisionEngine`, the same code path as backtests and paper
trading, so what was evaluated is what runs. See :func:`himari.serve.app.create_app`.
"""
