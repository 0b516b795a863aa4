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
    """Bayesian fractional Kelly position from outcome counts and sums (``sum_loss`` as a positive number), elementwise
    over arrays of any shape ((A,) for one stream, (N, A) for N streams)."""
    w = np.asarray(wins, dtype=np.float64)
    lo = np.asarray(losses, dtype=np.float64)
    g_sum = np.asarray(sum_gain, dtype=np.float64)
    l_sum = np.asarray(sum_loss, dtype=np.float64)
    if win_prob_quantile is None:
        p = (prior_alpha + w) / (prior_alpha + prior_beta + w + lo)
    else:
        p = np.asarray(stats.beta.ppf(win_prob_quantile, prior_alpha + w, prior_beta + lo), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_gain = np.where(w > 0, g_sum / np.where(w > 0, w, 1.0), 0.0)
        mean_loss = np.where(lo > 0, l_sum / np.where(lo > 0, lo, 1.0), np.nan)
        payoff = np.where(
            lo > 0,
            np.where(mean_loss > 0, mean_gain / np.where(mean_loss > 0, mean_loss, 1.0), np.inf),
            np.where(w > 0, np.inf, 0.0),
        )
        edge = np.where(p >= 1.0, p, np.where(payoff > 0, p - (1.0 - p) / np.where(payoff > 0, payoff, 1.0), -np.inf))
        sized = np.minimum(np.maximum(fraction * edge / np.where(mean_loss > 0, mean_loss, 1.0), 0.0), max_position)
    n = w + lo
    position = np.where(
        n < min_outcomes,
        max_position,
        np.where(edge <= 0, 0.0, np.where((lo > 0) & (mean_loss > 0), sized, max_position)),
    )
    return KellyEstimate(p, payoff, mean_loss, edge, position, n.astype(np.int64), n >= min_outcomes)


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


class OutcomeState(NamedTuple):
    """Signal outcomes of N streams: a ring buffer per stream and asset with running counts and sums."""

    buffer: np.ndarray  # (N, W, A) outcomes, NaN = none
    cursor: np.ndarray  # (N,) int64 next slot
    prev_direction: np.ndarray  # (N, A) direction proposed at the previous bar
    wins: np.ndarray  # (N, A)
    losses: np.ndarray  # (N, A)
    sum_gain: np.ndarray  # (N, A)
    sum_loss: np.ndarray  # (N, A) positive


def initial_outcomes(n_streams: int, n_assets: int, window: int) -> OutcomeState:
    z = np.zeros((n_streams, n_assets))
    return OutcomeState(np.full((n_streams, window, n_assets), np.nan), np.zeros(n_streams, dtype=np.int64), z.copy(),
                        z.copy(), z.copy(), z.copy(), z.copy())


def _counts(buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(wins, losses, sum_gain, sum_loss) of one stream's buffer (W, A), recounted from scratch."""
    x = buffer
    return ((x > 0).sum(0).astype(np.float64), (x < 0).sum(0).astype(np.float64), np.where(x > 0, x, 0.0).sum(0),
            np.where(x < 0, -x, 0.0).sum(0))


def record_outcomes(state: OutcomeState, last_returns: np.ndarray, rows: np.ndarray) -> OutcomeState:
    """Record, for the streams ``rows`` (bool (N,)), the outcome ``prev_direction · r_t`` of bar t's log returns
    ``last_returns`` (N, A); zero directions and NaN returns record nothing (NaN). The oldest outcome leaves the
    running sums; a buffer that wraps around is recounted from scratch (bounds floating drift)."""
    idx = np.arange(state.cursor.shape[0])
    old = state.buffer[idx, state.cursor]  # (N, A)
    rec = np.asarray(rows, dtype=bool)[:, None]
    prev = state.prev_direction
    with np.errstate(invalid="ignore"):
        o = np.where(prev != 0.0, prev * np.asarray(last_returns, dtype=np.float64), np.nan)
    o = np.where(np.isfinite(o), o, np.nan)
    wins = np.where(rec & (old > 0), state.wins - 1.0, state.wins)
    gains = np.where(rec & (old > 0), state.sum_gain - old, state.sum_gain)
    losses = np.where(rec & (old < 0), state.losses - 1.0, state.losses)
    loss_sums = np.where(rec & (old < 0), state.sum_loss + old, state.sum_loss)
    wins = np.where(rec & (o > 0), wins + 1.0, wins)
    gains = np.where(rec & (o > 0), gains + o, gains)
    losses = np.where(rec & (o < 0), losses + 1.0, losses)
    loss_sums = np.where(rec & (o < 0), loss_sums - o, loss_sums)
    buffer = state.buffer.copy()
    r_idx = np.flatnonzero(rows)
    buffer[r_idx, state.cursor[r_idx]] = o[r_idx]
    window = buffer.shape[1]
    cursor = np.where(rows, (state.cursor + 1) % window, state.cursor)
    for i in np.flatnonzero(np.asarray(rows, dtype=bool) & (cursor == 0)).tolist():
        wins[i], losses[i], gains[i], loss_sums[i] = _counts(buffer[i])
    return OutcomeState(buffer, cursor, prev, wins, losses, gains, loss_sums)


def remember_direction(state: OutcomeState, direction: np.ndarray, rows: np.ndarray) -> OutcomeState:
    """Remember ``sign(direction)`` (N, A) as the direction whose outcome the next bar records, for ``rows``."""
    prev = np.where(np.asarray(rows, dtype=bool)[:, None], np.sign(np.asarray(direction, dtype=np.float64)),
                    state.prev_direction)
    return state._replace(prev_direction=prev)


class SignalOutcomeTracker:
    """One stream's ring buffer of the signal's per-bar outcomes ``direction_{t-1} * r_t`` per asset (stateful,
    JSON-serializable): :class:`OutcomeState` with N = 1, updated by the same functions the simulator uses.

    The outcome of the direction proposed at bar t-1 is known at bar t (``r_t`` = bar t's log return). Outcomes are
    recorded whether or not the risk layer let the position through, so Kelly measures the *signal*, and a strategy
    that was held flat can still earn back its size. Zero directions and NaN returns (gaps) record nothing.
    """

    def __init__(self, n_assets: int, window: int) -> None:
        self.n_assets = int(n_assets)
        self.window = int(window)
        self.reset()

    def reset(self) -> None:
        self.state = initial_outcomes(1, self.n_assets, self.window)
        self.last_timestamp_ns: int | None = None

    @property
    def wins(self) -> np.ndarray:
        return self.state.wins[0]

    @property
    def losses(self) -> np.ndarray:
        return self.state.losses[0]

    @property
    def sum_gain(self) -> np.ndarray:
        return self.state.sum_gain[0]

    @property
    def sum_loss(self) -> np.ndarray:
        return self.state.sum_loss[0]

    @property
    def prev_direction(self) -> np.ndarray:
        return self.state.prev_direction[0]

    def update(self, timestamp_ns: int, last_returns: np.ndarray, direction: np.ndarray) -> None:
        """Record the outcome of the previous direction on bar t's return, then remember ``direction``.

        Calls with a timestamp not after the last one only replace the remembered direction (idempotent per bar).
        """
        if self.last_timestamp_ns is not None and timestamp_ns > self.last_timestamp_ns:
            self.state = record_outcomes(self.state, np.asarray(last_returns, dtype=np.float64)[None, :], _ONE)
        if self.last_timestamp_ns is None or timestamp_ns >= self.last_timestamp_ns:
            self.state = remember_direction(self.state, np.asarray(direction, dtype=np.float64)[None, :], _ONE)
            self.last_timestamp_ns = int(timestamp_ns)

    def outcomes(self) -> np.ndarray:
        """Recorded outcomes, oldest first, (window, A) with NaN for none."""
        return np.roll(self.state.buffer[0], -int(self.state.cursor[0]), axis=0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "n_assets": self.n_assets,
            "outcomes": [[None if not np.isfinite(v) else float(v) for v in row] for row in self.outcomes()],
            "prev_direction": self.prev_direction.tolist(),
            "last_timestamp_ns": self.last_timestamp_ns,
            # the ring position and running sums, so a resumed tracker continues on the same floating-point path
            # (recounting from the outcomes sums in another order: last-bit differences in the Kelly cap)
            "cursor": int(self.state.cursor[0]),
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
        cursor = int(state.get("cursor", 0)) % self.window
        buffer = np.roll(outcomes, cursor, axis=0)  # outcomes are saved oldest first
        if state.get("running") is not None:
            wins, losses, gains, loss_sums = (
                np.asarray(v, dtype=np.float64).reshape(self.n_assets) for v in state["running"]
            )
        else:
            wins, losses, gains, loss_sums = _counts(buffer)
        prev = np.asarray(state["prev_direction"], dtype=np.float64)
        self.state = OutcomeState(buffer[None], np.array([cursor], dtype=np.int64), prev[None], wins[None],
                                  losses[None], gains[None], loss_sums[None])
        ts = state["last_timestamp_ns"]
        self.last_timestamp_ns = None if ts is None else int(ts)


_ONE = np.ones(1, dtype=bool)
