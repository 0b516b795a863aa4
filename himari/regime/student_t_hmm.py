"""Hidden Markov model with multivariate Student-t emissions.

Emission of state k: ``x_t ~ t_nu_k(mu_k, Sigma_k)`` in ``d`` dimensions, density

    log p = lgamma((nu+d)/2) - lgamma(nu/2) - d/2 log(nu pi) - 1/2 log|Sigma| - (nu+d)/2 log(1 + delta/nu),
    delta = (x - mu)' Sigma^{-1} (x - mu).

Fitting:

* :meth:`StudentTHMM.fit_em` — Baum-Welch with the Student-t scale-mixture E-step (McLachlan & Peel 2000, ch. 7;
  Peel & McLachlan 2000): weights ``u_tk = (nu_k + d)/(nu_k + delta_tk)``,
  ``mu_k = sum gamma u x / sum gamma u``, ``Sigma_k = sum gamma u (x-mu)(x-mu)' / sum gamma``, and the ECM update of
  ``nu_k`` solving ``-psi(nu/2) + log(nu/2) + 1 + sum gamma (log u - u)/sum gamma + psi((nu_old+d)/2)
  - log((nu_old+d)/2) = 0`` (or ``nu`` fixed).
* :meth:`StudentTHMM.fit_supervised` — states given by labels: the same M-step with one-hot ``gamma`` (iterated for
  the ``u`` weights) and the transition matrix from label transition counts (Laplace smoothed).

Inference: :meth:`StudentTHMM.filter` is the normalized forward recursion, ``P(s_t | x_<=t)`` (never smoothed
backwards, so it is causal); rows with a non-finite observation are prediction-only steps; a row flagged as a
segment start (after a gap) restarts from the initial distribution. Persistence as JSON (no pickle).

Hidden states are mapped to the named regimes ``REGIME_NAMES`` deterministically from the state means of the
observation columns (see :func:`map_states_by_means`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy import optimize
from scipy.special import digamma, gammaln

from himari.errors import DataError
from himari.utils.io import atomic_write_json, read_json
from himari.utils.seeding import make_rng

_MIN_VAR = 1e-6
GAUSSIAN_DOF = 1e6  # a dof at or above this means Gaussian emissions (the nu -> infinity limit)


def student_t_logpdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray, dof: float) -> tuple[np.ndarray, np.ndarray]:
    """Log density (T,) and Mahalanobis ``delta`` (T,) of a multivariate t for rows of ``x`` (T, d)."""
    d = x.shape[1]
    chol = np.linalg.cholesky(cov)
    diff = (x - mean).T
    sol = np.linalg.solve(chol, diff) if len(x) else diff
    delta = np.sum(sol * sol, axis=0)
    logdet = 2.0 * np.sum(np.log(np.diag(chol)))
    nu = float(dof)
    if nu >= GAUSSIAN_DOF:  # the Gaussian limit, computed exactly
        return -0.5 * (d * math.log(2.0 * math.pi) + logdet + delta), delta
    const = gammaln((nu + d) / 2.0) - gammaln(nu / 2.0) - 0.5 * d * math.log(nu * math.pi) - 0.5 * logdet
    return const - 0.5 * (nu + d) * np.log1p(delta / nu), delta


class ForwardResult(NamedTuple):
    posterior: np.ndarray  # (T, K) P(s_t | x_<=t)
    loglik: float  # sum of log p(x_t | x_<t) over finite rows
    step_loglik: np.ndarray  # (T,) log p(x_t | x_<t); 0 on rows without an observation


@dataclass
class StudentTHMM:
    """K-state HMM with multivariate Student-t emissions; see module docstring."""

    means: np.ndarray  # (K, d)
    covs: np.ndarray  # (K, d, d)
    dofs: np.ndarray  # (K,)
    transmat: np.ndarray  # (K, K) rows sum to 1
    startprob: np.ndarray  # (K,)
    state_to_regime: np.ndarray = field(default_factory=lambda: np.arange(4))  # (K,) regime index per state
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_states(self) -> int:
        return len(self.startprob)

    # -- inference ----------------------------------------------------------------------------------------------
    def emission_logprob(self, x: np.ndarray) -> np.ndarray:
        """(T, K) log p(x_t | s_t = k); NaN rows give 0 (no information)."""
        t = len(x)
        out = np.zeros((t, self.n_states))
        ok = np.isfinite(x).all(axis=1)
        for k in range(self.n_states):
            out[ok, k] = student_t_logpdf(x[ok], self.means[k], self.covs[k], self.dofs[k])[0]
        return out

    def filter(self, x: np.ndarray, segment_start: np.ndarray | None = None) -> ForwardResult:
        """Forward filter ``alpha_t = (alpha_{t-1} A) * b_t / c_t``; ``segment_start`` rows restart from ``startprob``."""
        logb = self.emission_logprob(x)
        return forward_filter(logb, np.isfinite(x).all(axis=1), self.transmat, self.startprob, segment_start)

    def filter_step(self, alpha: np.ndarray | None, x_t: np.ndarray, segment_start: bool) -> np.ndarray:
        """One bar of :meth:`filter`: ``P(s_t | x_<=t)`` (K,) from ``alpha = P(s_{t-1} | x_<=t-1)`` and the new
        observation ``x_t`` (d,). The same arithmetic as the batch recursion (the one-row emission density may round
        differently in the last bit: equal to 1e-12 relative, tested); ``alpha=None``
        or ``segment_start`` restarts from ``startprob``; a non-finite ``x_t`` is a prediction-only step."""
        x = np.asarray(x_t, dtype=np.float64).reshape(1, -1)
        logb = self.emission_logprob(x)
        observed = bool(np.isfinite(x).all())
        b = np.exp(logb - logb.max(axis=1, keepdims=True))[0]
        start = segment_start or alpha is None
        if self.n_states == 4:
            if start:
                p0, p1, p2, p3 = self.startprob.tolist()
            else:
                (a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33) = (
                    self.transmat.tolist()
                )
                x0, x1, x2, x3 = np.asarray(alpha, dtype=np.float64).tolist()
                p0 = x0 * a00 + x1 * a10 + x2 * a20 + x3 * a30
                p1 = x0 * a01 + x1 * a11 + x2 * a21 + x3 * a31
                p2 = x0 * a02 + x1 * a12 + x2 * a22 + x3 * a32
                p3 = x0 * a03 + x1 * a13 + x2 * a23 + x3 * a33
            if observed:
                bt = b.tolist()
                p0 *= bt[0]
                p1 *= bt[1]
                p2 *= bt[2]
                p3 *= bt[3]
                c = p0 + p1 + p2 + p3
                return np.array([p0 / c, p1 / c, p2 / c, p3 / c])
            return np.array([p0, p1, p2, p3])
        pred = self.startprob if start else np.asarray(alpha) @ self.transmat
        if observed:
            un = pred * b
            return un / un.sum()
        return np.array(pred, dtype=np.float64)

    def regime_of_states(self, posterior: np.ndarray) -> np.ndarray:
        """State posterior (..., K) summed into the 4 regimes (..., 4) (as :meth:`regime_posterior`)."""
        post = np.asarray(posterior, dtype=np.float64)
        out = np.zeros((*post.shape[:-1], 4))
        for k in range(self.n_states):
            out[..., int(self.state_to_regime[k])] += post[..., k]
        return out

    def regime_posterior(self, x: np.ndarray, segment_start: np.ndarray | None = None) -> np.ndarray:
        """(T, 4) P(regime_t | x_<=t) with states summed into their mapped regimes."""
        post = self.filter(x, segment_start).posterior
        out = np.zeros((len(x), 4))
        for k in range(self.n_states):
            out[:, int(self.state_to_regime[k])] += post[:, k]
        return out

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Simulate ``n`` steps: (states (n,), observations (n, d)) with an explicit seed."""
        rng = make_rng(seed)
        d = self.means.shape[1]
        states = np.empty(n, dtype=np.int64)
        obs = np.empty((n, d))
        s = rng.choice(self.n_states, p=self.startprob)
        chols = [np.linalg.cholesky(c) for c in self.covs]
        for t in range(n):
            if t:
                s = rng.choice(self.n_states, p=self.transmat[s])
            states[t] = s
            g = 1.0 if self.dofs[s] >= GAUSSIAN_DOF else rng.gamma(self.dofs[s] / 2.0, 2.0 / self.dofs[s])  # u ~ Gamma(nu/2, rate nu/2)
            obs[t] = self.means[s] + chols[s] @ rng.standard_normal(d) / math.sqrt(g)
        return states, obs

    # -- fitting --------------------------------------------------------------------------------------------------
    @classmethod
    def fit_supervised(
        cls,
        x: np.ndarray,
        labels: np.ndarray,
        n_states: int = 4,
        dof: float | None = None,
        segment_start: np.ndarray | None = None,
        inner_iters: int = 20,
    ) -> StudentTHMM:
        """Fit from labelled rows (label -1 or non-finite x ignored); transitions from consecutive labelled pairs."""
        ok = np.isfinite(x).all(axis=1) & (labels >= 0)
        if ok.sum() < 10 * (x.shape[1] + 1):
            raise DataError(f"Student-t HMM supervised fit: only {int(ok.sum())} labelled finite rows")
        gamma = np.zeros((len(x), n_states))
        gamma[ok, labels[ok]] = 1.0
        means, covs, dofs = _init_emissions(x, gamma, ok)
        dofs = np.full(n_states, 10.0 if dof is None else float(dof))
        for _ in range(inner_iters):
            new_means, covs, new_dofs = _m_step_emissions(x, gamma, ok, means, covs, dofs, estimate_dof=dof is None)
            shift = max(float(np.abs(new_means - means).max()), float(np.abs(np.log(new_dofs / dofs)).max()))
            means, dofs = new_means, new_dofs
            if shift < 1e-4:  # the weighted-t fixed point is reached
                break
        counts = np.ones((n_states, n_states))  # Laplace smoothing
        pair = ok[1:] & ok[:-1]
        if segment_start is not None:
            pair &= ~np.asarray(segment_start, dtype=bool)[1:]
        np.add.at(counts, (labels[:-1][pair], labels[1:][pair]), 1.0)
        transmat = counts / counts.sum(axis=1, keepdims=True)
        startprob = (np.bincount(labels[ok], minlength=n_states) + 1.0) / (ok.sum() + n_states)
        return cls(means, covs, dofs, transmat, startprob, np.arange(n_states) % 4, {"fit": "supervised"})

    def fit_em(
        self,
        x: np.ndarray,
        segment_start: np.ndarray | None = None,
        n_iter: int = 50,
        tol: float = 1e-4,
        estimate_dof: bool = True,
    ) -> list[float]:
        """Baum-Welch/ECM from the current parameters (in place); returns the log-likelihood per iteration."""
        ok = np.isfinite(x).all(axis=1)
        history: list[float] = []
        for _ in range(n_iter):
            logb = self.emission_logprob(x)
            gamma, xi_sum, start_sum, ll = forward_backward(logb, ok, self.transmat, self.startprob, segment_start)
            history.append(ll)
            self.means, self.covs, self.dofs = _m_step_emissions(
                x, gamma, ok, self.means, self.covs, self.dofs, estimate_dof=estimate_dof
            )
            self.transmat = (xi_sum + 1e-6) / (xi_sum + 1e-6).sum(axis=1, keepdims=True)
            self.startprob = (start_sum + 1e-6) / (start_sum + 1e-6).sum()
            if len(history) > 1 and abs(history[-1] - history[-2]) < tol * max(1.0, abs(history[-1])):
                break
        self.meta["fit"] = "em"
        self.meta["em_loglik"] = history
        return history

    # -- persistence ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "student_t_hmm",
            "means": self.means.tolist(),
            "covs": self.covs.tolist(),
            "dofs": self.dofs.tolist(),
            "transmat": self.transmat.tolist(),
            "startprob": self.startprob.tolist(),
            "state_to_regime": [int(v) for v in self.state_to_regime],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any], source: str = "<dict>") -> StudentTHMM:
        if payload.get("kind") != "student_t_hmm":
            raise DataError(f"not a Student-t HMM (kind={payload.get('kind')!r})", source)
        try:
            model = cls(
                np.asarray(payload["means"], dtype=np.float64),
                np.asarray(payload["covs"], dtype=np.float64),
                np.asarray(payload["dofs"], dtype=np.float64),
                np.asarray(payload["transmat"], dtype=np.float64),
                np.asarray(payload["startprob"], dtype=np.float64),
                np.asarray(payload["state_to_regime"], dtype=np.int64),
                dict(payload.get("meta", {})),
            )
        except KeyError as exc:
            raise DataError(f"Student-t HMM file lacks field {exc}", source) from None
        k = len(model.startprob)
        if model.transmat.shape != (k, k) or model.means.shape[0] != k or model.covs.shape[0] != k:
            raise DataError("Student-t HMM: inconsistent parameter shapes", source)
        return model

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> StudentTHMM:
        try:
            payload = read_json(path)
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read Student-t HMM: {exc}", str(path)) from None
        return cls.from_dict(payload, str(path))


