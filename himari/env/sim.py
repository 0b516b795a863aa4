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

import contextlib
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field, model_validator

from himari.config import FrozenConfig
from himari.env import kernels
from himari.env.execution import CostConfig, mark_to_market
from himari.env.kernels import MODE_DISCRETE, MODE_TARGET, observe_kernel
from himari.env.market import MarketData
from himari.env.protocol import (
    ACCOUNT_FIELDS,
    HOLD,
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
from himari.risk.batched import batched_risk, update_brake_peak
from himari.risk.budget import STRATEGY_RETURN_MEMORY, budget_step, budget_targets
from himari.risk.config import RiskConfig
from himari.sizing.kelly import (
    OutcomeState,
    initial_outcomes,
    kelly_from_sums,
    record_outcomes,
    remember_direction,
)
from himari.sizing.positioning import (
    apply_cost_controls,
    discrete_directions,
    propose_positions,
    vol_target_position,
)
from himari.sizing.sizer import SizingConfig


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
    # The positioning layer and the risk gates of the trading stack. With ``sizing`` set, the policy's output goes
    # through the same positioning functions and (with ``risk`` set) the same risk gates as in trading
    # (himari.sizing.positioning, himari.risk.batched) before it is filled: a policy learns in the world it trades
    # in. Without ``sizing``, actions map to raw positions (discrete: +-max_position; delta: around the simulator's
    # own base) - the plain market simulator, for Gymnasium users and tests of the accounting.
    sizing: SizingConfig | None = None
    risk: RiskConfig | None = None

    @model_validator(mode="after")
    def _check_stack(self) -> SimConfig:
        if self.risk is not None and self.sizing is None:
            raise ValueError("risk gates in the simulator need the positioning layer: set sizing as well")
        if self.sizing is not None and self.sizing.use_confidence:
            raise ValueError(
                "sizing.use_confidence is not available in the simulator (actions carry no probabilities): "
                "training and trading would size differently"
            )
        return self

    def execution(self) -> SimConfig:
        """The plain execution of already sized and risk-checked targets (same costs, fills and timing): what a
        trading session and the baselines step through."""
        return self.replace(action_kind="continuous", max_position=EXEC_MAX_POSITION, allow_short=True,
                            max_gross_exposure=None, sizing=None, risk=None)

    @property
    def positioned(self) -> bool:
        """Whether actions go through the positioning layer (and risk gates) of the trading stack."""
        return self.sizing is not None


class StackState(NamedTuple):
    """Per-episode state of the positioning layer and risk gates, as a trading session keeps it (N episodes)."""

    regime_multiplier: np.ndarray  # (N, A) held regime multiplier (NaN: none yet)
    brake_peak: np.ndarray  # (N,) the drawdown brake's decaying reference peak (NaN: none yet)
    outcomes: OutcomeState  # the signal's outcomes for the Kelly estimate
    strategy_returns: np.ndarray  # (N, M) the last M per-bar equity log returns, oldest first (NaN: none)
    budget: np.ndarray  # (N,) smoothed risk budget


def initial_stack_state(num_envs: int, num_assets: int, config: SimConfig) -> StackState:
    """Fresh stack state: nothing held yet, no outcomes, budget 1 (placeholders without the positioning layer)."""
    window = config.sizing.kelly_window_bars if config.sizing is not None else 1
    memory = STRATEGY_RETURN_MEMORY if config.risk is not None else 1
    return StackState(
        np.full((num_envs, num_assets), np.nan),
        np.full(num_envs, np.nan),
        initial_outcomes(num_envs, num_assets, window),
        np.full((num_envs, memory), np.nan),
        np.ones(num_envs),
    )


def map_arrays(fn: Any, *states: Any) -> Any:
    """Apply ``fn`` to corresponding arrays (or tensors) of (nested) NamedTuples such as :class:`SimState`."""
    first = states[0]
    if isinstance(first, tuple):
        return type(first)(*(map_arrays(fn, *parts) for parts in zip(*states, strict=True)))
    return fn(*states)


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
    stack: StackState  # state of the positioning layer and the risk gates (what a trading session keeps)
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
        stack=initial_stack_state(num_envs, a, config),
        reward=initial_reward_state(num_envs, config.reward),
    )


