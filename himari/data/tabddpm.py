"""Tab-DDPM: a conditional denoising diffusion model of tabular bar rows (Kotelnikov, Baranchuk, Rubachev & Babenko
2023, "TabDDPM: Modelling Tabular Data with Diffusion Models", ICML; Ho, Jain & Abbeel 2020 for the DDPM).

Rows are the standardized bar rows of :mod:`himari.data.bar_rows` (all numeric: Gaussian diffusion only), each with
a class label ``c`` (the regime label of its bar: LOW_VOL, TRENDING, HIGH_VOL, CRISIS). Forward process
``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` with a linear beta schedule; an MLP ``eps_theta(x_t, t, c)``
(sinusoidal time embedding + class embedding) is trained with ``E ||eps - eps_theta||^2`` and sampled by ancestral
DDPM steps with the posterior variance ``beta~_t``.

Sampling is conditional: any class per row (e.g. all CRISIS rows to enrich tail states). A path of rows follows a
class (regime) path drawn from the Markov chain estimated on the fit labels (Laplace-smoothed transition counts);
``boost`` tilts the chain's entry probabilities toward chosen classes (more and longer CRISIS spells). Within a
class, rows are independent: volatility clustering comes from the regime path only (the quality report measures it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from himari.config import FrozenConfig
from himari.data.bar_rows import RowScaler
from himari.data.generator_io import load_generator, save_generator, scaler_tensors
from himari.errors import DataError, RunDirError
from himari.utils.seeding import make_rng

KIND = "tabddpm"


class TabDDPMConfig(FrozenConfig):
    """Sizes and budget of a Tab-DDPM fit (defaults: CPU-small)."""

    n_classes: int = Field(4, ge=1, le=64)
    diffusion_steps: int = Field(100, ge=2, le=2000)
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.05, gt=0, lt=1)
    hidden: int = Field(128, ge=4, le=4096)
    layers: int = Field(3, ge=1, le=8)
    time_embedding: int = Field(32, ge=4, le=512)
    batch_size: int = Field(256, ge=2, le=65536)
    iters: int = Field(1500, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    recenter: bool = Field(
        True, description="subtract the model's mean error per class (measured once after fitting on 2000 samples "
        "per class against the class's fit mean): a small mean error compounds into a drift over a path; samples "
        "keep their own variability; off = the model's raw output",
    )

    @classmethod
    def preset(cls, size: Literal["tiny", "small", "medium", "large"]) -> TabDDPMConfig:
        """``small`` (default, well under a minute on one thread), ``medium`` (256 hidden, 3x iterations),
        ``large`` (512 hidden, 4 layers, 10x iterations)."""
        if size == "tiny":  # smoke tests only
            return cls(hidden=16, layers=1, diffusion_steps=20, iters=30, batch_size=64)
        if size == "small":
            return cls()
        if size == "medium":
            return cls(hidden=256, iters=4500)
        return cls(hidden=512, layers=4, iters=15000)


def _time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / max(1, half))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class Denoiser(nn.Module):
    """``eps_theta(x_t, t, c)``: MLP over [x_t, time embedding, class embedding]."""

    def __init__(self, n_features: int, cfg: TabDDPMConfig) -> None:
        super().__init__()
        self.time_dim = cfg.time_embedding
        self.class_embedding = nn.Embedding(cfg.n_classes, cfg.time_embedding)
        layers: list[nn.Module] = []
        width = n_features + 2 * cfg.time_embedding
        for _ in range(cfg.layers):
            layers += [nn.Linear(width, cfg.hidden), nn.SiLU()]
            width = cfg.hidden
        layers.append(nn.Linear(width, n_features))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x, _time_embedding(t, self.time_dim), self.class_embedding(c)], dim=1))


def markov_transitions(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Row-stochastic ``(K, K)`` transition matrix from consecutive labels (pairs with a label < 0 skipped),
    Laplace-smoothed (+1 per cell)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.ones((n_classes, n_classes))
    a, b = labels[:-1], labels[1:]
    keep = (a >= 0) & (b >= 0)
    np.add.at(counts, (a[keep], b[keep]), 1.0)
    return counts / counts.sum(axis=1, keepdims=True)


def markov_path(trans: np.ndarray, n: int, rng: np.random.Generator, start: int | None = None) -> np.ndarray:
    """A class path of length ``n`` from the chain (start from its stationary law unless ``start``)."""
    k = trans.shape[0]
    if start is None:
        vals, vecs = np.linalg.eig(trans.T)
        pi = np.abs(np.real(vecs[:, np.argmin(np.abs(vals - 1.0))]))
        start = int(rng.choice(k, p=pi / pi.sum()))
    cum = np.cumsum(trans, axis=1)
    u = rng.random(n)
    path = np.empty(n, dtype=np.int64)
    state = int(start)
    for i in range(n):
        path[i] = state
        state = min(int(np.searchsorted(cum[state], u[i], side="right")), k - 1)
    return path


def boosted_transitions(trans: np.ndarray, boost: dict[int, float] | None) -> np.ndarray:
    """``trans`` with the probability of moving into (or staying in) class ``j`` multiplied by ``boost[j]``, rows
    renormalized."""
    out = np.array(trans, dtype=np.float64)
    for j, factor in (boost or {}).items():
        if not 0 <= j < out.shape[0] or factor <= 0:
            raise DataError(f"Tab-DDPM boost: class {j} / factor {factor} out of range")
        out[:, j] *= factor
    return out / out.sum(axis=1, keepdims=True)


class TabDDPM:
    """A fitted (or loaded) conditional Tab-DDPM over standardized rows; see the module docstring."""

    def __init__(self, config: TabDDPMConfig, n_features: int, scaler: RowScaler, net: Denoiser,
                 transitions: np.ndarray, class_means: np.ndarray, meta: dict | None = None) -> None:
        self.config = config
        self.class_bias = np.asarray(class_means, dtype=np.float64)  # (K, C) standardized mean error per class
        self.n_features = n_features
        self.scaler = scaler
        self.net = net
        self.transitions = transitions
        self.meta = dict(meta or {})
        betas = torch.linspace(config.beta_start, config.beta_end, config.diffusion_steps, dtype=torch.float64)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)

    @classmethod
    def fit(cls, rows: np.ndarray, labels: np.ndarray, config: TabDDPMConfig | None = None, seed: int = 0,
            history: list[dict[str, float]] | None = None) -> TabDDPM:
        """Fit on rows ``(T, C)`` in natural units with class ``labels (T,)``; rows with a label < 0 or non-finite
        values are skipped (they still break the label chain)."""
        cfg = config or TabDDPMConfig()
        rows = np.asarray(rows, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if rows.ndim != 2 or len(rows) != len(labels):
            raise DataError(f"TabDDPM.fit: rows {rows.shape} and labels {labels.shape} do not match")
        if labels.max(initial=-1) >= cfg.n_classes:
            raise DataError(f"TabDDPM.fit: label {int(labels.max())} >= n_classes {cfg.n_classes}")
        keep = (labels >= 0) & np.isfinite(rows).all(axis=1)
        if keep.sum() < 64:
            raise DataError(f"TabDDPM.fit: only {int(keep.sum())} labelled finite rows; need >= 64")
        scaler = RowScaler.fit(rows[keep])
        x0 = torch.as_tensor(scaler.transform(rows[keep]), dtype=torch.float32)
        c0 = torch.as_tensor(labels[keep])
        chain_labels = np.where(keep, labels, -1)
        trans = markov_transitions(chain_labels, cfg.n_classes)
        rng = make_rng(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = Denoiser(rows.shape[1], cfg)
        z0 = x0.double().numpy()
        class_means = np.stack([z0[c0.numpy() == k].mean(axis=0) if (c0 == k).any() else np.zeros(rows.shape[1])
                                for k in range(cfg.n_classes)])
        model = cls(cfg, rows.shape[1], scaler, net, trans, np.zeros_like(class_means),
                    {"fit_rows": int(keep.sum()), "class_counts": np.bincount(c0.numpy(), minlength=cfg.n_classes).tolist(),
                     "seed": seed})
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        ab = model.alpha_bar.float()
        n = len(x0)
        for it in range(cfg.iters):
            idx = torch.as_tensor(rng.integers(0, n, size=min(cfg.batch_size, n)))
            x, c = x0[idx], c0[idx]
            t = torch.randint(0, cfg.diffusion_steps, (len(idx),), generator=gen)
            eps = torch.randn(x.shape, generator=gen)
            a = ab[t][:, None]
            x_t = a.sqrt() * x + (1 - a).sqrt() * eps
            loss = ((net(x_t, t, c) - eps) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if history is not None and (it % 100 == 0 or it == cfg.iters - 1):
                history.append({"iter": float(it), "loss": float(loss.detach())})
        net.eval()
        if cfg.recenter:  # the model's mean error per class (fixed seed: part of the fit)
            probe = np.repeat(np.arange(cfg.n_classes), 2000)
            z = model._sample_standardized(probe, seed + 2)
            model.class_bias = np.stack([z[probe == k].mean(axis=0) - class_means[k] if (c0 == k).any()
                                         else np.zeros(rows.shape[1]) for k in range(cfg.n_classes)])
        return model

    def sample(self, classes: np.ndarray, seed: int) -> np.ndarray:
        """One row per entry of ``classes`` ``(N,)``, in natural units (ancestral DDPM sampling)."""
        classes = np.asarray(classes, dtype=np.int64)
        z = self._sample_standardized(classes, seed)
        if self.config.recenter:
            z = z - self.class_bias[classes]
        return self.scaler.inverse(z)

    def _sample_standardized(self, classes: np.ndarray, seed: int) -> np.ndarray:
        if classes.ndim != 1 or len(classes) == 0:
            raise DataError("TabDDPM.sample: classes must be a non-empty 1-D array")
        if classes.min() < 0 or classes.max() >= self.config.n_classes:
            raise DataError(f"TabDDPM.sample: classes must lie in [0, {self.config.n_classes})")
        gen = torch.Generator().manual_seed(int(seed))
        c = torch.as_tensor(classes)
        x = torch.randn((len(classes), self.n_features), generator=gen, dtype=torch.float64)
        betas, alphas, ab = self.betas, self.alphas, self.alpha_bar
        with torch.no_grad():
            for t in range(self.config.diffusion_steps - 1, -1, -1):
                tt = torch.full((len(classes),), t, dtype=torch.int64)
                eps = self.net(x.float(), tt, c).double()
                mean = (x - betas[t] / torch.sqrt(1 - ab[t]) * eps) / torch.sqrt(alphas[t])
                if t > 0:
                    var = betas[t] * (1 - ab[t - 1]) / (1 - ab[t])
                    x = mean + torch.sqrt(var) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
                else:
                    x = mean
        return x.numpy()

    def sample_path(self, n_rows: int, seed: int, boost: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows ``(n_rows, C)``, classes ``(n_rows,)``): a class path from the (optionally boosted) chain, then one
        conditional row per bar."""
        if n_rows < 1:
            raise DataError(f"TabDDPM.sample_path: n_rows must be >= 1, got {n_rows}")
        rng = make_rng(seed)
        path = markov_path(boosted_transitions(self.transitions, boost), int(n_rows), rng)
        return self.sample(path, seed + 1), path

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update(scaler_tensors(self.scaler.mean, self.scaler.std))
        tensors["transitions"] = torch.as_tensor(self.transitions, dtype=torch.float64)
        tensors["class_bias"] = torch.as_tensor(self.class_bias, dtype=torch.float64)
        return save_generator(directory, KIND, {**self.config.to_dict(), "n_features": self.n_features}, tensors,
                              self.meta)

    @classmethod
    def load(cls, directory: str | Path) -> TabDDPM:
        raw, tensors, meta = load_generator(directory, KIND)
        n_features = int(raw.pop("n_features", 0))
        cfg = TabDDPMConfig.parse(raw)
        net = Denoiser(n_features, cfg)
        try:
            net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")})
        except RuntimeError as exc:
            raise RunDirError(f"{directory}: Tab-DDPM weights do not match its config ({str(exc).splitlines()[0]})") from None
        net.eval()
        scaler = RowScaler(tensors["scaler.mean"].numpy(), tensors["scaler.std"].numpy())
        if "transitions" not in tensors or "class_bias" not in tensors:
            raise RunDirError(f"{directory}: Tab-DDPM checkpoint lacks transitions / class_bias")
        return cls(cfg, n_features, scaler, net, tensors["transitions"].numpy(), tensors["class_bias"].numpy(), meta)


__all__ = ["TabDDPM", "TabDDPMConfig", "boosted_transitions", "markov_path", "markov_transitions"]