# ----------------------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------------------
def forward_filter(
    logb: np.ndarray,
    observed: np.ndarray,
    transmat: np.ndarray,
    startprob: np.ndarray,
    segment_start: np.ndarray | None = None,
) -> ForwardResult:
    """Normalized forward recursion on emission log-probabilities (T, K)."""
    t_len, k = logb.shape
    post = np.empty((t_len, k))
    step_ll = np.zeros(t_len)
    shift = logb.max(axis=1, keepdims=True)
    b = np.exp(logb - shift)
    starts = np.zeros(t_len, dtype=bool) if segment_start is None else np.asarray(segment_start, dtype=bool).copy()
    if t_len:
        starts[0] = True
    if k == 4:
        _forward4(b, observed, starts, transmat, startprob, post, step_ll, shift[:, 0])
    else:
        alpha = startprob
        obs = observed.tolist()
        st = starts.tolist()
        for t in range(t_len):
            pred = startprob if st[t] else alpha @ transmat
            if obs[t]:
                un = pred * b[t]
                c = un.sum()
                alpha = un / c
                step_ll[t] = math.log(c) + shift[t, 0]
            else:
                alpha = pred
            post[t] = alpha
    return ForwardResult(post, float(step_ll.sum()), step_ll)


def _forward4(
    b: np.ndarray,
    observed: np.ndarray,
    starts: np.ndarray,
    transmat: np.ndarray,
    startprob: np.ndarray,
    post: np.ndarray,
    step_ll: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray | None = None,
) -> None:
    """The forward recursion unrolled for 4 states on Python floats (about 2x faster than small NumPy ops)."""
    (a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33) = transmat.tolist()
    s0, s1, s2, s3 = startprob.tolist()
    bl = b.tolist()
    obs = observed.tolist()
    st = starts.tolist()
    sh = shift.tolist()
    out: list[tuple[float, float, float, float]] = [(0.0, 0.0, 0.0, 0.0)] * len(bl)
    lls = [0.0] * len(bl)
    cs = [1.0] * len(bl)
    log = math.log
    x0 = x1 = x2 = x3 = 0.0
    for t in range(len(bl)):
        if st[t]:
            p0, p1, p2, p3 = s0, s1, s2, s3
        else:
            p0 = x0 * a00 + x1 * a10 + x2 * a20 + x3 * a30
            p1 = x0 * a01 + x1 * a11 + x2 * a21 + x3 * a31
            p2 = x0 * a02 + x1 * a12 + x2 * a22 + x3 * a32
            p3 = x0 * a03 + x1 * a13 + x2 * a23 + x3 * a33
        if obs[t]:
            bt = bl[t]
            p0 *= bt[0]
            p1 *= bt[1]
            p2 *= bt[2]
            p3 *= bt[3]
            c = p0 + p1 + p2 + p3
            x0, x1, x2, x3 = p0 / c, p1 / c, p2 / c, p3 / c
            lls[t] = log(c) + sh[t]
            cs[t] = c
        else:
            x0, x1, x2, x3 = p0, p1, p2, p3
        out[t] = (x0, x1, x2, x3)
    if len(bl):
        post[:] = np.asarray(out)
        step_ll[:] = lls
        if scale is not None:
            scale[:] = cs


