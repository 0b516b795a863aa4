"""The simulator on torch tensors, so it runs on a GPU when one is present (and on the CPU otherwise).

:class:`TorchSimVecEnv` is the same simulator as :class:`himari.env.sim.SimVecEnv` — same timing contract, costs,
action semantics, rewards, auto-reset and random episode starts (drawn on the host from the same seeded NumPy
generator) — with the market held once on ``device`` and every per-step array a tensor there. Observations,
rewards and info come back as tensors on that device (no host round trip per step), for trainers that keep their
rollout storage on the GPU. ``tests/env/test_torch_sim.py`` checks it step for step against the NumPy simulator.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

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
from himari.env.rewards import RewardConfig, RewardState
from himari.env.sim import SimConfig, SimState, map_arrays, start_range
from himari.env.sim import reset as np_reset
from himari.errors import ConfigError, DataError


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchMarket(NamedTuple):
    gap_return: torch.Tensor  # (T, A) float64
    intrabar_return: torch.Tensor
    log_return: torch.Tensor
    mark_open: torch.Tensor
    mark_close: torch.Tensor
    volatility: torch.Tensor
    features: torch.Tensor  # (T, A, F) float32
    regime_posterior: torch.Tensor  # (T, A, R) float32
    valid: torch.Tensor  # (T, A) bool
    fillable: torch.Tensor  # (T, A) bool


def to_torch_market(
    market: MarketData, device: torch.device, dtype: torch.dtype = torch.float64
) -> TorchMarket:
    def f(x: np.ndarray, dt: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.array(x, copy=True)).to(
            device=device, dtype=dt
        )  # market arrays are read-only

    return TorchMarket(
        f(market.gap_return, dtype),
        f(market.intrabar_return, dtype),
        f(market.log_return, dtype),
        f(market.mark_open, dtype),
        f(market.mark_close, dtype),
        f(market.volatility, dtype),
        f(market.features, torch.float32),
        f(market.regime_posterior, torch.float32),
        f(market.valid, torch.bool),
        f(market.fillable, torch.bool),
    )


# -- kernels (tensor versions of himari.env.execution) -----------------------------------------------------------
def mark_to_market(
    position: torch.Tensor, equity: torch.Tensor, log_return: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gross = torch.exp(log_return)
    growth = 1.0 + (position * (gross - 1.0)).sum(-1)
    alive = growth > 0.0
    safe = torch.where(alive, growth, torch.ones_like(growth))
    new_pos = torch.where(alive[:, None], position * gross / safe[:, None], torch.zeros_like(position))
    new_eq = torch.where(alive, equity * safe, torch.zeros_like(equity))
    log_growth = torch.where(alive, torch.log(safe), torch.full_like(safe, -float("inf")))
    return new_pos, new_eq, log_growth


def rebalance(
    position: torch.Tensor,
    target: torch.Tensor,
    price: torch.Tensor,
    equity: torch.Tensor,
    volatility: torch.Tensor,
    fee_rate: float,
    slippage_rate: float,
    vol_slippage_coef: float,
    can_fill: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    dp = torch.where(can_fill, target - position, torch.zeros_like(target))
    side = torch.sign(dp)
    slip = slippage_rate + vol_slippage_coef * volatility
    notional = dp.abs() * equity[:, None]
    slip_cost = notional * slip
    fee = fee_rate * notional * (1.0 + side * slip)
    equity_post = equity - (slip_cost + fee).sum(-1)
    holding = (position + dp) * equity[:, None]
    ok = equity_post > 0.0
    safe = torch.where(ok, equity_post, torch.ones_like(equity_post))
    new_pos = torch.where(ok[:, None], holding / safe[:, None], torch.zeros_like(holding))
    fill_price = price * (1.0 + side * slip)
    return new_pos, equity_post, fee, slip_cost, fill_price, dp.abs()


def _funding(position: torch.Tensor, equity: torch.Tensor, rate: float) -> tuple[torch.Tensor, ...]:
    cost = equity * position.sum(-1) * rate
    new_eq = equity - cost
    ok = new_eq > 0
    safe = torch.where(ok, new_eq, torch.ones_like(new_eq))
    new_pos = torch.where(ok[:, None], position * (equity / safe)[:, None], torch.zeros_like(position))
    return new_pos, torch.clamp(new_eq, min=0.0), cost


# -- rewards (tensor version of himari.env.rewards.compute_reward) -----------------------------------------------
def compute_reward(
    cfg: RewardConfig,
    st: RewardState,
    r: torch.Tensor,
    turnover: torch.Tensor,
    drawdown: torch.Tensor,
    prev_drawdown: torch.Tensor,
    flat: torch.Tensor,
    regime: torch.Tensor | None,
    sigma: torch.Tensor | None,
    market_ret: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], RewardState]:
    eta = cfg.eta
    a_prev, b_prev, dd2_prev = st.mean, st.mean_sq, st.down_sq
    warm = st.count >= cfg.warmup_steps
    zero = torch.zeros_like(r)
    one = torch.ones_like(r)
    terms: dict[str, torch.Tensor] = {"pnl": r}
    new_abs = st.abs_normalized
    if cfg.kind == "pnl":
        base = r
    elif cfg.kind == "dsr":
        var = b_prev - a_prev * a_prev
        ok = warm & (var > 1e-14)
        safe = torch.where(ok, var, one)
        base = torch.where(ok, (b_prev * (r - a_prev) - 0.5 * a_prev * (r * r - b_prev)) / safe**1.5, zero)
        terms["dsr"] = base
    elif cfg.kind == "ddr":
        dd = torch.sqrt(dd2_prev)
        ok = warm & (dd > 1e-10)
        safe = torch.where(ok, dd, one)
        up = (r - 0.5 * a_prev) / safe
        down = (dd2_prev * (r - 0.5 * a_prev) - 0.5 * a_prev * r * r) / safe**3
        base = torch.where(ok, torch.where(r > 0, up, down), zero)
        terms["ddr"] = base
    elif cfg.kind == "sortino_shaper":
        dd = torch.clamp(torch.sqrt(dd2_prev), min=cfg.downside_floor)
        sortino = r / dd
        trade = cfg.trade_cost * turnover
        dd_term = cfg.dd_weight * drawdown
        base = sortino - trade - dd_term
        terms.update(sortino_step=sortino, sortino_trade_cost=trade, sortino_drawdown=dd_term)
    else:
        assert regime is not None and sigma is not None and market_ret is not None
        sig = torch.clamp(sigma, min=cfg.vol_floor)
        norm_pnl = r / sig
        rows = torch.arange(r.shape[0], device=r.device)
        m_k = st.abs_normalized[rows, regime]
        table = torch.tensor(
            [cfg.regime_weight, cfg.regime_trade_cost, cfg.regime_hold_cost], dtype=r.dtype, device=r.device
        )
        c_trade = table[1][regime] * m_k * turnover
        c_hold = table[2][regime] * m_k * flat.to(r.dtype)
        base = table[0][regime] * norm_pnl - c_trade - c_hold
        terms.update(normalized_pnl=norm_pnl, regime_trade_cost=c_trade, regime_hold_cost=c_hold)
        z = market_ret.abs() / sig
        new_abs = st.abs_normalized.clone()
        new_abs[rows, regime] += eta * (z - new_abs[rows, regime])
    dd_pen = cfg.drawdown_penalty * torch.clamp(drawdown - prev_drawdown, min=0.0)
    to_pen = cfg.turnover_penalty * turnover
    terms.update(drawdown_penalty=dd_pen, turnover_penalty=to_pen, reward=cfg.scale * base - dd_pen - to_pen)
    down = torch.clamp(r, max=0.0)
    new_state = RewardState(
        mean=a_prev + eta * (r - a_prev),
        mean_sq=b_prev + eta * (r * r - b_prev),
        down_sq=dd2_prev + eta * (down * down - dd2_prev),
        abs_normalized=new_abs,
        count=st.count + 1,
    )
    return terms, new_state


# -- the environment ---------------------------------------------------------------------------------------------
class TorchSimVecEnv:
    """N parallel episodes on ``device`` (default: CUDA if available). Same constructor arguments and semantics as
    :class:`himari.env.sim.SimVecEnv`; ``step`` accepts an (N, A) tensor or array and returns tensors."""

    def __init__(
        self,
        market: MarketData,
        config: SimConfig,
        num_envs: int,
        seed: int = 0,
        start_index: int | None = None,
        end_index: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
        check_actions: bool = True,
    ) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        if config.positioned:
            raise ConfigError("the torch simulator runs the plain market simulator only (SimConfig.sizing unset); "
                              "the positioning layer and risk gates run in the NumPy simulator")
        self.market, self.config = market, config
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype
        # Validating actions reads a flag back from the device every step; trainers whose actions come from a
        # policy head (always in range and finite) turn it off to keep the rollout free of host round trips.
        self.check_actions = bool(check_actions)
        self.tm = to_torch_market(market, self.device, dtype)
        self.num_envs = int(num_envs)
        self.num_assets = market.num_assets
        self.action_kind: ActionKind = config.action_kind
        self.window = config.window
        self.n_features = market.num_features
        self.n_regimes = len(REGIME_NAMES)
        self.n_account = len(ACCOUNT_FIELDS)
        self.start_index = 0 if start_index is None else int(start_index)
        self.end_index = market.num_bars if end_index is None else int(end_index)
        start_range(market, config, self.start_index, self.end_index, config.episode_length)
        self._seed = int(seed)
        self.rng = np.random.default_rng(self._seed)
        self._offsets = torch.arange(1 - config.window, 1, device=self.device)
        self._sqrt_ppy = float(np.sqrt(market.timeframe.periods_per_year))
        self._funding = config.costs.funding_rate_per_bar(market.timeframe.seconds)
        self.state = self._fresh()
        self._first_reset = True

    # -- state -------------------------------------------------------------------------------------------------
    def _to_tensor_state(self, s: SimState) -> SimState:
        dev, dt = self.device, self.dtype

        def conv(x: np.ndarray) -> torch.Tensor:
            t = torch.as_tensor(np.ascontiguousarray(x), device=dev)
            return t.to(dt) if t.is_floating_point() else t

        return map_arrays(conv, s)

    def _fresh(self, n: int | None = None) -> SimState:
        """New episodes for all environments, or ``n`` of them (auto-reset draws only what it needs, from the same
        stream as the NumPy simulator)."""
        n = self.num_envs if n is None else n
        s = np_reset(self.market, self.config, n, self.rng, self.start_index, self.end_index)
        return self._to_tensor_state(s)

    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self._seed = int(seed)
            self.rng = np.random.default_rng(self._seed)
        elif self._first_reset:
            self.rng = np.random.default_rng(self._seed)
        self._first_reset = False
        self.state = self._fresh()
        return self.observe()

    # -- observation -------------------------------------------------------------------------------------------
    def _base_position(self, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.delta_base == "constant":
            return torch.full(
                (t.shape[0], self.num_assets), cfg.base_position, dtype=self.dtype, device=self.device
            )
        sigma_annual = self.tm.volatility[t] * self._sqrt_ppy
        return torch.clamp(cfg.target_annual_vol / torch.clamp(sigma_annual, min=1e-6), 0.0, cfg.max_position)

    def observe(self, state: SimState | None = None) -> Observation:
        s = self.state if state is None else state
        idx = s.t[:, None] + self._offsets
        pos = s.position
        held = (s.entry_price > 0) & (pos != 0)
        mark = self.tm.mark_close[s.t]
        unreal = torch.where(
            held,
            torch.sign(pos) * torch.log(mark / torch.where(held, s.entry_price, mark)),
            torch.zeros_like(pos),
        )
        n, a = pos.shape
        columns = {
            "position": pos,
            "unrealized_pnl": unreal,
            "time_in_position": s.time_in_position.to(self.dtype) * (1.0 / self.config.episode_length),
            "equity_log": torch.log(torch.clamp(s.equity, min=1e-300))[:, None].expand(n, a),
            "drawdown": (1.0 - s.equity / s.peak_equity)[:, None].expand(n, a),
            "base_position": self._base_position(s.t),
        }
        account = torch.stack([columns[name].to(torch.float32) for name in ACCOUNT_FIELDS], dim=-1)
        return Observation(self.tm.features[idx], self.tm.regime_posterior[idx], account)  # type: ignore[arg-type]

    # -- step --------------------------------------------------------------------------------------------------
    def _target(self, action: torch.Tensor, current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        n, a = current.shape
        if action.ndim == 1 and a == 1:
            action = action[:, None]
        if tuple(action.shape) != (n, a):
            raise DataError(f"action must have shape (N={n}, A={a}), got {tuple(action.shape)}")
        cap = cfg.max_position
        lo = -cap if cfg.allow_short else 0.0
        if cfg.action_kind == "discrete":
            act = action.to(torch.int64)
            if self.check_actions and bool(((act < HOLD) | (act > SHORT)).any()):
                raise DataError("discrete action must be in {0, 1, 2}")
            hold = current if cfg.hold_mode == "keep" else torch.zeros_like(current)
            cap_t = torch.full_like(current, cap)
            lo_t = torch.full_like(current, lo)
            if cfg.discrete_rebalance:
                long_t, short_t = cap_t, lo_t
            else:
                long_t = torch.where(current > 0, current, cap_t)
                short_t = torch.where(current < 0, current, lo_t) if lo < 0 else lo_t
            target = torch.where(act == LONG, long_t, torch.where(act == SHORT, short_t, hold))
        else:
            x = action.to(self.dtype)
            if self.check_actions and not bool(torch.isfinite(x).all()):
                raise DataError("continuous action contains NaN or inf")
            if cfg.action_kind == "continuous":
                target = torch.clamp(x, lo, cap)
            else:
                target = torch.clamp(self._base_position(t) + cfg.delta_scale * torch.tanh(x), lo, cap)
        if cfg.max_gross_exposure is not None:
            gross = target.abs().sum(1, keepdim=True)
            target = target * torch.clamp(cfg.max_gross_exposure / torch.clamp(gross, min=1e-12), max=1.0)
        return target

    def step(self, action: torch.Tensor | np.ndarray) -> StepResult:
        cfg, costs, tm, s = self.config, self.config.costs, self.tm, self.state
        act = torch.as_tensor(action, device=self.device)
        t = s.t
        t1 = t + 1
        if costs.fill == "next_open":
            pre, post, price = tm.gap_return[t1], tm.intrabar_return[t1], tm.mark_open[t1]
        else:
            pre, post, price = tm.log_return[t1], None, tm.mark_close[t1]
        pos1, eq1, g1 = mark_to_market(s.position, s.equity, pre)
        funding_cost = torch.zeros_like(eq1)
        if self._funding != 0.0 and costs.fill == "next_close":  # old position held through bar t+1
            pos1, eq1, funding_cost = _funding(pos1, eq1, self._funding)
        target = self._target(act, pos1, t)
        valid = tm.valid[t]
        target = torch.where(
            valid, target, torch.zeros_like(target) if cfg.invalid_policy == "flat" else pos1
        )
        fpos, feq, fee, slip, fill_price, traded = rebalance(
            pos1, target, price, eq1, tm.volatility[t], costs.fee_rate, costs.slippage_rate,
            costs.vol_slippage_coef, tm.fillable[t],
        )  # fmt: skip
        if post is not None:
            pos, eq, g2 = mark_to_market(fpos, feq, post)
        else:
            pos, eq, g2 = fpos, feq, torch.zeros_like(feq)
        if self._funding != 0.0 and costs.fill == "next_open":  # new position held through bar t+1
            pos, eq, funding_cost = _funding(pos, eq, self._funding)

        old_sign, new_sign = torch.sign(pos1), torch.sign(fpos)
        entered = (new_sign != old_sign) & (new_sign != 0)
        entry = torch.where(
            entered, fill_price, torch.where(new_sign == 0, torch.zeros_like(fill_price), s.entry_price)
        )
        tip = torch.where(
            new_sign == 0,
            torch.zeros_like(s.time_in_position),
            torch.where(entered, torch.ones_like(s.time_in_position), s.time_in_position + 1),
        )
        eq_final = torch.clamp(eq, min=0.0)
        peak = torch.maximum(s.peak_equity, eq_final)
        log_ret = torch.log(torch.clamp(eq_final, min=1e-300)) - torch.log(torch.clamp(s.equity, min=1e-300))
        drawdown = 1.0 - eq_final / peak
        prev_dd = 1.0 - s.equity / s.peak_equity
        turnover = traded.sum(-1)
        flat = (pos1.abs().sum(-1) == 0) & (fpos.abs().sum(-1) == 0)
        regime = sigma = market_ret = None
        if cfg.reward.kind == "regime_adaptive":
            inv_a = 1.0 / self.num_assets
            regime = (tm.regime_posterior[t].sum(1) * inv_a).argmax(1)
            sigma = tm.volatility[t].sum(1) * inv_a
            market_ret = tm.log_return[t1].sum(1) * inv_a
        terms, rstate = compute_reward(
            cfg.reward, s.reward, log_ret, turnover, drawdown, prev_dd, flat, regime, sigma, market_ret
        )
        steps = s.steps + 1
        terminated = eq_final < cfg.ruin_equity
        truncated = (steps >= s.length) & ~terminated
        new_state = SimState(t1, s.start, s.length, steps, eq_final, peak, pos, entry, tip, s.stack, rstate)  # type: ignore[arg-type]
        done = terminated | truncated
        final_obs = self.observe(new_state)
        info: dict[str, torch.Tensor] = {
            "terminated": terminated, "truncated": truncated, "done": done, "bar": t1, "equity": eq_final,
            "drawdown": drawdown, "log_return": log_ret, "market_log_return": g1 + g2,
            "fee": fee.sum(-1), "slippage": slip.sum(-1), "funding": funding_cost, "turnover": turnover,
            "position": pos, "target": target, "fill_price": fill_price, "traded": traded,
        }  # fmt: skip
        info["episode_log_return"] = torch.where(done, torch.log(torch.clamp(eq_final, min=1e-300)), 0.0)
        if bool(done.any()):
            rows = torch.nonzero(done).squeeze(1)
            fresh = self._fresh(int(rows.numel()))

            def put(o: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
                o = o.clone()
                o[rows] = f
                return o

            new_state = map_arrays(put, new_state, fresh)
            obs = self.observe(new_state)
        else:
            obs = final_obs
        self.state = new_state
        for k, v in terms.items():
            info[f"reward_{k}"] = v
        return StepResult(
            obs=obs,
            reward=terms["reward"].to(torch.float32),  # type: ignore[arg-type]
            terminated=terminated,  # type: ignore[arg-type]
            truncated=truncated,  # type: ignore[arg-type]
            final_obs=final_obs,
            info=info,  # type: ignore[arg-type]
        )
