"""The pure batched market simulator and its :class:`SimVecEnv` wrapper.

One step of N parallel episodes (``step(state, action, market, config)``), all arrays with the episode index first,
no Python loop over episodes. Timing contract, for an episode whose current decision bar is t:

1. The observation holds features/regimes of bars t-W+1..t and the account after bar t's close.
2. The action (chosen from that observation) becomes a target position per asset, filled at bar t+1:
   ``costs.fill="next_open"``: at open[t+1] (the old position earns the close[t] -> open[t+1] move first, the new
   one earns open[t+1] -> close[t+1]); ``"next_close"``: at close[t+1] with slippage (the old position earns the
   whole bar t+1, the new one starts earning at the next step).
3. The reward of the step is computed from that post-decision move and the costs — no return the policy has seen
   (bar t's or earlier) is ever paid. Then t <- t+1.

Episodes: decision bars s, s+1, ..., s+L-1 with s in [max(start_index, W-1), end_index - L), so every bar whose
move is paid lies in [start_index, end_index). Reaching L steps is *truncation* (bootstrap from ``final_obs``);
equity below ``ruin_equity`` (fraction of the initial equity 1.0) is *termination*.

Orders for an asset that cannot be filled at t+1 (not listed, missing bar, gap: ``market.fillable`` False) are
not executed — the position is kept. Where the asset is fillable but its features are invalid (warm-up, gap in the
window) the position is flattened (``invalid_policy="flat"``, default) or kept (``"keep"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from pydantic import Field

from himari.config import FrozenConfig
from himari.env.execution import CostConfig, funding, mark_to_market, rebalance
from himari.env.market import MarketData
from himari.env.protocol import (
    ACCOUNT_FIELDS,
    HOLD,
    LONG,
    REGIME_NAMES,
    SHORT,
    ActionKind,
    Observation,
    StepResult,
)
from himari.env.rewards import (
    RewardConfig,
    RewardInputs,
    RewardState,
    compute_reward,
    initial_reward_state,
)
from himari.errors import ConfigError, DataError


class SimConfig(FrozenConfig):
    """Simulator settings. ``max_position`` caps |position| per asset (fraction of equity)."""

    action_kind: ActionKind = "discrete"
    hold_mode: Literal["keep", "flat"] = "keep"  # discrete HOLD: keep the current position, or go flat
    # discrete LONG while already long (SHORT while short): False keeps the position as it drifted (no trade);
    # True rebalances it back to exactly +-max_position every bar (small trades, fees each bar)
    discrete_rebalance: bool = False
    max_position: float = Field(1.0, gt=0.0, le=10.0)
    max_gross_exposure: float | None = Field(None, gt=0.0)  # sum_a |target_a| cap (targets scaled down)
    allow_short: bool = True
    delta_scale: float = Field(0.30, gt=0.0, le=10.0)  # delta action: target = base + delta_scale * tanh(x)
    delta_base: Literal["constant", "vol_target"] = "vol_target"
    base_position: float = Field(0.5, ge=-10.0, le=10.0)  # the constant base (delta_base="constant")
    target_annual_vol: float = Field(0.5, gt=0.0)  # vol-targeted base: target_vol / (sigma_bar sqrt(bars/yr))
    invalid_policy: Literal["flat", "keep"] = "flat"
    episode_length: int = Field(1024, ge=1)
    window: int = Field(32, ge=1)
    ruin_equity: float = Field(0.5, gt=0.0, lt=1.0)
    costs: CostConfig = Field(default_factory=CostConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)


class SimState(NamedTuple):
    """State of N episodes. Equity starts at 1.0; positions are fractions of equity at bar t's close."""

    t: np.ndarray  # (N,) int64 current decision bar
    start: np.ndarray  # (N,) int64 first decision bar of the episode
    length: np.ndarray  # (N,) int64 steps in the episode
    steps: np.ndarray  # (N,) int64 steps taken so far
    equity: np.ndarray  # (N,) float64
    peak_equity: np.ndarray  # (N,) float64
    position: np.ndarray  # (N, A) float64
    entry_price: np.ndarray  # (N, A) float64 effective fill price at the last entry (sign change)
    time_in_position: np.ndarray  # (N, A) int64 bars since the position's sign last changed (0 when flat)
    reward: RewardState