def _backward4(b: np.ndarray, observed: np.ndarray, starts: np.ndarray, transmat: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scaled backward recursion ``beta_t = A (b_{t+1} * beta_{t+1}) / c_{t+1}`` unrolled for 4 states;
    ``beta = 1`` at the last row of every segment. Unobserved rows have ``b = 1``."""
    (a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33) = transmat.tolist()
    t_len = len(b)
    bl = np.where(observed[:, None], b, 1.0).tolist()
    st = starts.tolist()
    cs = scale.tolist()
    out: list[tuple[float, float, float, float]] = [(1.0, 1.0, 1.0, 1.0)] * t_len
    y0 = y1 = y2 = y3 = 1.0
    for t in range(t_len - 2, -1, -1):
        if st[t + 1]:
            y0 = y1 = y2 = y3 = 1.0
        else:
            bt = bl[t + 1]
            c = cs[t + 1]
            n0, n1, n2, n3 = bt[0] * y0 / c, bt[1] * y1 / c, bt[2] * y2 / c, bt[3] * y3 / c
            y0 = a00 * n0 + a01 * n1 + a02 * n2 + a03 * n3
            y1 = a10 * n0 + a11 * n1 + a12 * n2 + a13 * n3
            y2 = a20 * n0 + a21 * n1 + a22 * n2 + a23 * n3
            y3 = a30 * n0 + a31 * n1 + a32 * n2 + a33 * n3
        out[t] = (y0, y1, y2, y3)
    return np.asarray(out).reshape(t_len, 4)


def forward_backward(
    logb: np.ndarray,
    observed: np.ndarray,
    transmat: np.ndarray,
    startprob: np.ndarray,
    segment_start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """E-step (training only): smoothed ``gamma`` (T, K), expected transition counts (K, K), expected start
    counts (K,), log-likelihood. Rows without observation carry b = 1."""
    t_len, k = logb.shape
    shift = np.where(observed, logb.max(axis=1), 0.0)
    b = np.where(observed[:, None], np.exp(logb - shift[:, None]), 1.0)
    starts = np.zeros(t_len, dtype=bool) if segment_start is None else np.asarray(segment_start, dtype=bool).copy()
    starts[0] = True
    if k == 4:
        alpha = np.empty((t_len, 4))
        step_ll = np.zeros(t_len)
        scale = np.ones(t_len)
        _forward4(b, observed, starts, transmat, startprob, alpha, step_ll, shift, scale)
        beta = _backward4(b, observed, starts, transmat, scale)
    else:
        alpha = np.empty((t_len, k))
        scale = np.empty(t_len)
        prev = startprob
        for t in range(t_len):
            pred = startprob if starts[t] else prev @ transmat
            un = pred * b[t]
            c = un.sum()
            alpha[t] = un / c
            scale[t] = c
            prev = alpha[t]
        beta = np.ones((t_len, k))
        for t in range(t_len - 2, -1, -1):
            if not starts[t + 1]:
                beta[t] = (transmat @ (b[t + 1] * beta[t + 1])) / scale[t + 1]
    # expected transitions: xi_t(i, j) = alpha_t(i) A_ij b_{t+1}(j) beta_{t+1}(j) / c_{t+1}, within segments only
    link = ~starts[1:]
    nb = (b[1:] * beta[1:] / scale[1:, None])[link]
    xi_sum = transmat * (alpha[:-1][link].T @ nb)
    gamma = alpha * beta
    gamma /= gamma.sum(axis=1, keepdims=True)
    start_sum = gamma[starts].sum(axis=0)
    ll = float(np.sum(np.log(scale)) + shift.sum())
    return gamma, xi_sum, start_sum, ll


def _init_emissions(x: np.ndarray, gamma: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = gamma.shape[1]
    d = x.shape[1]
    xo = x[ok]
    g = gamma[ok]
    means = np.empty((k, d))
    covs = np.empty((k, d, d))
    glob_cov = np.cov(xo.T).reshape(d, d) + _MIN_VAR * np.eye(d)
    for j in range(k):
        w = g[:, j]
        if w.sum() < d + 1:
            means[j] = xo.mean(axis=0)
            covs[j] = glob_cov
            continue
        means[j] = w @ xo / w.sum()
        diff = xo - means[j]
        covs[j] = (diff * w[:, None]).T @ diff / w.sum() + _MIN_VAR * np.eye(d)
    return means, covs, np.full(k, 10.0)


def _solve_dof(nu_old: float, d: int, mean_log_u_minus_u: float) -> float:
    """ECM update of the dof (Peel & McLachlan 2000, eq. 30), bracketed in [0.5, 200]."""
    const = 1.0 + mean_log_u_minus_u + digamma((nu_old + d) / 2.0) - math.log((nu_old + d) / 2.0)

    def f(nu: float) -> float:
        return -digamma(nu / 2.0) + math.log(nu / 2.0) + const

    lo, hi = 0.5, 200.0
    if f(lo) * f(hi) > 0:
        return hi if f(hi) > 0 else lo
    return float(optimize.brentq(f, lo, hi, xtol=1e-6))


def _m_step_emissions(
    x: np.ndarray,
    gamma: np.ndarray,
    ok: np.ndarray,
    means: np.ndarray,
    covs: np.ndarray,
    dofs: np.ndarray,
    estimate_dof: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = gamma.shape[1]
    d = x.shape[1]
    xo = x[ok]
    g = gamma[ok]
    new_means = means.copy()
    new_covs = covs.copy()
    new_dofs = dofs.copy()
    for j in range(k):
        w = g[:, j]
        wsum = w.sum()
        if wsum < d + 1:
            continue  # too little mass: keep the state's parameters
        _, delta = student_t_logpdf(xo, means[j], covs[j], dofs[j])
        u = np.ones_like(delta) if dofs[j] >= GAUSSIAN_DOF else (dofs[j] + d) / (dofs[j] + delta)
        wu = w * u
        mu = wu @ xo / wu.sum()
        diff = xo - mu
        cov = (diff * wu[:, None]).T @ diff / wsum + _MIN_VAR * np.eye(d)
        new_means[j] = mu
        new_covs[j] = cov
        if estimate_dof and dofs[j] < GAUSSIAN_DOF:
            new_dofs[j] = _solve_dof(float(dofs[j]), d, float(w @ (np.log(u) - u) / wsum))
    return new_means, new_covs, new_dofs


def map_states_by_means(means: np.ndarray, vol_col: int = 0, trend_col: int = 1, ret_col: int | None = 2) -> np.ndarray:
    """Deterministic state -> regime map for 4 states from the state means (standardized observation columns):
    the two highest-``vol`` states are CRISIS (the one with the lower mean return, or the higher vol when there is no
    return column) and HIGH_VOL; of the other two, the higher ``trend`` is TRENDING and the other LOW_VOL."""
    k = len(means)
    if k != 4:
        raise DataError(f"state-to-regime mapping needs 4 states, got {k}")
    order = np.argsort(-means[:, vol_col], kind="stable")
    high, low = order[:2], order[2:]
    out = np.empty(4, dtype=np.int64)
    if ret_col is not None:
        crisis = high[int(np.argmin(means[high, ret_col]))]
    else:
        crisis = high[0]
    other_high = high[0] if crisis == high[1] else high[1]
    out[crisis], out[other_high] = 3, 2
    trending = low[int(np.argmax(means[low, trend_col]))]
    other_low = low[0] if trending == low[1] else low[1]
    out[trending], out[other_low] = 1, 0
    return out


def apply_hysteresis(posterior: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Reported regime (T,) with hysteresis: switch from the current regime c to j = argmax only when
    ``p_j >= p_c + margin`` (causal: uses rows <= t). ``margin = 0`` gives the plain argmax."""
    t_len = len(posterior)
    out = np.empty(t_len, dtype=np.int64)
    if t_len == 0:
        return out
    best = posterior.argmax(axis=1)
    cur = int(best[0])
    rows = posterior.tolist()
    b = best.tolist()
    for t in range(t_len):
        j = b[t]
        if j != cur and rows[t][j] >= rows[t][cur] + margin:
            cur = j
        out[t] = cur
    return out


def gaussian_from_hmmlearn(model: Any) -> StudentTHMM:
    """Wrap a fitted ``hmmlearn.hmm.GaussianHMM`` (full covariance) as a Gaussian-emission :class:`StudentTHMM`
    so both are filtered by the same code (same gap handling)."""
    k = model.n_components
    return StudentTHMM(
        np.asarray(model.means_, dtype=np.float64),
        np.asarray(model.covars_, dtype=np.float64),
        np.full(k, GAUSSIAN_DOF * 10),
        np.asarray(model.transmat_, dtype=np.float64),
        np.asarray(model.startprob_, dtype=np.float64),
        map_states_by_means(np.asarray(model.means_)) if k == 4 else np.arange(k) % 4,
        {"fit": "hmmlearn.GaussianHMM"},
    )
