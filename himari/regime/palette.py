"""The regime colours: one palette for every plot of regimes (``himari regime label`` PNGs, the HTML report, the
dashboard), so a colour means the same regime everywhere.

Kept free of imports beyond the regime names so that any layer above ``himari.regime`` (report, serve) can use it.
"""

from __future__ import annotations

REGIME_PALETTE_NAMES: tuple[str, ...] = ("LOW_VOL", "TRENDING", "HIGH_VOL", "CRISIS")  # == labeller.REGIME_NAMES

# Colour per regime, in REGIME_NAMES order: calm blue, trending green, high-volatility orange, crisis red.
REGIME_COLOURS: tuple[str, ...] = ("#2b8cbe", "#31a354", "#fd8d3c", "#de2d26")
REGIME_COLOUR_BY_NAME: dict[str, str] = dict(zip(REGIME_PALETTE_NAMES, REGIME_COLOURS, strict=True))
UNKNOWN_REGIME_COLOUR = "#d9d9d9"
