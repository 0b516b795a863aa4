"""The market generators side by side: ``mjd`` (Merton jump-diffusion + GARCH(1,1) + regime chain,
:mod:`himari.data.synth`, calibrated on the fit bars by :mod:`himari.data.calibrate`), ``timegan``
(:mod:`himari.data.timegan`) and ``tabddpm`` (:mod:`himari.data.tabddpm`), and the typed config of a synthetic
pre-training source (``PPOConfig.synthetic``). The orchestration that needs regime labels and tactical features
(fit on bars, generate bars, build a synthetic market) is :mod:`himari.training.synthetic`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from himari.config import FrozenConfig

METHODS: tuple[str, ...] = ("mjd", "timegan", "tabddpm")
Method = Literal["mjd", "timegan", "tabddpm"]
Size = Literal["tiny", "small", "medium", "large"]


class SyntheticSourceConfig(FrozenConfig):
    """Synthetic pre-training of a PPO run: a generator of ``method`` fitted on the run's training range only, a
    synthetic market of ``n_bars`` from it (seen through a tactical pipeline fitted on the synthetic bars), PPO
    pre-training on it for ``steps_fraction · total_steps`` steps, then the run's usual training on real data from
    the pre-trained weights (the real-data budget is unchanged)."""

    method: Method = "timegan"
    steps_fraction: float = Field(0.5, gt=0.0, le=10.0)
    n_bars: int = Field(6000, ge=1500, le=1_000_000)
    size: Size = "small"
    crisis_boost: float = Field(
        1.0, gt=0.0, le=100.0, description="tabddpm: entries into the CRISIS regime multiplied by this (rare states)")
    seed: int = 0
    tactical: dict[str, Any] = Field(
        default_factory=dict, description="TacticalConfig overrides of the pipeline fitted on the synthetic bars "
        "(must give the run's feature names)")
    max_fit_bars: int = Field(8760, ge=500, description="the generator learns from the last bars of the range")


def generator_config(method: str, size: Size = "small") -> Any:
    """The default config of ``method`` at ``size``."""
    if method == "timegan":
        from himari.data.timegan import TimeGANConfig

        return TimeGANConfig.preset(size)
    if method == "tabddpm":
        from himari.data.tabddpm import TabDDPMConfig

        return TabDDPMConfig.preset(size)
    from himari.errors import ConfigError

    raise ConfigError(f"generator method {method!r} has no network config; known learned methods: timegan, tabddpm")


__all__ = ["METHODS", "SyntheticSourceConfig", "generator_config"]
