"""Consensus autoencoder: a compact, denoised representation of the trailing window of normalized features.

Two speaker/listener pairs (encoder ``e_k``, decoder ``d_k``, k = a, b) read the same causal window
``x_t = (f_{t-W+1}, ..., f_t)`` (W rows of the tactical features, flattened), each through its own corruption of
the input during training (Gaussian noise and feature masking: two views), and must agree on one latent code::

    z_a = e_a(view_a(x)),  z_b = e_b(view_b(x))
    L = sum_k ||d_k(z_k) - x||^2 + sum_k ||d_k(z_other) - x||^2 + lambda ||z_a - z_b||^2 + mu (||z_a||^2 + ||z_b||^2)

(own reconstruction, cross reconstruction: each listener decodes the other speaker's code, the consensus term, and a
small code penalty that keeps the consensus from being won by scaling codes). The representation is
``z_t = (e_a(x_t) + e_b(x_t)) / 2`` on the clean window, ``tanh``-bounded in (-1, 1) like the percentile features.

Causality: row t reads feature rows t-W+1..t only (tested by truncation); the networks are fitted on rows of the
pipeline's fit window only (``TacticalPipeline.fit``); a window holding an invalid row gives an invalid row (zeros).
Reference: the seeds' "speaker-listener consensus" autoencoders; the cross-reconstruction form follows multi-view
autoencoders (Ngiam et al. 2011, "Multimodal deep learning", ICML).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from himari.config import FrozenConfig
from himari.errors import DataError
from himari.utils.seeding import make_rng


class ConsensusAEConfig(FrozenConfig):
    """The autoencoder feature option of :class:`himari.tactical.pipeline.TacticalConfig` (``autoencoder``)."""

    mode: Literal["append", "replace"] = Field(
        "append", description="append the codes to the features, or replace the features by them")
    window: int = Field(8, ge=1, le=256, description="feature rows (bars) per encoded window, the current included")
    latent: int = Field(8, ge=1, le=256)
    hidden: int = Field(64, ge=4, le=2048)
    iters: int = Field(600, ge=1, le=1_000_000)
    batch_size: int = Field(256, ge=2, le=65536)
    learning_rate: float = Field(1e-3, gt=0)
    consensus_weight: float = Field(1.0, ge=0)
    code_penalty: float = Field(1e-3, ge=0)
    noise_std: float = Field(0.1, ge=0, le=2.0, description="Gaussian noise of each speaker's view (training only)")
    mask_prob: float = Field(0.1, ge=0, lt=1.0, description="feature masking of each speaker's view (training only)")
    seed: int = 0

    def names(self) -> tuple[str, ...]:
        return tuple(f"ae_{i}" for i in range(self.latent))


class ConsensusNets(nn.Module):
    def __init__(self, n_in: int, cfg: ConsensusAEConfig) -> None:
        super().__init__()

        def mlp(a: int, b: int, out_tanh: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Linear(a, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, b)]
            if out_tanh:
                layers.append(nn.Tanh())
            return nn.Sequential(*layers)

        self.enc_a, self.enc_b = mlp(n_in, cfg.latent, True), mlp(n_in, cfg.latent, True)
        self.dec_a, self.dec_b = mlp(cfg.latent, n_in, False), mlp(cfg.latent, n_in, False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.enc_a(x) + self.enc_b(x))


def causal_windows(features: np.ndarray, valid: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(T, W*F)`` float32 windows (row t = rows t-W+1..t, oldest first) and ``(T,)`` window validity (every row of
    the window valid and t >= W-1)."""
    x = np.asarray(features, dtype=np.float32)
    ok = np.asarray(valid, dtype=bool)
    t_len, n_feat = x.shape
    out = np.zeros((t_len, window * n_feat), dtype=np.float32)
    good = ok.copy()
    for lag in range(window):
        col = window - 1 - lag
        shifted = np.zeros_like(x)
        shifted_ok = np.zeros(t_len, dtype=bool)
        if lag < t_len:
            shifted[lag:] = x[: t_len - lag]
            shifted_ok[lag:] = ok[: t_len - lag]
        out[:, col * n_feat:(col + 1) * n_feat] = shifted
        good &= shifted_ok
    return out, good


