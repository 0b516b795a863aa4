"""The default dataset shipped inside the package.

Real Binance spot hourly OHLCV for BTC/USDT, ETH/USDT and SOL/USDT through 2024-12-31 (provenance, sources and
checks in ``himari/data/datasets/PROVENANCE.md``). Refer to them by name: ``BTCUSDT``, ``ETHUSDT``, ``SOLUSDT``
(or ``bundled:BTCUSDT``) wherever a data path is accepted.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED_SYMBOLS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
DEFAULT_SYMBOL = "BTCUSDT"


def bundled_path(symbol: str = DEFAULT_SYMBOL) -> Path:
    name = symbol.upper().replace("/", "").replace("BUNDLED:", "")
    if name not in BUNDLED_SYMBOLS:
        from himari.errors import DataError

        raise DataError(f"no bundled dataset {symbol!r}; bundled: {', '.join(BUNDLED_SYMBOLS)}")
    return Path(str(resources.files("himari.data").joinpath("datasets", f"{name}-1h.csv.gz")))


def resolve_data_path(spec: str | Path) -> Path:
    """A file path as given, or the bundled file for ``BTCUSDT`` / ``bundled:BTCUSDT`` when no such file exists."""
    text = str(spec)
    path = Path(text)
    if path.exists():
        return path
    key = text.upper().replace("BUNDLED:", "").replace("/", "")
    if text.lower().startswith("bundled:") or key in BUNDLED_SYMBOLS:
        return bundled_path(key)
    return path
