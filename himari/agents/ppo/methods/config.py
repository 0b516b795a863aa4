"""Typed configs of the optional PPO training methods (the seeds' Part K). Each is a field of
:class:`himari.agents.ppo.config.PPOConfig` that defaults to ``None`` (off); a run with every method off trains
exactly as before and has the same config hash (the trainer leaves ``None`` method fields out of it).

Switch one on through the ``ppo`` section of any run config, e.g. in a walk-forward / ``himari ablate`` variant::

    {"ppo": {"curriculum": {"measure": "volatility"}}}
    {"ppo": {"aux": {"return_weight": 0.1}}}
    {"ppo": {"adversarial": {"eps": 0.05}}}
    {"ppo": {"meta": {"tasks": 4}}}
    {"ppo": {"augment": {"rate": 0.25}}}            # needs the window's bars and tactical pipelines (see augment.py)
    {"ppo": {"rare_events": {"rate": 0.1}}}         # idem
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from himari.config import FrozenConfig


class CurriculumConfig(FrozenConfig):
    """K1: three-stage curriculum. Episode starts of the training range are ranked by a difficulty score of the
    episode's bars; stage k draws starts only from the easiest ``stage_quantiles[k]`` of them, for the fraction
    ``stage_fractions[k]`` of the updates (easy -> medium -> hard; the last stage sees every start)."""

    measure: Literal["volatility", "regime"] = Field(
        "volatility", description="volatility: mean trailing per-bar volatility over the episode's bars (assets "
        "averaged); regime: mean posterior of HIGH_VOL + CRISIS over them")
    stage_fractions: tuple[float, float, float] = (0.25, 0.25, 0.5)
    stage_quantiles: tuple[float, float, float] = (0.34, 0.67, 1.0)

    @model_validator(mode="after")
    def _check(self) -> CurriculumConfig:
        if abs(sum(self.stage_fractions) - 1.0) > 1e-9 or min(self.stage_fractions) < 0:
            raise ValueError("curriculum.stage_fractions must be >= 0 and sum to 1")
        q = self.stage_quantiles
        if not (0 < q[0] <= q[1] <= q[2] <= 1.0):
            raise ValueError("curriculum.stage_quantiles must increase within (0, 1]")
        return self


class AuxConfig(FrozenConfig):
    """K4: auxiliary heads on the policy's encoder (the input of its action head): next-bar return (standardized by
    the trailing volatility), log realized volatility over the next ``vol_horizon`` bars relative to the trailing one,
    and the regime ``regime_horizon`` bars ahead (argmax of the causal posterior). Targets are labels only (never
    inputs) and never read a bar at or after the end of the training range. Feed-forward policies only."""

    return_weight: float = Field(0.1, ge=0.0)
    volatility_weight: float = Field(0.1, ge=0.0)
    regime_weight: float = Field(0.1, ge=0.0)
    vol_horizon: int = Field(24, ge=1)
    regime_horizon: int = Field(1, ge=1)
    hidden: int = Field(32, ge=1)


class AdversarialConfig(FrozenConfig):
    """K5/K6: adversarial training. A fraction ``mix`` of every minibatch's observations is replaced by its FGSM
    (``steps=1``) or PGD attack within the L-inf ball ``eps`` (normalized feature units) before the PPO loss."""

    eps: float = Field(0.05, gt=0.0)
    steps: int = Field(1, ge=1, description="1: FGSM; > 1: PGD with step size alpha")
    alpha: float | None = Field(None, gt=0.0, description="PGD step size (default 2.5 eps / steps)")
    mix: float = Field(0.5, gt=0.0, le=1.0)
    target: Literal["features", "all"] = Field("features", description="perturb market features only, or the "
                                               "whole observation (regime posterior and account too)")


class MetaConfig(FrozenConfig):
    """K2: Reptile (first-order MAML, Nichol et al. 2018) before the main training. The training range is cut into
    ``tasks`` contiguous sub-windows; each outer iteration trains a copy of the policy for ``inner_updates`` PPO
    updates on one task (drawn with the run's seed) and moves the weights by ``outer_lr · (θ' − θ)``. The meta phase
    uses ``budget_fraction`` of the run's steps, so the main training (the adaptation) keeps the rest: the same
    total budget as plain fine-tuning."""

    tasks: int = Field(4, ge=2)
    inner_updates: int = Field(2, ge=1)
    outer_lr: float = Field(0.5, gt=0.0, le=1.0)
    budget_fraction: float = Field(0.5, gt=0.0, lt=1.0)


class AugmentConfig(FrozenConfig):
    """K3: causal data augmentation. A fraction ``rate`` of the training episodes runs on an augmented copy of the
    training bars: every bar's log-price moves relative to the previous close (open, high, low, close) scaled by one
    factor drawn per block of ``block_bars`` bars from [``vol_scale_low``, ``vol_scale_high``] (OHLC order is kept,
    each bar depends on itself and the previous close only), volume scaled by ``volume_scale`` draws; features and
    regimes are recomputed from the augmented bars by the run's fitted tactical pipelines."""

    rate: float = Field(0.25, gt=0.0, lt=1.0)
    vol_scale_low: float = Field(0.8, gt=0.0)
    vol_scale_high: float = Field(1.25, gt=0.0)
    volume_scale_low: float = Field(0.8, gt=0.0)
    volume_scale_high: float = Field(1.25, gt=0.0)
    block_bars: int = Field(168, ge=1)

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        if self.vol_scale_low > self.vol_scale_high or self.volume_scale_low > self.volume_scale_high:
            raise ValueError("augment: *_low must be <= *_high")
        return self


class RareEventConfig(FrozenConfig):
    """K8: rare-event synthesis. ``segments`` stress segments of ``segment_bars`` bars from the synthetic generator
    (families ``families`` of :mod:`himari.data.synth`; from each scenario the ``segment_bars`` window with the
lowest return, i.e. the crash / flash crash itself) are spliced into a copy of the training bars (price-continuous,
    the real bars after a segment continue from its last close); features and regimes are recomputed by the run's
    fitted tactical pipelines. A fraction ``rate`` of the training episodes runs on that copy, each covering one
    injected segment."""

    rate: float = Field(0.1, gt=0.0, lt=1.0)
    families: tuple[str, ...] = ("crash", "flash_crash")

    @model_validator(mode="after")
    def _check(self) -> RareEventConfig:
        from himari.data.synth import FAMILY_NAMES

        unknown = sorted(set(self.families) - set(FAMILY_NAMES))
        if unknown or not self.families:
            raise ValueError(f"rare_events.families: unknown {unknown}; known: {', '.join(FAMILY_NAMES)}")
        return self
    segments: int = Field(6, ge=1)
    segment_bars: int = Field(96, ge=8)
