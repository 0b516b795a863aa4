"""HIMARI: regime-aware trading policies for crypto markets.

Layers depend one way: data <- features <- regime <- env <- agents <- sizing <- risk <- backtest/report <- serve/paper.
"""

__version__ = "0.1.0"
