"""Reward library, selected by :class:`RewardConfig.kind`. Every term is computed from post-fill quantities of the
step just simulated (the net log return of equity over bar t+1 etc.) and from *trailing* statistics carried in
:class:`RewardState` (exponential moving averages updated after use), never from batch or future statistics.

Kinds (R_t = net log return of equity over the step, after fees, slippage and funding):

* ``pnl``: R_t.
* ``dsr``: differential Sharpe ratio (Moody & Saffell 1998/2001):
  A_t = A_{t-1} + eta (R_t - A_{t-1}), B_t = B_{t-1} + eta (R_t^2 - B_{t-1}),
  D_t = (B_{t-1} dA - 0.5 A_{t-1} dB) / (B_{t-1} - A_{t-1}^2)^{3/2} with dA = R_t - A_{t-1}, dB = R_t^2 - B_{t-1};
  0 until ``warmup_steps`` steps have been seen or while the variance is ~0.
* ``ddr``: differential downside deviation ratio (Moody & Saffell 2001), DD^2_t = DD^2_{t-1} + eta (min(R_t,0)^2 -
  DD^2_{t-1}); D_t = (R_t - 0.5 A_{t-1}) / DD_{t-1} if R_t > 0 else
  (DD^2_{t-1} (R_t - 0.5 A_{t-1}) - 0.5 A_{t-1} R_t^2) / DD_{t-1}^3.
* ``sortino_shaper`` (the seeds' shaper): R_t / max(DD_{t-1}, floor) - trade_cost * turnover_t
  - dd_weight * drawdown_t, i.e. the step return in units of trailing downside deviation, a cost per unit traded
  and a drawdown weight.
* ``regime_adaptive`` (the seeds' adaptive variance-normalized regime reward): with sigma_t the trailing per-bar
  volatility at the decision bar and k = regime of the decision bar (argmax of the asset-averaged posterior),
  n_t = R_t / sigma_t; M_k = trailing mean of |market return / sigma| in regime k (EMA, the scale of a normalized
  PnL there); reward = w_k n_t - c^trade_k M_k turnover_t - c^hold_k M_k 1[flat]. Hold costs are >= 0 by
  construction, so being flat can never earn a guaranteed bonus (the seeds' lesson).

Optional penalties added to every kind: ``drawdown_penalty`` * (increase of drawdown this step) and
``turnover_penalty`` * turnover_t (sum over assets of |position change|). The final reward is
``scale * base - penalties``; every term is returned so training logs can show them.

Presets (:data:`REWARD_PRESETS`, ``RewardConfig.parse({"preset": "seeds_sortino"})``): the coefficients the seeds
give for the Sortino shaper and seed 003's adaptive reward, mapped to these fields as the comment there says.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from pydantic import Field, model_validator

from himari.config import FrozenConfig
from himari.env.protocol import REGIME_NAMES

RewardKind = Literal["pnl", "dsr", "ddr", "sortino_shaper", "regime_adaptive"]
N_REGIMES = len(REGIME_NAMES)


# The seeds' reward coefficients as named presets (``RewardConfig(preset=...)``; explicit fields override them).
# seeds_sortino: the seeds' Sortino shaper "0.0005 / 0.25 / 200", read as cost per unit traded 0.0005, drawdown
# weight 0.25 and a 200-bar window for the trailing downside deviation (eta = 1/200).
# seeds_adaptive: seed 003's adaptive reward fractions "0.40 / 0.40 / 0.60 / 0.40 / 1.0 / 0.50", read as the
# trade-cost fraction per regime (LOW_VOL, TRENDING, HIGH_VOL, CRISIS) = 0.40, 0.40, 0.60, 0.40 and the PnL weight
# of the calm regimes 1.0 and of the stressed regimes (HIGH_VOL, CRISIS) 0.50. The seeds name the numbers, not the
# fields: this mapping is ours.
REWARD_PRESETS: dict[str, dict[str, object]] = {
    "seeds_sortino": {"kind": "sortino_shaper", "trade_cost": 0.0005, "dd_weight": 0.25, "eta": 1 / 200},
    "seeds_adaptive": {"kind": "regime_adaptive", "regime_trade_cost": (0.40, 0.40, 0.60, 0.40),
                       "regime_weight": (1.0, 1.0, 0.50, 0.50)},
}


class RewardConfig(FrozenConfig):
    """``{"preset": NAME, ...}`` as input fills in the coefficients of :data:`REWARD_PRESETS` (fields given
    explicitly override them); the parsed config holds the values only."""

    kind: RewardKind = "pnl"
    scale: float = Field(1.0, gt=0.0)
    drawdown_penalty: float = Field(0.0, ge=0.0)
    turnover_penalty: float = Field(0.0, ge=0.0)
    eta: float = Field(0.01, gt=0.0, lt=1.0)  # EMA rate of the trailing statistics (~1/eta bars)
    warmup_steps: int = Field(10, ge=0)
    downside_floor: float = Field(1e-3, gt=0.0)  # per-bar floor of the downside deviation (sortino shaper)
    trade_cost: float = Field(0.1, ge=0.0)  # sortino shaper: cost per unit of turnover (normalized units)
    dd_weight: float = Field(0.5, ge=0.0)  # sortino shaper: weight of the current drawdown
    vol_floor: float = Field(1e-4, gt=0.0)  # regime reward: floor of the per-bar volatility
    regime_weight: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    regime_trade_cost: tuple[float, float, float, float] = (0.05, 0.05, 0.1, 0.2)
    regime_hold_cost: tuple[float, float, float, float] = (0.0, 0.02, 0.0, 0.0)
    initial_abs_normalized: float = Field(0.8, gt=0.0)  # prior for M_k (E|z| of a standard normal ~ 0.8)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: object) -> object:
        if isinstance(data, dict) and "preset" in data:
            rest = {k: v for k, v in data.items() if k != "preset"}
            name = data["preset"]
            if name is None:
                return rest
            if name not in REWARD_PRESETS:
                raise ValueError(f"unknown reward preset {name!r}; known: {', '.join(REWARD_PRESETS)}")
            return {**REWARD_PRESETS[str(name)], **rest}
        return data

    def model_post_init(self, __context: object) -> None:
        for name in ("regime_weight", "regime_trade_cost", "regime_hold_cost"):
            if min(getattr(self, name)) < 0:
                from himari.errors import ConfigError

                raise ConfigError(f"RewardConfig: {name} must be >= 0 (no guaranteed HOLD bonus)")


class RewardState(NamedTuple):
    mean: np.ndarray  # (N,) EMA of R (A_t)
    mean_sq: np.ndarray  # (N,) EMA of R^2 (B_t)
    down_sq: np.ndarray  # (N,) EMA of min(R, 0)^2 (DD^2_t)
    abs_normalized: np.ndarray  # (N, 4) EMA of |market return / sigma| per regime (M_k)
    count: np.ndarray  # (N,) int64 steps seen this episode


class RewardInputs(NamedTuple):
    log_return: np.ndarray  # (N,) net log return of equity over the step
    turnover: np.ndarray  # (N,) sum_a |dp_a|
    drawdown: np.ndarray  # (N,) drawdown after the step
    prev_drawdown: np.ndarray  # (N,) drawdown before the step
    flat: np.ndarray  # (N,) bool: no position held during the step
    regime: np.ndarray  # (N,) int regime index at the decision bar
    sigma: np.ndarray  # (N,) per-bar volatility at the decision bar (asset-averaged)
    market_return: np.ndarray  # (N,) asset-averaged log return of the market over the step


def initial_reward_state(num_envs: int, config: RewardConfig) -> RewardState:
    return RewardState(
        mean=np.zeros(num_envs),
        mean_sq=np.zeros(num_envs),
        down_sq=np.zeros(num_envs),
        abs_normalized=np.full((num_envs, N_REGIMES), config.initial_abs_normalized),
        count=np.zeros(num_envs, dtype=np.int64),
    )




def compute_reward(
    config: RewardConfig, state: RewardState, inp: RewardInputs
) -> tuple[np.ndarray, dict[str, np.ndarray], RewardState]:
    """Reward (N,) float64, all terms, and the updated trailing state (statistics include this step afterwards)."""
    r = inp.log_return
    eta = config.eta
    a_prev, b_prev, dd2_prev = state.mean, state.mean_sq, state.down_sq
    warm = state.count >= config.warmup_steps
    terms: dict[str, np.ndarray] = {"pnl": r}

    kind = config.kind
    if kind == "pnl":
        base = r
    elif kind == "dsr":
        var = b_prev - a_prev * a_prev
        ok = warm & (var > 1e-14)
        safe = np.where(ok, var, 1.0)
        base = np.where(ok, (b_prev * (r - a_prev) - 0.5 * a_prev * (r * r - b_prev)) / safe**1.5, 0.0)
        terms["dsr"] = base
    elif kind == "ddr":
        dd = np.sqrt(dd2_prev)
        ok = warm & (dd > 1e-10)
        safe = np.where(ok, dd, 1.0)
        up = (r - 0.5 * a_prev) / safe
        down = (dd2_prev * (r - 0.5 * a_prev) - 0.5 * a_prev * r * r) / safe**3
        base = np.where(ok, np.where(r > 0, up, down), 0.0)
        terms["ddr"] = base
    elif kind == "sortino_shaper":
        dd = np.maximum(np.sqrt(dd2_prev), config.downside_floor)
        sortino = r / dd
        trade = config.trade_cost * inp.turnover
        dd_term = config.dd_weight * inp.drawdown
        base = sortino - trade - dd_term
        terms.update(sortino_step=sortino, sortino_trade_cost=trade, sortino_drawdown=dd_term)
    elif kind == "regime_adaptive":
        sigma = np.maximum(inp.sigma, config.vol_floor)
        norm_pnl = r / sigma
        rows = np.arange(r.shape[0])
        m_k = state.abs_normalized[rows, inp.regime]
        w = np.asarray(config.regime_weight)[inp.regime]
        c_trade = np.asarray(config.regime_trade_cost)[inp.regime] * m_k * inp.turnover
        c_hold = np.asarray(config.regime_hold_cost)[inp.regime] * m_k * inp.flat
        base = w * norm_pnl - c_trade - c_hold
        terms.update(normalized_pnl=norm_pnl, regime_trade_cost=c_trade, regime_hold_cost=c_hold)
    else:  # pragma: no cover - pydantic restricts kind
        raise AssertionError(kind)

    dd_pen = config.drawdown_penalty * np.maximum(inp.drawdown - inp.prev_drawdown, 0.0)
    to_pen = config.turnover_penalty * inp.turnover
    reward = config.scale * base - dd_pen - to_pen
    terms.update(drawdown_penalty=dd_pen, turnover_penalty=to_pen, reward=reward)

    # trailing statistics, updated after use
    new_abs = state.abs_normalized
    if kind == "regime_adaptive":
        z = np.abs(inp.market_return) / np.maximum(inp.sigma, config.vol_floor)
        new_abs = state.abs_normalized.copy()
        rows = np.arange(r.shape[0])
        new_abs[rows, inp.regime] += eta * (z - new_abs[rows, inp.regime])
    down = np.minimum(r, 0.0)
    new_state = RewardState(
        mean=a_prev + eta * (r - a_prev),
        mean_sq=b_prev + eta * (r * r - b_prev),
        down_sq=dd2_prev + eta * (down * down - dd2_prev),
        abs_normalized=new_abs,
        count=state.count + 1,
    )
    return reward, terms, new_state
