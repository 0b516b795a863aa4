"""Paper trading: bar feeds (replay, ccxt), the crash-safe SQLite store, the paper loop and shadow A/B comparison.

The loop drives :class:`himari.trading.session.TradingSession` (the backtester's own decision and execution path)
one closed bar at a time and commits each bar, with the session state, in a single SQLite transaction.
"""
