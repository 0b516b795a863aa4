"""Backtesting: decision engine, backtester, walk-forward optimization, metrics, statistics and baselines."""