# -- episode starts ----------------------------------------------------------------------------------------------
def start_range(
    market: MarketData, config: SimConfig, start_index: int, end_index: int, length: int
) -> tuple[int, int]:
    """Half-open range [lo, hi) of valid first decision bars for episodes of ``length`` steps."""
    lo = max(int(start_index), config.window - 1)
    hi = int(end_index) - int(length)
    if not 0 <= start_index < end_index <= market.num_bars:
        raise ConfigError(
            f"episode window [{start_index}, {end_index}) outside the data [0, {market.num_bars})"
        )
    if hi <= lo:
        raise ConfigError(
            f"episode window [{start_index}, {end_index}) too short for episode_length={length} and window="
            f"{config.window} (needs at least {length + 1} bars after the first {config.window - 1})"
        )
    return lo, hi


def reset(
    market: MarketData,
    config: SimConfig,
    num_envs: int,
    rng: np.random.Generator,
    start_index: int = 0,
    end_index: int | None = None,
    starts: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
) -> SimState:
    """Fresh episodes: flat, equity 1.0, starting at ``starts`` or uniformly at random in the valid range."""
    end = market.num_bars if end_index is None else int(end_index)
    length = (
        np.full(num_envs, config.episode_length, dtype=np.int64)
        if lengths is None
        else np.asarray(lengths, np.int64)
    )
    if starts is None:
        lo, hi = start_range(market, config, start_index, end, int(length.max()))
        s = rng.integers(lo, hi, size=num_envs, dtype=np.int64)
    else:
        s = np.asarray(starts, dtype=np.int64).reshape(num_envs)
        if (s < config.window - 1).any() or (s + length > end - 1).any() or (s < start_index).any():
            raise ConfigError(f"starts must lie in [max({start_index}, window-1), {end} - 1 - length]")
    a = market.num_assets
    return SimState(
        t=s.copy(),
        start=s.copy(),
        length=length.copy(),
        steps=np.zeros(num_envs, dtype=np.int64),
        equity=np.ones(num_envs),
        peak_equity=np.ones(num_envs),
        position=np.zeros((num_envs, a)),
        entry_price=np.zeros((num_envs, a)),
        time_in_position=np.zeros((num_envs, a), dtype=np.int64),
        reward=initial_reward_state(num_envs, config.reward),
    )


def merge_states(old: SimState, new: SimState, mask: np.ndarray) -> SimState:
    """Take ``new`` where ``mask`` (N,) is True, else ``old`` (used for auto-reset)."""

    def pick(o: np.ndarray, n: np.ndarray) -> np.ndarray:
        return np.where(mask.reshape((-1,) + (1,) * (o.ndim - 1)), n, o)

    fields = [pick(o, n) for o, n in zip(old[:-1], new[:-1], strict=True)]
    return SimState(
        *fields, reward=RewardState(*(pick(o, n) for o, n in zip(old.reward, new.reward, strict=True)))
    )


# -- actions -----------------------------------------------------------------------------------------------------
def base_position(market: MarketData, config: SimConfig, t: np.ndarray) -> np.ndarray:
    """Base position (N, A) at decision bar t for the delta action: constant, or vol-targeted
    target_annual_vol / (sigma_t sqrt(periods_per_year)) clipped to [0, max_position] (sigma_t causal)."""
    if config.delta_base == "constant":
        return np.full((t.shape[0], market.num_assets), config.base_position)
    sigma_annual = market.volatility[t] * np.sqrt(market.timeframe.periods_per_year)
    return np.clip(config.target_annual_vol / np.maximum(sigma_annual, 1e-6), 0.0, config.max_position)