def take_rows(state: SimState, rows: np.ndarray) -> SimState:
    """The episodes ``rows`` of ``state`` as a smaller state."""
    return map_arrays(lambda x: x[rows], state)


def replace_rows(state: SimState, rows: np.ndarray, new: SimState) -> SimState:
    """``state`` with the episodes ``rows`` replaced by ``new`` (len(rows) episodes); ``state`` is not modified."""
    return map_arrays(lambda old, fresh: _with_rows(old, rows, fresh), state, new)


def _with_rows(old: np.ndarray, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
    out = old.copy()
    out[rows] = new
    return out


# -- actions -----------------------------------------------------------------------------------------------------
def base_position(market: MarketData, config: SimConfig, t: np.ndarray) -> np.ndarray:
    """Base position (N, A) at decision bar t for the delta action: constant, or vol-targeted
    target_annual_vol / (sigma_t sqrt(periods_per_year)) clipped to [0, max_position] (sigma_t causal)."""
    if config.delta_base == "constant":
        return np.full((t.shape[0], market.num_assets), config.base_position)
    sigma_annual = market.volatility[t] * np.sqrt(market.timeframe.periods_per_year)
    return np.clip(config.target_annual_vol / np.maximum(sigma_annual, 1e-6), 0.0, config.max_position)


# |position| bound of execution when targets arrive sized and risk-checked (the risk layer's leverage gate binds first)
EXEC_MAX_POSITION = 10.0
_ZERO_INT = np.zeros(1, dtype=np.int64)
_NO_ACTION = np.zeros((1, 1), dtype=np.int64)
_NO_TARGET = np.zeros((1, 1), dtype=np.float64)


def _discrete_codes(action: np.ndarray, n: int, a: int) -> np.ndarray:
    """Validated int64 (N, A) HOLD/LONG/SHORT codes."""
    act = np.asarray(action)
    if act.ndim == 1 and a == 1:
        act = act.reshape(n, 1)
    if act.shape != (n, a):
        raise DataError(f"action must have shape (N={n}, A={a}), got {np.shape(action)}")
    if act.dtype != np.int64:
        if not np.issubdtype(act.dtype, np.integer) and not np.all(act == np.round(act)):
            raise DataError("discrete action must be integer HOLD=0 / LONG=1 / SHORT=2")
        act = act.astype(np.int64)
    if act.min() < HOLD or act.max() > SHORT:
        raise DataError(f"discrete action must be in {{0, 1, 2}}, got values {np.unique(act)}")
    return np.ascontiguousarray(act)


def _continuous_targets(
    action: np.ndarray, market: MarketData, config: SimConfig, t: np.ndarray, n: int, a: int
) -> np.ndarray:
    """Targets (N, A) of the continuous / delta actions (they do not depend on the current position)."""
    x = np.asarray(action, dtype=np.float64)
    if x.ndim == 1 and a == 1:
        x = x.reshape(n, 1)
    if x.shape != (n, a):
        raise DataError(f"action must have shape (N={n}, A={a}), got {np.shape(action)}")
    if not np.isfinite(x).all():
        raise DataError("continuous action contains NaN or inf")
    cap = config.max_position
    lo = -cap if config.allow_short else 0.0
    if config.action_kind == "continuous":
        return np.ascontiguousarray(np.clip(x, lo, cap))
    return np.ascontiguousarray(np.clip(base_position(market, config, t) + config.delta_scale * np.tanh(x), lo, cap))


def step_params(config: SimConfig, market: MarketData) -> np.ndarray:
    """The scalar settings of :func:`himari.env.kernels.step_kernel` (its ``P_*`` vector)."""
    costs = config.costs
    p = np.zeros(kernels.N_PARAMS)
    if config.positioned:  # targets come sized and risk-checked; execution takes them as they are
        p[kernels.P_MODE] = MODE_TARGET
        p[kernels.P_CAP] = EXEC_MAX_POSITION
        p[kernels.P_LO] = -EXEC_MAX_POSITION
        p[kernels.P_MAX_GROSS] = -1.0
    else:
        cap = config.max_position
        p[kernels.P_MODE] = MODE_DISCRETE if config.action_kind == "discrete" else MODE_TARGET
        p[kernels.P_CAP] = cap
        p[kernels.P_LO] = -cap if config.allow_short else 0.0
        p[kernels.P_MAX_GROSS] = -1.0 if config.max_gross_exposure is None else config.max_gross_exposure
    p[kernels.P_HOLD_FLAT] = config.hold_mode == "flat"
    p[kernels.P_REBALANCE] = config.discrete_rebalance
    p[kernels.P_INVALID_FLAT] = config.invalid_policy == "flat"
    p[kernels.P_NEXT_OPEN] = costs.fill == "next_open"
    p[kernels.P_FUNDING] = costs.funding_rate_per_bar(market.timeframe.seconds)
    p[kernels.P_FEE] = costs.fee_rate
    p[kernels.P_SLIPPAGE] = costs.slippage_rate
    p[kernels.P_VOL_SLIPPAGE] = costs.vol_slippage_coef
    p[kernels.P_RUIN] = config.ruin_equity
    return p


def sized_base(market: MarketData, sizing: SizingConfig, t: np.ndarray) -> np.ndarray:
    """(N, A) vol-targeted base position of the positioning layer at decision bars ``t``."""
    sigma = market.sizing_sigma_at(sizing.vol_lookback_bars, sizing.vol_min_bars, t)
    return vol_target_position(sigma, sizing.target_vol_annual, market.timeframe.periods_per_year, sizing.max_position)


def pre_fill_positions(state: SimState, market: MarketData, config: SimConfig) -> np.ndarray:
    """Positions (N, A) just before the fill at bar t+1: after the close[t] -> fill-price move."""
    t1 = state.t + 1
    pre = market.gap_return[t1] if config.costs.fill == "next_open" else market.log_return[t1]
    return mark_to_market(state.position, state.equity, pre).position


def risk_window(market: MarketData, risk: RiskConfig, t: np.ndarray) -> np.ndarray:
    """(N, W, A) trailing :attr:`MarketData.risk_returns` ending at decision bars ``t`` (NaN before the data)."""
    w = max(risk.cov_window_bars, risk.portfolio_var_window_bars, risk.min_history_bars)
    rows = t[:, None] + np.arange(1 - w, 1)[None, :]
    out = market.risk_returns[np.maximum(rows, 0)]
    return np.where((rows >= 0)[:, :, None], out, np.nan)


def positioned_orders(
    state: SimState, action: np.ndarray, market: MarketData, config: SimConfig, direction: np.ndarray | None = None
) -> tuple[np.ndarray, StackState]:
    """Orders (N, A) of the trading stack for the policy's ``action`` at decision bars ``state.t``, and the new stack
    state: positioning (himari.sizing.positioning, the signal's Kelly estimate) -> risk gates
    (himari.risk.batched, with the tail fits, budget and reference peak in force) -> rebalance band against the
    positions just before the fill. The same functions size and risk a position in trading
    (:class:`himari.risk.manager.PositionManager`, :class:`himari.trading.session.TradingSession`).
    ``direction`` (N, A): the base direction of a delta action (the L2 layer of a stacked policy; default long)."""
    sizing = config.sizing
    assert sizing is not None
    stack = state.stack
    t = state.t
    n, a = state.position.shape
    if config.action_kind == "discrete":
        values = discrete_directions(_discrete_codes(action, n, a), state.position, config.hold_mode, config.allow_short)
        kind = "discrete"
    else:
        values = np.asarray(action, dtype=np.float64).reshape(n, a)
        if not np.isfinite(values).all():
            raise DataError("continuous action contains NaN or inf")
        kind = config.action_kind
    tf = market.timeframe
    posterior = market.regime_posterior[t].astype(np.float64)
    prop = propose_positions(kind, values, sized_base(market, sizing, t), posterior, stack.regime_multiplier,
                             state.position, sizing, direction=direction)
    # the signal's outcome at bar t (of the direction proposed at t-1), then this bar's direction
    outcomes = record_outcomes(stack.outcomes, market.risk_returns[t], state.steps > 0)
    outcomes = remember_direction(outcomes, prop.direction, np.ones(n, dtype=bool))
    target = prop.proposal
    brake_peak, budget = stack.brake_peak, stack.budget
    risk = config.risk
    if risk is not None:
        if risk.drawdown_peak_halflife_days is not None:
            elapsed = np.where(state.steps > 0, (market.timestamps_ns[t] - market.timestamps_ns[t - 1]) / tf.nanoseconds,
                               0.0)
            brake_peak = update_brake_peak(brake_peak, state.equity, state.peak_equity, elapsed,
                                           risk.drawdown_peak_halflife_days * 86400.0 / tf.seconds)
        if risk.budget_enabled:
            goal = budget_targets(stack.strategy_returns, tf.periods_per_year, window=risk.budget_window_bars,
                                  min_bars=risk.budget_min_bars, sensitivity=risk.budget_sensitivity,
                                  budget_min=risk.budget_min, budget_max=risk.budget_max)
            budget = budget_step(budget, goal, risk.budget_halflife_bars, risk.budget_min, risk.budget_max)
        kelly = kelly_from_sums(
            outcomes.wins, outcomes.losses, outcomes.sum_gain, outcomes.sum_loss, prior_alpha=sizing.kelly_prior_alpha,
            prior_beta=sizing.kelly_prior_beta, fraction=sizing.kelly_fraction, max_position=sizing.kelly_max_position,
            min_outcomes=sizing.kelly_min_outcomes, win_prob_quantile=sizing.kelly_win_prob_quantile,
        )
        es_long, es_short = market.tail_es(risk) if risk.evt_enabled else (None, None)
        target = batched_risk(
            target, risk_window(market, risk, t), posterior, state.equity, state.peak_equity, risk,
            tf.periods_per_year, tf.seconds,
            brake_peak=brake_peak if risk.drawdown_peak_halflife_days is not None else None,
            es_long=None if es_long is None else es_long[t], es_short=None if es_short is None else es_short[t],
            kelly=kelly, budget=budget, position=state.position,
        ).target
    order = apply_cost_controls(target, pre_fill_positions(state, market, config), state.time_in_position,
                                market.timestamps_ns[t], tf.nanoseconds, sizing)
    return np.ascontiguousarray(order), stack._replace(
        regime_multiplier=prop.held, brake_peak=brake_peak, outcomes=outcomes, budget=budget
    )


# -- the step ----------------------------------------------------------------------------------------------------
def step(
    state: SimState,
    action: np.ndarray,
    market: MarketData,
    config: SimConfig,
    params: np.ndarray | None = None,
    direction: np.ndarray | None = None,
) -> tuple[SimState, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Advance N episodes by one bar. Returns (new state, reward terms, info); info holds ``terminated`` and
    ``truncated`` (bool (N,)) plus per-episode accounting (equity, fees, slippage, funding, turnover, fills).

    The accounting runs in one compiled pass (:func:`himari.env.kernels.step_kernel`: the arithmetic of
    :mod:`himari.env.execution`), the reward in :func:`himari.env.rewards.compute_reward`. ``params``: a cached
    :func:`step_params` of (config, market), computed here when omitted.
    """
    t = state.t
    n, a = state.position.shape
    stack = state.stack
    if config.positioned:
        act = _NO_ACTION
        target_in, stack = positioned_orders(state, action, market, config, direction)
    elif config.action_kind == "discrete":
        act, target_in = _discrete_codes(action, n, a), _NO_TARGET
    else:
        act, target_in = _NO_ACTION, _continuous_targets(action, market, config, t, n, a)
    out, flags, per_asset, time_in_pos = kernels.step_kernel(
        t,
        state.steps,
        state.length,
        state.equity,
        state.peak_equity,
        state.position,
        state.entry_price,
        state.time_in_position,
        act,
        target_in,
        step_params(config, market) if params is None else params,
        market.execution_table,
    )
    eq_final = out[kernels.O_EQUITY]
    drawdown = out[kernels.O_DRAWDOWN]
    turnover = out[kernels.O_TURNOVER]
    pos = per_asset[kernels.A_POSITION]
    terminated, truncated = flags[kernels.B_TERMINATED], flags[kernels.B_TRUNCATED]
    # logs vectorized here (SIMD) rather than per episode in the kernel
    log_ret = np.log(np.maximum(eq_final, 1e-300)) - np.log(np.maximum(state.equity, 1e-300))
    # a move that took equity to <= 0 has growth 0 (log -inf); the errstate costs only where that happened
    wiped = flags[kernels.B_WIPED].any()
    with np.errstate(divide="ignore") if wiped else contextlib.nullcontext():
        market_log_return = np.log(out[kernels.O_GROWTH_PRE]) + np.log(out[kernels.O_GROWTH_POST])
    t1 = t + 1
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
        RewardInputs(
            log_ret,
            turnover,
            drawdown,
            out[kernels.O_PREV_DRAWDOWN],
            flags[kernels.B_FLAT],
            regime,
            sigma,
            market_ret,
        ),
    )
    new_state = SimState(
        t=t1,
        start=state.start,
        length=state.length,
        steps=state.steps + 1,
        equity=eq_final,
        peak_equity=out[kernels.O_PEAK],
        position=pos,
        entry_price=per_asset[kernels.A_ENTRY],
        time_in_position=time_in_pos,
        stack=stack if config.risk is None else stack._replace(
            strategy_returns=np.concatenate([stack.strategy_returns[:, 1:], log_ret[:, None]], axis=1)
        ),
        reward=reward_state,
    )
    info = {
        "terminated": terminated,
        "truncated": truncated,
        "bar": t1,
        "equity": eq_final,
        "drawdown": drawdown,
        "log_return": log_ret,
        "market_log_return": market_log_return,
        "fee": out[kernels.O_FEE],
        "slippage": out[kernels.O_SLIPPAGE],
        "funding": out[kernels.O_FUNDING],
        "turnover": turnover,
        "position": pos,
        "target": per_asset[kernels.A_TARGET],
        "fill_price": per_asset[kernels.A_FILL_PRICE],
        "traded": per_asset[kernels.A_TRADED],
    }
    return new_state, terms, info


# -- observations ------------------------------------------------------------------------------------------------
_F_UNREALIZED, _F_EQUITY = ACCOUNT_FIELDS.index("unrealized_pnl"), ACCOUNT_FIELDS.index("equity_log")
_F_BASE = ACCOUNT_FIELDS.index("base_position")


def n_account_fields() -> int:
    return len(ACCOUNT_FIELDS)


def observe_params(config: SimConfig, market: MarketData) -> np.ndarray:
    """The scalar settings of :func:`himari.env.kernels.observe_kernel` (its ``Q_*`` vector)."""
    q = np.zeros(kernels.N_OBSERVE_PARAMS)
    # time in position is scaled by the configured episode length (not the episode's own), so evaluation chunks and
    # backtests of any length present the same scale as training
    q[kernels.Q_INV_LENGTH] = 1.0 / config.episode_length
    q[kernels.Q_BASE_CONSTANT] = config.delta_base == "constant"
    q[kernels.Q_BASE_POSITION] = config.base_position
    q[kernels.Q_TARGET_VOL] = config.target_annual_vol
    q[kernels.Q_SQRT_PPY] = np.sqrt(market.timeframe.periods_per_year)
    q[kernels.Q_MAX_POSITION] = config.max_position
    return q


_NO_ROWS = np.zeros(0, dtype=bool)


def _obs_buffers(state: SimState, market: MarketData, config: SimConfig) -> tuple[np.ndarray, ...]:
    n, a = state.position.shape
    w = config.window
    return (
        np.empty((n, w, a, market.num_features), dtype=np.float32),
        np.empty((n, w, a, market.regime_posterior.shape[2]), dtype=np.float32),
        np.empty((n, a, len(ACCOUNT_FIELDS)), dtype=np.float32),
        np.empty((2, n, a)),
    )


def _state_args(state: SimState) -> tuple[np.ndarray, ...]:
    return (
        np.asarray(state.t, dtype=np.int64),
        state.position,
        state.entry_price,
        state.time_in_position,
        state.equity,
        state.peak_equity,
    )


def _out_args(bufs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    features, regime, account, log_args = bufs
    n = features.shape[0]
    return (
        features.reshape(n, features[0].size),
        regime.reshape(n, regime[0].size),
        account,
        log_args,
    )


def _finish(bufs: tuple[np.ndarray, ...], position: np.ndarray) -> Observation:
    """The two logarithmic account fields, vectorized (see observe_kernel)."""
    features, regime, account, log_args = bufs
    logs = np.log(log_args)
    account[:, :, _F_UNREALIZED] = np.sign(position) * logs[0]
    account[:, :, _F_EQUITY] = logs[1]
    return Observation(features=features, regime=regime, account=account)


def observe(
    state: SimState, market: MarketData, config: SimConfig, params: np.ndarray | None = None
) -> Observation:
    """Observation for decision bar ``state.t``: bars t-W+1..t and the account after bar t's close
    (account fields: see :data:`himari.env.protocol.ACCOUNT_FIELDS`; computed in
    :func:`himari.env.kernels.observe_kernel`). ``params``: a cached :func:`observe_params`."""
    return _observe(state, None, _NO_ROWS, market, config, params)[0]


def observe_pair(
    state: SimState,
    renewed_state: SimState,
    renewed: np.ndarray,
    market: MarketData,
    config: SimConfig,
    params: np.ndarray | None = None,
) -> tuple[Observation, Observation]:
    """``(observe(state), observe(renewed_state))`` in one pass, for states that differ only in the ``renewed``
    rows (bool (N,); the episodes an auto-reset restarted)."""
    first, second = _observe(state, renewed_state, renewed, market, config, params)
    assert second is not None
    return first, second


def _observe(
    state: SimState,
    state2: SimState | None,
    renewed: np.ndarray,
    market: MarketData,
    config: SimConfig,
    params: np.ndarray | None,
) -> tuple[Observation, Observation | None]:
    bufs = _obs_buffers(state, market, config)
    bufs2 = bufs if state2 is None else _obs_buffers(state, market, config)
    observe_kernel(
        config.window,
        market.features,
        market.regime_posterior,
        market.execution_table,
        observe_params(config, market) if params is None else params,
        *_state_args(state),
        *_out_args(bufs),
        state2 is not None,
        renewed,
        *_state_args(state if state2 is None else state2),
        *_out_args(bufs2),
    )
    first = _finish(bufs, state.position)
    second = None if state2 is None else _finish(bufs2, state2.position)
    if config.sizing is not None:  # the account shows the positioning layer's base, not the simulator's own
        first.account[:, :, _F_BASE] = sized_base(market, config.sizing, state.t)
        if second is not None and state2 is not None:
            second.account[:, :, _F_BASE] = sized_base(market, config.sizing, state2.t)
    return first, second


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
        self._params = step_params(config, market)
        self._obs_params = observe_params(config, market)
        self.rng = np.random.default_rng(self._seed)
        self.state = self._fresh()  # reset() draws again (without a seed: from the same stream)
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

    def _fresh(self, rows: np.ndarray | None = None) -> SimState:
        """New episodes for all environments, or for ``rows`` only (auto-reset draws only what it needs)."""
        n = self.num_envs if rows is None else int(rows.size)

        def pick(x: np.ndarray | None) -> np.ndarray | None:
            return x if x is None or rows is None else x[rows]

        return reset(
            self.market,
            self.config,
            n,
            self.rng,
            self.start_index,
            self.end_index,
            starts=pick(self._starts),
            lengths=pick(self._lengths),
        )

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self._seed = int(seed)
            self.rng = np.random.default_rng(self._seed)
        elif self._rng_at_init:  # the first reset after construction reproduces the constructor's draw
            self.rng = np.random.default_rng(self._seed)
        self._rng_at_init = False
        self.state = self._fresh()
        return observe(self.state, self.market, self.config, self._obs_params)

    def observe(self) -> Observation:
        return observe(self.state, self.market, self.config, self._obs_params)

    def step(self, action: np.ndarray, direction: np.ndarray | None = None) -> StepResult:
        """One bar for every episode; ``direction`` (N, A) is the base direction of delta actions (positioned
        simulator only: the L2 layer of a stacked policy)."""
        state, terms, info = step(self.state, action, self.market, self.config, self._params, direction)
        terminated, truncated = info["terminated"], info["truncated"]
        done = terminated | truncated
        if done.any():
            # finished episodes restart; final_obs = obs except in their rows, which hold the last observation
            rows = np.flatnonzero(done)
            ended, state = state, replace_rows(state, rows, self._fresh(rows))
            final_obs, obs = observe_pair(ended, state, done, self.market, self.config, self._obs_params)
        else:
            obs = final_obs = observe(state, self.market, self.config, self._obs_params)
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
