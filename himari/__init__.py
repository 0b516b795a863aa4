"""HIMARI: regime-aware trading policies for crypto markets.

Layers depend one way: data <- features <- regime <- env <- agents <- sizing <- risk <- backtest/report <- serve/paper.

The short Python API (:mod:`himari.api`) is importable from here; it loads lazily, so ``import himari`` (and the
CLI's start) stays fast: ``himari.load_run(path).decide(frame)``, ``himari.features_frame(frame)``,
``himari.regimes_frame(frame, model=...)``, ``himari.as_bars(frame)``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("load_run", "Run", "features_frame", "regimes_frame", "as_bars")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:  # PEP 562: the API's imports (pandas, torch) only when first used
    if name in _API:
        from himari import api

        return getattr(api, name)
    raise AttributeError(f"module 'himari' has no attribute {name!r}")
