"""Regime multipliers for position size, as an expectation under the regime posterior, with hysteresis.

``m_t = Σ_k P(regime_t = k | data <= t) · m_k`` with defaults m = (LOW_VOL 1.0, TRENDING 1.2, HIGH_VOL 0.6,
CRISIS 0.2). Using the expectation rather than the arg-max regime already avoids jumps when two regimes are close;
on top of it a dead band keeps the applied multiplier unchanged until the expectation has moved by at least
``deadband`` from it, so the size does not flap with posterior noise. The applied value is therefore always within
``deadband`` of the current expectation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from himari.errors import ConfigError


def expected_multiplier(regime_posterior: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """(A, R) posterior · (R,) multipliers -> (A,) expected multiplier."""
    return np.asarray(regime_posterior, dtype=np.float64) @ np.asarray(multipliers, dtype=np.float64)


def deadband_update(held: np.ndarray, target: np.ndarray, deadband: float) -> np.ndarray:
    """Move ``held`` to ``target`` where they differ by at least ``deadband`` (or ``held`` is NaN); keep it otherwise."""
    move = ~np.isfinite(held) | (np.abs(target - held) >= deadband)
    return np.where(move, target, held)


class RegimeMultiplier:
    """Stateful regime multiplier with dead-band hysteresis (state: the held multiplier per asset)."""

    def __init__(self, multipliers: tuple[float, ...], n_assets: int, deadband: float = 0.1) -> None:
        self.multipliers = np.asarray(multipliers, dtype=np.float64)
        self.n_assets = int(n_assets)
        self.deadband = float(deadband)
        self.held = np.full(self.n_assets, np.nan)

    def __call__(self, regime_posterior: np.ndarray) -> np.ndarray:
        target = expected_multiplier(regime_posterior, self.multipliers)
        self.held = deadband_update(self.held, target, self.deadband)
        return self.held.copy()

    def peek(self, regime_posterior: np.ndarray) -> np.ndarray:
        """The multiplier the next call would return, without changing the state."""
        return deadband_update(
            self.held, expected_multiplier(regime_posterior, self.multipliers), self.deadband
        )

    def state_dict(self) -> dict[str, Any]:
        return {"held": [None if not np.isfinite(v) else float(v) for v in self.held]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        held = np.array([np.nan if v is None else v for v in state["held"]], dtype=np.float64)
        if held.shape != (self.n_assets,):
            raise ConfigError(f"regime multiplier state has {held.size} assets, expected {self.n_assets}")
        self.held = held
