"""Bar timeframes ("1m", "15m", "1h", "4h", "1d", "1w") and annualization.

Crypto trades around the clock, so a year has 365 days of bars: 8760 bars of 1h, 2190 of 4h, 365 of 1d.
Annualization everywhere derives from the bar timeframe; nothing hard-codes 252 or 8760.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from himari.errors import ConfigError

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SECONDS_PER_YEAR = 365 * 86400


@dataclass(frozen=True)
class Timeframe:
    """A bar length, e.g. ``Timeframe.parse("1h")``."""

    seconds: int

    @classmethod
    def parse(cls, text: str | Timeframe) -> Timeframe:
        if isinstance(text, Timeframe):
            return text
        match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(text))
        if not match or int(match.group(1)) <= 0:
            raise ConfigError(f"invalid timeframe {text!r}: expected e.g. 1m, 15m, 1h, 4h, 1d")
        return cls(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])

    @classmethod
    def from_seconds(cls, seconds: int) -> Timeframe:
        if seconds <= 0:
            raise ConfigError(f"invalid timeframe of {seconds} s")
        return cls(int(seconds))

    @property
    def nanoseconds(self) -> int:
        return self.seconds * 1_000_000_000

    @property
    def periods_per_year(self) -> float:
        """Bars per year (365 days, markets open 24/7)."""
        return SECONDS_PER_YEAR / self.seconds


    def __str__(self) -> str:
        for unit in ("w", "d", "h", "m"):
            size = _UNIT_SECONDS[unit]
            if self.seconds % size == 0:
                return f"{self.seconds // size}{unit}"
        return f"{self.seconds}s"
