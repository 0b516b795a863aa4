"""Configs of the PPO trainer and of each PPO policy's network (frozen, validated, hashable).

Defaults follow CleanRL's ``ppo.py`` / SB3's PPO (Schulman et al. 2017, "Proximal Policy Optimization Algorithms";
Huang et al. 2022, "The 37 Implementation Details of PPO") scaled for small CPU runs: many parallel episodes, short
rollouts, small networks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from himari.agents.ppo.augment import AugmentConfig as ObsAugmentConfig
from himari.agents.ppo.methods.config import (
    AdversarialConfig,
    AugmentConfig,
    AuxConfig,
    CurriculumConfig,
    MetaConfig,
    RareEventConfig,
)
from himari.config import FrozenConfig
from himari.data.generators import SyntheticSourceConfig


class PPOConfig(FrozenConfig):
    """Hyper-parameters of :class:`himari.agents.ppo.trainer.PPOTrainer`.

    One update consumes ``num_envs * n_steps`` transitions; ``total_steps`` is rounded up to whole updates.
    """

    total_steps: int = Field(100_000, ge=1, description="environment steps (transitions) to train on")
    n_steps: int = Field(64, ge=1, description="rollout length T per environment per update")
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    learning_rate: float = Field(3e-4, gt=0.0)
    lr_final_fraction: float = Field(0.1, ge=0.0, le=1.0, description="LR decays linearly to lr * this")
    n_epochs: int = Field(4, ge=1)
    n_minibatches: int = Field(4, ge=1)
    clip_coef: float = Field(0.2, gt=0.0)
    clip_value: bool = Field(True, description="clip the value update around the rollout values (PPO2)")
    vf_coef: float = Field(0.5, ge=0.0)
    ent_coef: float = Field(0.01, ge=0.0, description="entropy bonus at the start")
    ent_coef_final: float = Field(0.0, ge=0.0, description="entropy bonus reached linearly at the end")
    max_grad_norm: float = Field(0.5, gt=0.0)
    normalize_advantages: bool = True
    target_kl: float | None = Field(None, gt=0.0, description="stop the epoch loop early when approx KL exceeds")
    normalize_observations: bool = Field(True, description="running mean/std of training observations, frozen at eval")
    obs_clip: float = Field(10.0, gt=0.0)
    adam_eps: float = Field(1e-5, gt=0.0)
    # evaluation, model selection, checkpoints
    eval_every_updates: int = Field(10, ge=1, description="validation evaluation period (updates)")
    eval_steps: int | None = Field(
        None, ge=1, description="steps per validation run (default: one episode of the evaluation env, else n_steps)"
    )
    early_stop_patience: int | None = Field(None, ge=1, description="evaluations without improvement before stopping")
    checkpoint_every_updates: int = Field(10, ge=1)
    torch_threads: int = Field(1, ge=1)
    obs_augment: ObsAugmentConfig | None = Field(
        None, description="A8 online augmentation of the observations in rollouts (himari.agents.ppo.augment); "
        "None = off")
    synthetic: SyntheticSourceConfig | None = Field(
        None, description="pre-train on a synthetic market from a generator fitted on the training range "
        "(himari.data.generators; run by himari.training.ppo.fit_ppo); None = off",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where the policy, rollout storage and update run: auto = CUDA when available, else CPU "
        "(with a TorchSimVecEnv the environment's device); not part of the run's config hash",
    )

    # optional training methods (the seeds' Part K; himari.agents.ppo.methods), all off by default
    curriculum: CurriculumConfig | None = Field(None, description="K1 three-stage curriculum")
    meta: MetaConfig | None = Field(None, description="K2 Reptile meta-learning of the initial weights")
    augment: AugmentConfig | None = Field(None, description="K3 causal data augmentation")
    aux: AuxConfig | None = Field(None, description="K4 auxiliary heads (multi-task)")
    adversarial: AdversarialConfig | None = Field(None, description="K6 adversarial training (FGSM/PGD)")
    rare_events: RareEventConfig | None = Field(None, description="K8 rare-event injection")

    def batch_size(self, num_envs: int) -> int:
        return self.n_steps * num_envs

    def num_updates(self, num_envs: int) -> int:
        per = self.batch_size(num_envs)
        return max(1, -(-self.total_steps // per))


class MLPConfig(FrozenConfig):
    """Feed-forward actor-critic over the flattened observation (the seeds' base PPO)."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: Literal["tanh", "relu"] = "tanh"
    action: Literal["discrete", "continuous"] = "discrete"
    init_log_std: float = Field(-0.5, description="initial log std of the continuous head")
    max_position: float = Field(1.0, gt=0.0, description="continuous head: actions are clipped to +-max_position")


class LSTMConfig(FrozenConfig):
    """Recurrent actor-critic: encoder -> LSTM(hidden, layers) -> heads; truncated BPTT over each rollout."""

    encoder_size: int = Field(64, ge=1)
    hidden_size: int = Field(64, ge=1)
    num_layers: int = Field(2, ge=1)
    action: Literal["discrete", "continuous"] = "discrete"
    init_log_std: float = -0.5
    max_position: float = Field(1.0, gt=0.0)


class TransformerConfig(FrozenConfig):
    """Regime-conditioned causal transformer with sliding-window attention over decision steps (receptive field
    ``n_layers · (context - 1) + 1`` steps).

    The seeds' size is ``d_model=256, n_layers=3, n_heads=4, context=100`` (:meth:`seeds`); the default is small
    enough for CPU quick runs.
    """

    d_model: int = Field(64, ge=8)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    ff_mult: int = Field(2, ge=1)
    context: int = Field(32, ge=2, description="attention span per layer (decision steps, the current included)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    action: Literal["discrete", "continuous"] = "discrete"
    init_log_std: float = -0.5
    max_position: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        return self

    @classmethod
    def seeds(cls) -> TransformerConfig:
        """The seeds' configuration: 3 layers, 4 heads, d=256, 100-step context."""
        return cls(d_model=256, n_layers=3, n_heads=4, context=100, ff_mult=4)


class MultiAssetConfig(FrozenConfig):
    """Joint policy over A assets: shared per-asset encoder, cross-asset pooling and correlation features."""

    asset_hidden: int = Field(64, ge=1)
    joint_hidden: int = Field(128, ge=1)
    correlation_feature: int = Field(0, ge=0, description="feature channel whose window correlations are inputs")
    action: Literal["discrete", "continuous"] = "discrete"
    init_log_std: float = -0.5
    max_position: float = Field(1.0, gt=0.0)


class _SizerHead(FrozenConfig):
    """What every L3 sizer shares: the Gaussian over the raw delta and its regime scaling."""

    init_log_std: float = -0.5
    regime_scale: tuple[float, float, float, float] = (1.0, 1.2, 0.6, 0.2)

    @model_validator(mode="after")
    def _positive_scales(self) -> _SizerHead:
        if any(s <= 0 for s in self.regime_scale):
            raise ValueError("regime_scale entries must be > 0")
        return self


class SizerConfig(_SizerHead):
    """L3 bounded-delta sizer: a Gaussian over the raw delta ``x`` (the simulator applies ``0.30·tanh(x)``).

    The distribution's mean and standard deviation are multiplied by the regime scale
    ``s = Σ_r P(r) · regime_scale[r]`` of the last bar, so the sizer moves less in riskier regimes.
    """

    hidden_sizes: tuple[int, ...] = (64, 64)


class LSTMSizerConfig(_SizerHead):
    """L3 bounded-delta sizer reading the observation window (the seeds: 20 bars) with an LSTM; the same Gaussian
    over the raw delta and regime scaling as :class:`SizerConfig`."""

    hidden_size: int = Field(32, ge=1)
    num_layers: int = Field(1, ge=1)
    head_hidden: int = Field(32, ge=1)