def action_to_target(
    action: np.ndarray, current: np.ndarray, market: MarketData, config: SimConfig, t: np.ndarray
) -> np.ndarray:
    """Target positions (N, A) from an action (N, A) (or (N,) for one asset), before the gross exposure cap."""
    n, a = current.shape
    act = np.asarray(action)
    if act.ndim == 1 and a == 1:
        act = act[:, None]
    if act.shape != (n, a):
        raise DataError(f"action must have shape (N={n}, A={a}), got {np.shape(action)}")
    cap = config.max_position
    lo = -cap if config.allow_short else 0.0
    if config.action_kind == "discrete":
        if not np.issubdtype(act.dtype, np.integer):
            if not np.all(act == np.round(act)):
                raise DataError("discrete action must be integer HOLD=0 / LONG=1 / SHORT=2")
            act = act.astype(np.int64)
        if ((act < HOLD) | (act > SHORT)).any():
            raise DataError(f"discrete action must be in {{0, 1, 2}}, got values {np.unique(act)}")
        hold = current if config.hold_mode == "keep" else np.zeros_like(current)
        if config.discrete_rebalance:
            long_t, short_t = cap, lo
        else:
            long_t = np.where(current > 0, current, cap)
            short_t = np.where(current < 0, current, lo) if lo < 0 else lo
        target = np.where(act == LONG, long_t, np.where(act == SHORT, short_t, hold))
    else:
        x = np.asarray(act, dtype=np.float64)
        if not np.isfinite(x).all():
            raise DataError("continuous action contains NaN or inf")
        if config.action_kind == "continuous":
            target = np.clip(x, lo, cap)
        else:
            target = np.clip(base_position(market, config, t) + config.delta_scale * np.tanh(x), lo, cap)
    if config.max_gross_exposure is not None:
        gross = np.abs(target).sum(axis=1, keepdims=True)
        target = target * np.minimum(1.0, config.max_gross_exposure / np.maximum(gross, 1e-12))
    return target


_ZERO_INT = np.zeros(1, dtype=np.int64)


