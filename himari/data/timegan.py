"""TimeGAN: a sequence generator of bar rows (Yoon, Jarrett & van der Schaar 2019, "Time-series Generative
Adversarial Networks", NeurIPS).

Five GRU networks over windows of ``seq_len`` standardized bar rows (:mod:`himari.data.bar_rows`):

* embedder ``e: X -> H`` and recovery ``r: H -> X`` (an autoencoder into a latent sequence space),
* generator ``g: Z -> E_hat`` (noise to latent sequences) and supervisor ``s: H_t -> H_{t+1}``,
* discriminator ``d: H -> logit`` (per time step).

Training follows the paper's three phases: (1) embedding: ``min ||X - r(e(X))||``; (2) supervised: ``min ||H_{t+1} -
s(H)_t||`` on real latents; (3) joint: the generator and supervisor minimize the adversarial loss on ``s(g(Z))`` and
``g(Z)`` plus ``100 sqrt(L_S)`` and the moment loss (first two moments of ``r(s(g(Z)))`` against ``X``); the
embedder/recovery minimize ``10 sqrt(L_rec) + 0.1 L_S``; the discriminator is updated only while its loss exceeds
0.15 (the authors' code). Networks are small (hidden 24, one GRU layer) so a fit takes about a minute on one CPU
thread; larger
sizes are :meth:`TimeGANConfig.preset`.

Long paths are windows generated independently and concatenated (the paper generates fixed-length windows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from himari.config import FrozenConfig
from himari.data.bar_rows import RowScaler, sequence_windows
from himari.data.generator_io import load_generator, save_generator, scaler_tensors
from himari.errors import DataError, RunDirError
from himari.utils.seeding import make_rng

KIND = "timegan"


class TimeGANConfig(FrozenConfig):
    """Sizes and budget of a TimeGAN fit (defaults: CPU-small)."""

    seq_len: int = Field(24, ge=2, le=512, description="bars per generated window")
    hidden: int = Field(24, ge=2, le=512)
    num_layers: int = Field(1, ge=1, le=4)
    batch_size: int = Field(64, ge=2, le=4096)
    embedding_iters: int = Field(200, ge=1)
    supervised_iters: int = Field(200, ge=1)
    joint_iters: int = Field(200, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    gamma: float = Field(1.0, ge=0, description="weight of the adversarial loss on g(Z) (unsupervised latents)")
    stride: int = Field(1, ge=1, description="rows between the starts of two training windows")
    recenter: bool = Field(
        True, description="subtract the networks' mean error per column (measured once after fitting on 512 "
        "windows): a small mean error compounds into a drift over a path; a departure from the paper; off = the "
        "networks' raw output",
    )

    @classmethod
    def preset(cls, size: Literal["tiny", "small", "medium", "large"]) -> TimeGANConfig:
        """``small`` (default: one GRU layer, 200 iterations per phase, about a minute on one thread), ``medium``
        (hidden 48, two layers, 3x iterations), ``large`` (hidden 96, three layers, 10x iterations)."""
        if size == "tiny":  # smoke tests only
            return cls(hidden=8, batch_size=16, embedding_iters=10, supervised_iters=10, joint_iters=5)
        if size == "small":
            return cls()
        mult, hidden, layers = (3, 48, 2) if size == "medium" else (10, 96, 3)
        return cls(hidden=hidden, num_layers=layers, embedding_iters=200 * mult, supervised_iters=200 * mult,
                   joint_iters=200 * mult)


class _RNN(nn.Module):
    """GRU stack -> linear -> optional sigmoid (the paper's building block)."""

    def __init__(self, n_in: int, hidden: int, n_out: int, layers: int, sigmoid: bool) -> None:
        super().__init__()
        self.rnn = nn.GRU(n_in, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, n_out)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        y = self.out(h)
        return torch.sigmoid(y) if self.sigmoid else y


class TimeGANNets(nn.Module):
    def __init__(self, n_features: int, cfg: TimeGANConfig) -> None:
        super().__init__()
        h, layers = cfg.hidden, cfg.num_layers
        self.embedder = _RNN(n_features, h, h, layers, sigmoid=True)
        self.recovery = _RNN(h, h, n_features, layers, sigmoid=False)
        self.generator = _RNN(n_features, h, h, layers, sigmoid=True)
        self.supervisor = _RNN(h, h, h, max(1, layers - 1), sigmoid=True)
        self.discriminator = _RNN(h, h, 1, layers, sigmoid=False)


class TimeGAN:
    """A fitted (or loaded) TimeGAN over standardized bar rows; see the module docstring."""

    def __init__(self, config: TimeGANConfig, n_features: int, scaler: RowScaler, nets: TimeGANNets,
                 meta: dict | None = None, bias: np.ndarray | None = None) -> None:
        self.config = config
        self.bias = np.zeros(n_features) if bias is None else np.asarray(bias, dtype=np.float64)  # standardized
        self.n_features = n_features
        self.scaler = scaler
        self.nets = nets
        self.meta = dict(meta or {})

    @classmethod
    def fit(cls, rows: np.ndarray, ok: np.ndarray, config: TimeGANConfig | None = None, seed: int = 0,
            history: list[dict[str, float]] | None = None) -> TimeGAN:
        """Fit on rows ``(T, C)`` in natural units where ``ok`` (windows never cross a row that is not ok)."""
        cfg = config or TimeGANConfig()
        rows = np.asarray(rows, dtype=np.float64)
        ok = np.asarray(ok, dtype=bool)
        if rows.ndim != 2 or len(rows) != len(ok):
            raise DataError(f"TimeGAN.fit: rows {rows.shape} and ok {ok.shape} do not match")
        if int(ok.sum()) < cfg.seq_len + cfg.batch_size // 4:
            raise DataError(f"TimeGAN.fit: only {int(ok.sum())} valid rows; need >= {cfg.seq_len + cfg.batch_size // 4}")
        scaler = RowScaler.fit(rows[ok])
        z_rows = np.where(ok[:, None], scaler.transform(np.where(ok[:, None], rows, 0.0)), 0.0)
        windows = torch.as_tensor(sequence_windows(z_rows, ok, cfg.seq_len, cfg.stride), dtype=torch.float32)
        n_features = rows.shape[1]
        rng = make_rng(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nets = TimeGANNets(n_features, cfg)
            noise_gen = torch.Generator().manual_seed(seed + 1)
            _train(nets, windows, cfg, rng, noise_gen, history)
        nets.eval()
        model = cls(cfg, n_features, scaler, nets, {"fit_rows": int(ok.sum()), "windows": len(windows), "seed": seed})
        if cfg.recenter:  # mean error of the standardized output against the training windows'
            model.bias = (model._sample_standardized(512, seed + 2).mean(axis=(0, 1))
                          - windows.double().numpy().mean(axis=(0, 1)))
        return model

    def sample_windows(self, n: int, seed: int) -> np.ndarray:
        """``n`` generated windows ``(n, seq_len, C)`` in natural units (standardized outputs clipped to +-8 sd)."""
        z = self._sample_standardized(n, seed)
        if self.config.recenter:
            z = z - self.bias
        return self.scaler.inverse(z)

    def _sample_standardized(self, n: int, seed: int) -> np.ndarray:
        if n < 1:
            raise DataError(f"TimeGAN.sample_windows: n must be >= 1, got {n}")
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn((n, self.config.seq_len, self.n_features), generator=gen)
        with torch.no_grad():
            e_hat = self.nets.generator(z)
            h_hat = self.nets.supervisor(e_hat)
            return self.nets.recovery(h_hat).double().numpy()

    def sample_rows(self, n_rows: int, seed: int) -> np.ndarray:
        """A path of ``n_rows`` rows: generated windows concatenated."""
        n_win = -(-int(n_rows) // self.config.seq_len)
        return self.sample_windows(n_win, seed).reshape(-1, self.n_features)[:n_rows]

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        tensors = {f"nets.{k}": v for k, v in self.nets.state_dict().items()}
        tensors.update(scaler_tensors(self.scaler.mean, self.scaler.std))
        tensors["bias"] = torch.as_tensor(self.bias, dtype=torch.float64)
        return save_generator(directory, KIND, {**self.config.to_dict(), "n_features": self.n_features}, tensors,
                              self.meta)

    @classmethod
    def load(cls, directory: str | Path) -> TimeGAN:
        raw, tensors, meta = load_generator(directory, KIND)
        n_features = int(raw.pop("n_features", 0))
        cfg = TimeGANConfig.parse(raw)
        nets = TimeGANNets(n_features, cfg)
        state = {k.removeprefix("nets."): v for k, v in tensors.items() if k.startswith("nets.")}
        try:
            nets.load_state_dict(state)
        except RuntimeError as exc:
            raise RunDirError(f"{directory}: TimeGAN weights do not match its config ({str(exc).splitlines()[0]})") from None
        nets.eval()
        scaler = RowScaler(tensors["scaler.mean"].numpy(), tensors["scaler.std"].numpy())
        if "bias" not in tensors:
            raise RunDirError(f"{directory}: TimeGAN checkpoint lacks its bias tensor")
        return cls(cfg, n_features, scaler, nets, meta, tensors["bias"].numpy())


def _train(nets: TimeGANNets, windows: torch.Tensor, cfg: TimeGANConfig, rng: np.random.Generator,
           noise_gen: torch.Generator, history: list[dict[str, float]] | None) -> None:
    mse = nn.MSELoss()
    bce = nn.BCEWithLogitsLoss()
    n = len(windows)

    def batch() -> torch.Tensor:
        return windows[torch.as_tensor(rng.integers(0, n, size=min(cfg.batch_size, n)))]

    def noise(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=noise_gen)

    er = list(nets.embedder.parameters()) + list(nets.recovery.parameters())
    opt_er = torch.optim.Adam(er, lr=cfg.learning_rate)
    # (1) embedding
    for _ in range(cfg.embedding_iters):
        x = batch()
        loss = mse(nets.recovery(nets.embedder(x)), x)
        opt_er.zero_grad()
        (10 * torch.sqrt(loss)).backward()
        opt_er.step()
    # (2) supervised next-step in latent space
    opt_s = torch.optim.Adam(list(nets.generator.parameters()) + list(nets.supervisor.parameters()), lr=cfg.learning_rate)
    for _ in range(cfg.supervised_iters):
        h = nets.embedder(batch()).detach()
        loss_s = mse(nets.supervisor(h)[:, :-1], h[:, 1:])
        opt_s.zero_grad()
        loss_s.backward()
        opt_s.step()
    # (3) joint
    opt_g = torch.optim.Adam(list(nets.generator.parameters()) + list(nets.supervisor.parameters()), lr=cfg.learning_rate)
    opt_e = torch.optim.Adam(er, lr=cfg.learning_rate)
    opt_d = torch.optim.Adam(nets.discriminator.parameters(), lr=cfg.learning_rate)
    for it in range(cfg.joint_iters):
        for _ in range(2):  # the generator trains twice per discriminator step (authors' code)
            x = batch()
            h = nets.embedder(x)
            e_hat = nets.generator(noise(x))
            h_hat = nets.supervisor(e_hat)
            x_hat = nets.recovery(h_hat)
            y_fake = nets.discriminator(h_hat)
            y_fake_e = nets.discriminator(e_hat)
            g_u = bce(y_fake, torch.ones_like(y_fake))
            g_u_e = bce(y_fake_e, torch.ones_like(y_fake_e))
            g_s = mse(nets.supervisor(h.detach())[:, :-1], h.detach()[:, 1:])
            std_hat = torch.sqrt(x_hat.var(dim=0, unbiased=False) + 1e-6)
            std_real = torch.sqrt(x.var(dim=0, unbiased=False) + 1e-6)
            g_v = (std_hat - std_real).abs().mean() + (x_hat.mean(dim=0) - x.mean(dim=0)).abs().mean()
            g_loss = g_u + cfg.gamma * g_u_e + 100 * torch.sqrt(g_s + 1e-12) + 100 * g_v
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            # embedder / recovery
            h = nets.embedder(x)
            e_rec = mse(nets.recovery(h), x)
            e_sup = mse(nets.supervisor(h)[:, :-1], h[:, 1:])
            opt_e.zero_grad()
            (10 * torch.sqrt(e_rec) + 0.1 * e_sup).backward()
            opt_e.step()
        x = batch()
        with torch.no_grad():
            h = nets.embedder(x)
            e_hat = nets.generator(noise(x))
            h_hat = nets.supervisor(e_hat)
        y_real = nets.discriminator(h)
        y_fake = nets.discriminator(h_hat)
        y_fake_e = nets.discriminator(e_hat)
        d_loss = (bce(y_real, torch.ones_like(y_real)) + bce(y_fake, torch.zeros_like(y_fake))
                  + cfg.gamma * bce(y_fake_e, torch.zeros_like(y_fake_e)))
        if float(d_loss.detach()) > 0.15:
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
        if history is not None and (it % 50 == 0 or it == cfg.joint_iters - 1):
            history.append({"iter": float(it), "g_loss": float(g_loss.detach()), "d_loss": float(d_loss.detach()),
                            "recon": float(e_rec.detach())})


__all__ = ["TimeGAN", "TimeGANConfig"]
