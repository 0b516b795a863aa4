"""Quality of synthetic bars against real ones: stylized facts of returns and the two post-hoc scores of the TimeGAN
paper (Yoon et al. 2019, section 5).

* **Stylized facts** (Cont 2001, "Empirical properties of asset returns: stylized facts and statistical issues",
  Quantitative Finance 1) of the per-bar log returns ``r``: excess kurtosis; autocorrelation of ``|r|`` at lags 1,
  24, 168 (volatility clustering); the leverage effect ``corr(r_t, |r_{t+k}|)`` averaged over k = 1..24; the
  distribution of the maximum drawdown over rolling 30-day (720-bar) windows (median, 90th percentile); tail
  quantiles of ``r`` (0.1%, 1%, 99%, 99.9%); and regime durations (mean run length, bars, and time share of each
  rule regime label).
* **Discriminative score**: a small GRU classifier learns real vs synthetic windows (80% of each), ``|accuracy -
  0.5|`` on the held-out 20% (0 = indistinguishable, 0.5 = always told apart).
* **Predictive score** (train on synthetic, test on real): a small GRU trained on synthetic windows predicts each next
  row from the rows before it; its mean absolute error on real held-out windows (lower is better; compare with the
  same predictor trained on real fit-window windows).

Windows are standardized with the real fit rows' scaler, so a generator with the wrong scale is easy to tell apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from himari.errors import DataError
from himari.utils.seeding import make_rng

REGIME_LABELS: tuple[str, ...] = ("LOW_VOL", "TRENDING", "HIGH_VOL", "CRISIS")


def _acf(x: np.ndarray, lag: int) -> float:
    if len(x) <= lag + 1:
        return float("nan")
    a, b = x[:-lag] - x.mean(), x[lag:] - x.mean()
    den = float((x - x.mean()) @ (x - x.mean()))
    return float(a @ b / den) if den > 0 else float("nan")


def rolling_max_drawdown(close: np.ndarray, window: int) -> np.ndarray:
    """Maximum drawdown (fraction, >= 0) inside each non-overlapping window of ``window`` bars."""
    out = []
    for s in range(0, len(close) - window + 1, window):
        c = close[s:s + window]
        out.append(float(np.max(1.0 - c / np.maximum.accumulate(c))))
    return np.asarray(out)


def run_lengths(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Lengths of the runs of each label (labels < 0 break runs and are not counted)."""
    labels = np.asarray(labels, dtype=np.int64)
    out: dict[int, list[int]] = {}
    if len(labels) == 0:
        return {}
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if labels[start] >= 0:
                out.setdefault(int(labels[start]), []).append(i - start)
            start = i
    return {k: np.asarray(v) for k, v in out.items()}


def stylized_facts(log_returns: np.ndarray, close: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """The stylized facts of one series (see the module docstring); ``log_returns`` finite (gaps removed)."""
    r = np.asarray(log_returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < 200:
        raise DataError(f"stylized facts: need >= 200 finite returns, got {len(r)}")
    a = np.abs(r)
    z = (r - r.mean()) / r.std()
    lev = []
    for k in range(1, 25):
        lev.append(float(np.corrcoef(r[:-k], a[k:])[0, 1]))
    dd = rolling_max_drawdown(np.asarray(close, dtype=np.float64), 720)
    q = np.quantile(r, [0.001, 0.01, 0.99, 0.999])
    facts: dict[str, Any] = {
        "bars": len(r),
        "sd_per_bar": float(r.std()),
        "excess_kurtosis": float(np.mean(z ** 4) - 3.0),
        "acf_abs_1": _acf(a, 1), "acf_abs_24": _acf(a, 24), "acf_abs_168": _acf(a, 168),
        "acf_ret_1": _acf(r, 1),
        "leverage_1_24": float(np.mean(lev)),
        "dd30_median": float(np.median(dd)) if len(dd) else float("nan"),
        "dd30_p90": float(np.quantile(dd, 0.9)) if len(dd) else float("nan"),
        "q001": float(q[0]), "q01": float(q[1]), "q99": float(q[2]), "q999": float(q[3]),
    }
    if labels is not None:
        runs = run_lengths(labels)
        known = np.asarray(labels)[np.asarray(labels) >= 0]
        for k, name in enumerate(REGIME_LABELS):
            lengths = runs.get(k, np.zeros(0))
            facts[f"duration_{name}"] = float(lengths.mean()) if len(lengths) else 0.0
            facts[f"share_{name}"] = float(np.mean(known == k)) if len(known) else float("nan")
    return facts


class _GRUHead(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(n_in, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        return self.out(h)


def _sample(windows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(windows) == 0:
        raise DataError("post-hoc score: no windows")
    return windows[rng.choice(len(windows), size=min(n, len(windows)), replace=False)]


def discriminative_score(real: np.ndarray, synthetic: np.ndarray, seed: int, iters: int = 400,
                         hidden: int = 16, n_max: int = 2000) -> float:
    """``|accuracy - 0.5|`` of a GRU classifier (last step's logit) on held-out windows ``(N, L, C)``."""
    rng = make_rng(seed)
    real_w, syn_w = _sample(real, n_max, rng), _sample(synthetic, n_max, rng)
    n = min(len(real_w), len(syn_w))
    x = np.concatenate([real_w[:n], syn_w[:n]]).astype(np.float32)
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    cut = int(0.8 * len(x))
    xt, yt, xv, yv = (torch.as_tensor(a) for a in (x[:cut], y[:cut], x[cut:], y[cut:]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _GRUHead(x.shape[2], hidden, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(iters):
        idx = torch.as_tensor(rng.integers(0, cut, size=min(128, cut)))
        loss = loss_fn(net(xt[idx])[:, -1, 0], yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float(((net(xv)[:, -1, 0] > 0).float() == yv).float().mean())
    return abs(acc - 0.5)


def predictive_score(train: np.ndarray, test: np.ndarray, seed: int, iters: int = 400, hidden: int = 16,
                     n_max: int = 4000) -> float:
    """MAE on ``test`` windows of a GRU trained on ``train`` windows to predict row t+1 from rows <= t."""
    rng = make_rng(seed)
    tr = torch.as_tensor(_sample(train, n_max, rng).astype(np.float32))
    te = torch.as_tensor(_sample(test, n_max, rng).astype(np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _GRUHead(tr.shape[2], hidden, tr.shape[2])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(iters):
        idx = torch.as_tensor(rng.integers(0, len(tr), size=min(128, len(tr))))
        xb = tr[idx]
        loss = (net(xb[:, :-1]) - xb[:, 1:]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net(te[:, :-1]) - te[:, 1:]).abs().mean())


__all__ = ["discriminative_score", "predictive_score", "rolling_max_drawdown", "run_lengths", "stylized_facts"]