# -- the step ----------------------------------------------------------------------------------------------------
def step(
    state: SimState, action: np.ndarray, market: MarketData, config: SimConfig
) -> tuple[SimState, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Advance N episodes by one bar. Returns (new state, reward terms, info); info holds ``terminated`` and
    ``truncated`` (bool (N,)) plus per-episode accounting (equity, fees, slippage, funding, turnover, fills)."""
    costs = config.costs
    t = state.t
    t1 = t + 1
    fillable = market.fillable[t]
    valid = market.valid[t]

    # 1. move before the fill (close[t] -> open[t+1], or the whole bar t+1 for close fills)
    if costs.fill == "next_open":
        pre_ret, post_ret, price = market.gap_return[t1], market.intrabar_return[t1], market.mark_open[t1]
    else:
        pre_ret, post_ret, price = market.log_return[t1], None, market.mark_close[t1]
    m1 = mark_to_market(state.position, state.equity, pre_ret)
    # funding for bar t+1 is paid on the position held through it: the old one for close fills, else the new one
    rate = costs.funding_rate_per_bar(market.timeframe.seconds)
    funding_cost = np.zeros_like(m1.equity)
    if rate != 0.0 and costs.fill == "next_close":
        f_pos, f_eq, funding_cost = funding(m1.position, m1.equity, rate)
        m1 = m1._replace(position=f_pos, equity=f_eq)

    # 2. the order: action -> target; invalid inputs -> flat (or keep); unfillable -> no trade
    target = action_to_target(action, m1.position, market, config, t)
    if config.invalid_policy == "flat":
        target = np.where(valid, target, 0.0)
    else:
        target = np.where(valid, target, m1.position)
    fill = rebalance(
        m1.position,
        target,
        price,
        m1.equity,
        market.volatility[t],
        costs.fee_rate,
        costs.slippage_rate,
        costs.vol_slippage_coef,
        can_fill=fillable,
    )

    # 3. move after the fill (open[t+1] -> close[t+1]) and funding for bar t+1 (open fills)
    if post_ret is not None:
        m2 = mark_to_market(fill.position, fill.equity, post_ret)
        pos, eq, post_growth = m2.position, m2.equity, m2.log_growth
    else:
        pos, eq, post_growth = fill.position, fill.equity, np.zeros_like(fill.equity)
    if rate != 0.0 and costs.fill == "next_open":
        pos, eq_f, funding_cost = funding(pos, eq, rate)
    else:
        eq_f = eq

    # account bookkeeping
    old_sign = np.sign(m1.position)
    new_sign = np.sign(fill.position)
    entered = (new_sign != old_sign) & (new_sign != 0)
    entry_price = np.where(entered, fill.fill_price, np.where(new_sign == 0, 0.0, state.entry_price))
    time_in_pos = np.where(new_sign == 0, 0, np.where(entered, 1, state.time_in_position + 1))
    eq_final = np.maximum(eq_f, 0.0)
    peak = np.maximum(state.peak_equity, eq_final)
    log_ret = np.log(np.maximum(eq_final, 1e-300)) - np.log(np.maximum(state.equity, 1e-300))
    drawdown = 1.0 - eq_final / peak
    prev_drawdown = 1.0 - state.equity / state.peak_equity
    turnover = fill.turnover.sum(axis=1)
    flat = (np.abs(m1.position).sum(axis=1) == 0) & (np.abs(fill.position).sum(axis=1) == 0)

    if config.reward.kind == "regime_adaptive":  # asset-averaged regime, volatility and market move
        inv_a = 1.0 / market.num_assets
        regime = (market.regime_posterior[t].sum(axis=1) * np.float32(inv_a)).argmax(axis=1)
        sigma = market.volatility[t].sum(axis=1) * inv_a
        market_ret = market.log_return[t1].sum(axis=1) * inv_a
    else:  # unused by the other kinds
        regime, sigma, market_ret = _ZERO_INT, log_ret, log_ret
    _, terms, reward_state = compute_reward(
        config.reward,
        state.reward,
        RewardInputs(log_ret, turnover, drawdown, prev_drawdown, flat, regime, sigma, market_ret),
    )

    steps = state.steps + 1
    terminated = eq_final < config.ruin_equity
    truncated = (steps >= state.length) & ~terminated
    new_state = SimState(
        t=t1,
        start=state.start,
        length=state.length,
        steps=steps,
        equity=eq_final,
        peak_equity=peak,
        position=pos,
        entry_price=entry_price,
        time_in_position=time_in_pos,
        reward=reward_state,
    )
    fee = fill.fee.sum(axis=1)
    slip = fill.slippage_cost.sum(axis=1)
    info = {
        "terminated": terminated,
        "truncated": truncated,
        "bar": t1,
        "equity": eq_final,
        "drawdown": drawdown,
        "log_return": log_ret,
        "market_log_return": m1.log_growth + post_growth,
        "fee": fee,
        "slippage": slip,
        "funding": funding_cost,
        "turnover": turnover,
        "position": pos,
        "target": target,
        "fill_price": fill.fill_price,
        "traded": fill.turnover,
    }
    return new_state, terms, info


# -- observations ------------------------------------------------------------------------------------------------
def n_account_fields() -> int:
    return len(ACCOUNT_FIELDS)


def observe(state: SimState, market: MarketData, config: SimConfig) -> Observation:
    """Observation for decision bar ``state.t``: bars t-W+1..t and the account after bar t's close."""
    w = config.window
    idx = state.t[:, None] + np.arange(1 - w, 1)
    features = market.features[idx]
    regime = market.regime_posterior[idx]
    account = account_fields(state, market, config)
    return Observation(features=features, regime=regime, account=account)


def account_fields(state: SimState, market: MarketData, config: SimConfig) -> np.ndarray:
    """(N, A, K) float32 in the order of ``ACCOUNT_FIELDS``."""
    pos = state.position
    mark = market.mark_close[state.t]
    held = (state.entry_price > 0) & (pos != 0)
    unreal = np.where(held, np.sign(pos) * np.log(mark / np.where(held, state.entry_price, mark)), 0.0)
    n, a = pos.shape
    out = np.empty((n, a, len(ACCOUNT_FIELDS)), dtype=np.float32)
    out[:, :, _F_POSITION] = pos
    out[:, :, _F_UNREALIZED] = unreal
    # scaled by the configured episode length (not the episode's own), so evaluation chunks and backtests of any
    # length present the same scale as training
    out[:, :, _F_TIME] = state.time_in_position * (1.0 / config.episode_length)
    out[:, :, _F_EQUITY] = np.log(np.maximum(state.equity, 1e-300))[:, None]
    out[:, :, _F_DRAWDOWN] = (1.0 - state.equity / state.peak_equity)[:, None]
    out[:, :, _F_BASE] = base_position(market, config, state.t)
    return out


_F_POSITION, _F_UNREALIZED, _F_TIME, _F_EQUITY, _F_DRAWDOWN, _F_BASE = (
    ACCOUNT_FIELDS.index(name)
    for name in ("position", "unrealized_pnl", "time_in_position", "equity_log", "drawdown", "base_position")
)


# -- the vectorized environment ----------------------------------------------------------------------------------
class SimVecEnv:
    """N parallel episodes over one :class:`MarketData`, implementing :class:`himari.env.protocol.VecEnv`.

    Training mode: episodes start uniformly at random in [start_index, end_index) (explicit seed) and finished
    episodes are reset automatically (``StepResult.final_obs`` holds their last observation for bootstrapping).
    Evaluation mode (:meth:`for_evaluation`, or ``starts=``/``lengths=``): deterministic starts and lengths.
    """

    def __init__(
        self,
        market: MarketData,
        config: SimConfig,
        num_envs: int,
        seed: int = 0,
        start_index: int | None = None,
        end_index: int | None = None,
        starts: Sequence[int] | np.ndarray | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        self.market = market
        self.config = config
        self.num_envs = int(num_envs)
        self.num_assets = market.num_assets
        self.action_kind: ActionKind = config.action_kind
        self.window = config.window
        self.n_features = market.num_features
        self.n_regimes = len(REGIME_NAMES)
        self.n_account = len(ACCOUNT_FIELDS)
        self.start_index = 0 if start_index is None else int(start_index)
        self.end_index = market.num_bars if end_index is None else int(end_index)
        self._starts = None if starts is None else np.asarray(starts, dtype=np.int64).reshape(self.num_envs)
        self._lengths = (
            None if lengths is None else np.asarray(lengths, dtype=np.int64).reshape(self.num_envs)
        )
        if self._starts is None:
            start_range(market, config, self.start_index, self.end_index, config.episode_length)
        self._seed = int(seed)
        self.rng = np.random.default_rng(self._seed)
        self.state = self._fresh(self.num_envs)  # reset() draws again (without a seed: from the same stream)
        self._rng_at_init = True

    @classmethod
    def for_evaluation(
        cls, market: MarketData, config: SimConfig, start_index: int, end_index: int, num_envs: int = 1
    ) -> SimVecEnv:
        """Deterministic evaluation over [start_index, end_index): the range of decision bars is split into
        ``num_envs`` contiguous chunks, one episode each, together paying every bar move in the range once."""
        lo = max(int(start_index), config.window - 1)
        total = int(end_index) - 1 - lo  # decision bars lo .. end_index-2
        if total < num_envs:
            raise ConfigError(
                f"evaluation range [{start_index}, {end_index}) too short for {num_envs} chunks"
            )
        edges = lo + (np.arange(num_envs + 1) * total) // num_envs
        return cls(
            market,
            config,
            num_envs,
            seed=0,
            start_index=start_index,
            end_index=end_index,
            starts=edges[:-1],
            lengths=np.diff(edges),
        )

    def _fresh(self, n: int) -> SimState:
        return reset(
            self.market,
            self.config,
            n,
            self.rng,
            self.start_index,
            self.end_index,
            starts=self._starts if self._starts is not None and n == self.num_envs else None,
            lengths=self._lengths,
        )

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self._seed = int(seed)
            self.rng = np.random.default_rng(self._seed)
        elif self._rng_at_init:  # the first reset after construction reproduces the constructor's draw
            self.rng = np.random.default_rng(self._seed)
        self._rng_at_init = False
        self.state = self._fresh(self.num_envs)
        return observe(self.state, self.market, self.config)

    def observe(self) -> Observation:
        return observe(self.state, self.market, self.config)

    def step(self, action: np.ndarray) -> StepResult:
        state, terms, info = step(self.state, action, self.market, self.config)
        terminated, truncated = info["terminated"], info["truncated"]
        done = terminated | truncated
        final_obs = observe(state, self.market, self.config)
        if done.any():
            fresh = self._fresh(self.num_envs)
            state = merge_states(state, fresh, done)
            obs = observe(state, self.market, self.config)
        else:
            obs = final_obs
        info["done"] = done
        info["episode_log_return"] = np.where(done, np.log(np.maximum(info["equity"], 1e-300)), 0.0)
        self.state = state
        for k, v in terms.items():
            info[f"reward_{k}"] = v
        return StepResult(
            obs=obs,
            reward=terms["reward"].astype(np.float32),
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            info=info,
        )
