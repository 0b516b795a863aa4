"""Bayesian Kelly sizing from trailing signal outcomes.

For a bet that wins ``b`` units per unit staked with probability p and loses the stake otherwise, the growth-optimal
fraction of capital at risk is Kelly's (Kelly 1956; Thorp 2006, "The Kelly criterion in blackjack, sports betting and
the stock market")::

    f* = p - (1 - p) / b

Trading version used here. Per bar, a unit position in the signal's direction gains on average ``g`` when it wins and
loses ``l`` when it loses (``b = g / l``). Maximizing ``p log(1 + x g) + (1 - p) log(1 - x l)`` over the position x
gives ``x* = (p g - (1 - p) l) / (g l) = f* / l``: the Kelly fraction of capital *at risk*, divided by the loss per
unit of position. We size at a fraction ``c`` of it (quarter Kelly by default) and cap it.

Bayesian part: the win probability has a Beta(α0, β0) prior; after W wins and Ls losses (zero outcomes ignored) the
posterior is Beta(α0 + W, β0 + Ls). Since f* is linear in p, the posterior expectation of f* is f* at the posterior
mean ``p̄ = α / (α + β)``; a more conservative choice uses a lower posterior quantile of p. The edge is "not
positive" when f* <= 0, and the position is then zero.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from himari.errors import ConfigError


class KellyEstimate(NamedTuple):
    """Per-asset Kelly estimate (arrays of shape (A,))."""

    win_prob: np.ndarray  # posterior mean (or quantile) of the win probability
    payoff_ratio: np.ndarray  # b = mean gain / mean loss (inf when there are no losses, 0 when no wins)
    mean_loss: np.ndarray  # l, mean loss per unit position per bar (> 0, NaN when no losses)
    edge: np.ndarray  # f* = p - (1 - p) / b, fraction of capital at risk (full Kelly)
    position: np.ndarray  # c * f* / l clipped to [0, max_position]; max_position while not informative
    n_outcomes: np.ndarray  # wins + losses used
    informative: np.ndarray  # bool: n_outcomes >= min_outcomes


def beta_posterior(
    wins: np.ndarray, losses: np.ndarray, prior_alpha: float, prior_beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """Beta posterior parameters (α0 + wins, β0 + losses) of the win probability."""
    return prior_alpha + np.asarray(wins, dtype=np.float64), prior_beta + np.asarray(losses, dtype=np.float64)


def kelly_fraction(win_prob: np.ndarray, payoff_ratio: np.ndarray) -> np.ndarray:
    """Full Kelly fraction of capital at risk ``f* = p - (1 - p) / b``; ``b = 0`` gives -inf (never bet)."""
    p = np.asarray(win_prob, dtype=np.float64)
    b = np.asarray(payoff_ratio, dtype=np.float64)
    loss_term = np.full(np.broadcast(p, b).shape, np.inf)
    np.divide(1.0 - p, b, out=loss_term, where=b > 0)
    return p - np.where(p >= 1.0, 0.0, loss_term)


def kelly_from_sums(
    wins: np.ndarray,
    losses: np.ndarray,
    sum_gain: np.ndarray,
    sum_loss: np.ndarray,
    *,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    fraction: float = 0.25,
    max_position: float = 2.0,
    min_outcomes: int = 50,
    win_prob_quantile: float | None = None,
) -> KellyEstimate:
    """Bayesian fractional Kelly position from outcome counts and sums (``sum_loss`` as a positive number).

    The arithmetic runs per asset on Python floats: with a handful of assets that is several times cheaper than
    NumPy on tiny arrays, and this runs once per decision.
    """
    w_list = np.asarray(wins, dtype=np.float64).tolist()
    l_list = np.asarray(losses, dtype=np.float64).tolist()
    g_list = np.asarray(sum_gain, dtype=np.float64).tolist()
    s_list = np.asarray(sum_loss, dtype=np.float64).tolist()
    if win_prob_quantile is None:
        p_list = [
            (prior_alpha + w) / (prior_alpha + prior_beta + w + lo)
            for w, lo in zip(w_list, l_list, strict=True)
        ]
    else:
        p_list = np.atleast_1d(
            stats.beta.ppf(
                win_prob_quantile, prior_alpha + np.asarray(w_list), prior_beta + np.asarray(l_list)
            )
        ).tolist()
    p_out, b_out, l_out, f_out, x_out = [], [], [], [], []
    for w, lo, g_sum, l_sum, p in zip(w_list, l_list, g_list, s_list, p_list, strict=True):
        mean_gain = g_sum / w if w > 0 else 0.0
        mean_loss = l_sum / lo if lo > 0 else math.nan
        if lo > 0:
            payoff = mean_gain / mean_loss if mean_loss > 0 else math.inf
        else:
            payoff = math.inf if w > 0 else 0.0
        if p >= 1.0:
            edge = p
        elif payoff > 0:
            edge = p - (1.0 - p) / payoff
        else:
            edge = -math.inf
        if w + lo < min_outcomes:
            position = max_position
        elif edge <= 0:
            position = 0.0
        elif lo > 0 and mean_loss > 0:
            position = min(max(fraction * edge / mean_loss, 0.0), max_position)
        else:
            position = max_position
        p_out.append(p)
        b_out.append(payoff)
        l_out.append(mean_loss)
        f_out.append(edge)
        x_out.append(position)
    n = np.asarray(w_list) + np.asarray(l_list)
    return KellyEstimate(
        np.array(p_out),
        np.array(b_out),
        np.array(l_out),
        np.array(f_out),
        np.array(x_out),
        n.astype(np.int64),
        n >= min_outcomes,
    )


def bayesian_kelly(outcomes: np.ndarray, **kwargs: Any) -> KellyEstimate:
    """Bayesian fractional Kelly from per-unit-position outcomes (L, A); NaN entries (no bet) are ignored.

    Keyword arguments are those of :func:`kelly_from_sums`.
    """
    x = np.asarray(outcomes, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    pos = np.where(x > 0, x, 0.0)
    neg = np.where(x < 0, -x, 0.0)
    return kelly_from_sums((x > 0).sum(0), (x < 0).sum(0), pos.sum(0), neg.sum(0), **kwargs)


class SignalOutcomeTracker:
    """Ring buffer of the signal's per-bar outcomes ``direction_{t-1} * r_t`` per asset (stateful, JSON-serializable).

    The outcome of the direction proposed at bar t-1 is known at bar t (``r_t`` = bar t's log return). Outcomes are
    recorded whether or not the risk layer let the position through, so Kelly measures the *signal*, and a strategy
    that was held flat can still earn back its size. Zero directions and NaN returns (gaps) record nothing.
    """

    def __init__(self, n_assets: int, window: int) -> None:
        self.n_assets = int(n_assets)
        self.window = int(window)
        self.reset()

    def reset(self) -> None:
        self.buffer = np.full((self.window, self.n_assets), np.nan)
        self.cursor = 0
        self.prev_direction = np.zeros(self.n_assets)
        self.last_timestamp_ns: int | None = None
        self._recount()

    def _recount(self) -> None:
        x = self.buffer
        self.wins = (x > 0).sum(0).astype(np.float64)
        self.losses = (x < 0).sum(0).astype(np.float64)
        self.sum_gain = np.where(x > 0, x, 0.0).sum(0)
        self.sum_loss = np.where(x < 0, -x, 0.0).sum(0)

    def update(self, timestamp_ns: int, last_returns: np.ndarray, direction: np.ndarray) -> None:
        """Record the outcome of the previous direction on bar t's return, then remember ``direction``.

        Calls with a timestamp not after the last one only replace the remembered direction (idempotent per bar).
        """
        if self.last_timestamp_ns is not None and timestamp_ns > self.last_timestamp_ns:
            prev = self.prev_direction.tolist()
            last = np.asarray(last_returns, dtype=np.float64).tolist()
            old_row = self.buffer[self.cursor].tolist()
            wins, losses = self.wins.tolist(), self.losses.tolist()
            gains, loss_sums = self.sum_gain.tolist(), self.sum_loss.tolist()
            row = []
            for a in range(self.n_assets):
                old = old_row[a]
                if old > 0:  # evict the oldest outcome from the running sums
                    wins[a] -= 1.0
                    gains[a] -= old
                elif old < 0:
                    losses[a] -= 1.0
                    loss_sums[a] += old
                o = prev[a] * last[a] if prev[a] != 0.0 else math.nan
                if not math.isfinite(o):
                    o = math.nan
                elif o > 0:
                    wins[a] += 1.0
                    gains[a] += o
                elif o < 0:
                    losses[a] += 1.0
                    loss_sums[a] -= o
                row.append(o)
            self.buffer[self.cursor] = row
            self.wins, self.losses = np.array(wins), np.array(losses)
            self.sum_gain, self.sum_loss = np.array(gains), np.array(loss_sums)
            self.cursor = (self.cursor + 1) % self.window
            if self.cursor == 0:  # bound floating drift of the running sums
                self._recount()
        if self.last_timestamp_ns is None or timestamp_ns >= self.last_timestamp_ns:
            self.prev_direction = np.sign(np.asarray(direction, dtype=np.float64))
            self.last_timestamp_ns = int(timestamp_ns)

    def outcomes(self) -> np.ndarray:
        """Recorded outcomes, oldest first, (window, A) with NaN for none."""
        return np.roll(self.buffer, -self.cursor, axis=0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "n_assets": self.n_assets,
            "outcomes": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.outcomes()],
            "prev_direction": self.prev_direction.tolist(),
            "last_timestamp_ns": self.last_timestamp_ns,
            # the ring position and running sums, so a resumed tracker continues on the same floating-point path
            # (recounting from the outcomes sums in another order: last-bit differences in the Kelly cap)
            "cursor": self.cursor,
            "running": [self.wins.tolist(), self.losses.tolist(), self.sum_gain.tolist(), self.sum_loss.tolist()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["window"]) != self.window or int(state["n_assets"]) != self.n_assets:
            raise ConfigError(
                f"kelly tracker state has window={state['window']}, n_assets={state['n_assets']}; "
                f"expected window={self.window}, n_assets={self.n_assets}"
            )
        outcomes = np.array(
            [[np.nan if v is None else v for v in row] for row in state["outcomes"]], dtype=np.float64
        )
        self.cursor = int(state.get("cursor", 0)) % self.window
        self.buffer = np.roll(outcomes, self.cursor, axis=0)  # outcomes are saved oldest first
        self.prev_direction = np.asarray(state["prev_direction"], dtype=np.float64)
        ts = state["last_timestamp_ns"]
        self.last_timestamp_ns = None if ts is None else int(ts)
        if state.get("running") is not None:
            self.wins, self.losses, self.sum_gain, self.sum_loss = (
                np.asarray(v, dtype=np.float64).reshape(self.n_assets) for v in state["running"]
            )
        else:
            self._recount()
