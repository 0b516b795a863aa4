"""Online observation augmentation for PPO rollouts (time-series augmentations of Um et al. 2017, "Data
augmentation of wearable sensor data"; Iwana & Uchida 2021, "An empirical survey of data augmentation for time
series classification").

Applied to the feature block ``(N, W, A, F)`` of each raw observation the policy acts on during a rollout (the regime
posterior and the account state are left alone: they are the simulator's bookkeeping, not noisy measurements):

* **jitter**: ``x + e``, ``e ~ N(0, jitter^2)`` per element;
* **scaling**: ``x · s``, ``s ~ N(1, scaling^2)`` per (sample, asset, feature), the same over the window;
* **magnitude warping**: ``x · c(t)``, ``c`` a smooth curve over the window: linear interpolation between
  ``warp_knots`` knots ``~ N(1, magnitude_warp^2)`` (Um et al. use a cubic spline; linear keeps it cheap);
* **noise injection**: with probability ``noise_prob`` per element, add a Laplace shock of scale ``noise_scale``.

Every draw is truncated at 3 standard deviations (Laplace shocks at 3 scales), so ``|augmented - x|`` is bounded by
the configured strengths (tested). All strengths 0 (the default) = off: the trainer then draws nothing and trains
exactly as without augmentation. Draws come from a ``torch.Generator`` seeded from the trainer's seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from himari.config import FrozenConfig

if TYPE_CHECKING:  # torch is imported on use: PPOConfig (and so every run config) stays importable without it
    import torch

TRUNCATE = 3.0


class AugmentConfig(FrozenConfig):
    """Strengths of the online observation augmentation (``PPOConfig.obs_augment``); all 0 = off."""

    jitter: float = Field(0.0, ge=0.0, le=1.0, description="sd of additive Gaussian noise (feature units)")
    scaling: float = Field(0.0, ge=0.0, le=0.3, description="sd of the multiplicative factor around 1")
    magnitude_warp: float = Field(0.0, ge=0.0, le=0.3, description="sd of the warping curve's knots around 1")
    warp_knots: int = Field(4, ge=2, le=64)
    noise_prob: float = Field(0.0, ge=0.0, le=0.5, description="probability of a Laplace shock per element")
    noise_scale: float = Field(0.1, gt=0.0, le=1.0, description="scale of the Laplace shocks")

    @property
    def enabled(self) -> bool:
        return self.jitter > 0 or self.scaling > 0 or self.magnitude_warp > 0 or self.noise_prob > 0

    def max_abs_change(self, max_abs_feature: float) -> float:
        """Bound on ``|augmented - x|`` for features bounded by ``max_abs_feature`` in absolute value."""
        factor = (1 + TRUNCATE * self.scaling) * (1 + TRUNCATE * self.magnitude_warp)
        return (max_abs_feature * (factor - 1) + TRUNCATE * self.jitter
                + (TRUNCATE * self.noise_scale if self.noise_prob > 0 else 0.0))


def _truncated_normal(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    import torch

    return torch.randn(shape, generator=generator, device=device).clamp_(-TRUNCATE, TRUNCATE)


def augment_features(features: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augmented copy of ``features (N, W, A, F)`` (see the module docstring)."""
    import torch

    n, w, a, f = features.shape
    dev = features.device
    out = features
    if cfg.scaling > 0:
        out = out * (1.0 + cfg.scaling * _truncated_normal((n, 1, a, f), generator, dev))
    if cfg.magnitude_warp > 0:
        knots = 1.0 + cfg.magnitude_warp * _truncated_normal((n, cfg.warp_knots, a, f), generator, dev)
        if w == 1:
            curve = knots[:, -1:]
        else:
            pos = torch.linspace(0, cfg.warp_knots - 1, w, device=dev)
            lo = pos.floor().long().clamp(max=cfg.warp_knots - 2)
            frac = (pos - lo.float()).view(1, w, 1, 1)
            curve = knots[:, lo] * (1 - frac) + knots[:, lo + 1] * frac
        out = out * curve
    if cfg.jitter > 0:
        out = out + cfg.jitter * _truncated_normal((n, w, a, f), generator, dev)
    if cfg.noise_prob > 0:
        hit = torch.rand((n, w, a, f), generator=generator, device=dev) < cfg.noise_prob
        u = torch.rand((n, w, a, f), generator=generator, device=dev) - 0.5
        laplace = (-cfg.noise_scale * torch.sign(u) * torch.log1p(-2 * u.abs())).clamp(
            -TRUNCATE * cfg.noise_scale, TRUNCATE * cfg.noise_scale)
        out = out + torch.where(hit, laplace, torch.zeros_like(laplace))
    return out


class ObservationAugmenter:
    """Callable on flat observations ``(N, D)`` (the :class:`~himari.agents.ppo.networks.ObsSpec` layout): augments
    the feature block, returns the input itself when the config is off."""

    def __init__(self, cfg: AugmentConfig | None, feature_shape: tuple[int, int, int], seed: int,
                 device: torch.device | str = "cpu") -> None:
        import torch

        self.cfg = cfg
        self.window, self.n_assets, self.n_features = feature_shape
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed) ^ 0x5EED)

    @property
    def enabled(self) -> bool:
        return self.cfg is not None and self.cfg.enabled

    def reseed(self, seed: int) -> None:
        """Restart the draws (the trainer does at each rollout boundary, as for its action sampler, so a resumed run
        draws what an uninterrupted one would)."""
        self.generator.manual_seed(int(seed) ^ 0x5EED)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        assert self.cfg is not None
        n = obs.shape[0]
        f_dim = self.window * self.n_assets * self.n_features
        feats = obs[:, :f_dim].reshape(n, self.window, self.n_assets, self.n_features)
        aug = augment_features(feats, self.cfg, self.generator).reshape(n, f_dim)
        import torch

        return torch.cat([aug, obs[:, f_dim:]], dim=1)


__all__ = ["AugmentConfig", "ObservationAugmenter", "augment_features"]