class ConsensusAutoencoder:
    """Fitted networks + config; :meth:`encode` maps causal windows to codes."""

    def __init__(self, config: ConsensusAEConfig, n_features: int, nets: ConsensusNets) -> None:
        self.config = config
        self.n_features = n_features
        self.nets = nets

    @classmethod
    def fit(cls, features: np.ndarray, valid: np.ndarray, fit_mask: np.ndarray, config: ConsensusAEConfig,
            history: list[dict[str, float]] | None = None) -> ConsensusAutoencoder:
        """Fit on the windows whose last row lies in ``fit_mask`` (the fit window) and are valid."""
        cfg = config
        windows, good = causal_windows(features, valid, cfg.window)
        rows = windows[good & np.asarray(fit_mask, dtype=bool)]
        if len(rows) < 2 * cfg.window + 16:
            raise DataError(f"consensus autoencoder: only {len(rows)} valid windows in the fit window; need more")
        rng = make_rng(cfg.seed)
        data = torch.as_tensor(rows)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            nets = ConsensusNets(data.shape[1], cfg)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        opt = torch.optim.Adam(nets.parameters(), lr=cfg.learning_rate)

        def view(x: torch.Tensor) -> torch.Tensor:
            noisy = x + cfg.noise_std * torch.randn(x.shape, generator=gen)
            keep = (torch.rand(x.shape, generator=gen) >= cfg.mask_prob).float()
            return noisy * keep

        for it in range(cfg.iters):
            x = data[torch.as_tensor(rng.integers(0, len(data), size=min(cfg.batch_size, len(data))))]
            z_a, z_b = nets.enc_a(view(x)), nets.enc_b(view(x))
            rec = sum(((dec(z) - x) ** 2).mean() for dec in (nets.dec_a, nets.dec_b) for z in (z_a, z_b))
            consensus = ((z_a - z_b) ** 2).sum(dim=1).mean()
            penalty = (z_a ** 2 + z_b ** 2).sum(dim=1).mean()
            loss = rec + cfg.consensus_weight * consensus + cfg.code_penalty * penalty
            opt.zero_grad()
            loss.backward()
            opt.step()
            if history is not None and (it % 100 == 0 or it == cfg.iters - 1):
                history.append({"iter": float(it), "loss": float(loss.detach()), "consensus": float(consensus.detach())})
        nets.eval()
        return cls(cfg, int(np.asarray(features).shape[1]), nets)

    def encode(self, features: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes ``(T, latent)`` float32 (0 where the window is invalid) and the window validity ``(T,)``."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise DataError(f"consensus autoencoder: expected (T, {self.n_features}) features, got {features.shape}")
        windows, good = causal_windows(features, valid, self.config.window)
        codes = np.zeros((len(features), self.config.latent), dtype=np.float32)
        if good.any():
            with torch.no_grad():
                codes[good] = self.nets.encode(torch.as_tensor(windows[good])).numpy()
        return codes, good

    def encode_window(self, window_rows: np.ndarray) -> np.ndarray:
        """The code ``(latent,)`` of one window ``(W, F)`` (oldest row first), every row valid."""
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(window_rows, dtype=np.float32).reshape(1, -1))
            return self.nets.encode(x)[0].numpy()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.nets.state_dict().items()}

    @classmethod
    def from_tensors(cls, config: ConsensusAEConfig, n_features: int, tensors: dict[str, torch.Tensor]) -> ConsensusAutoencoder:
        nets = ConsensusNets(n_features * config.window, config)
        nets.load_state_dict(tensors)
        nets.eval()
        return cls(config, n_features, nets)


__all__ = ["ConsensusAEConfig", "ConsensusAutoencoder", "causal_windows"]
