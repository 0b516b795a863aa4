"""A plain per-step, per-asset Python reference of the simulator — used only in tests.

It re-implements the accounting of :mod:`himari.env.sim` / :mod:`himari.env.execution` and the rewards of
:mod:`himari.env.rewards` with scalar ``math`` arithmetic and explicit loops, written from the documented formulas
(not by calling the vectorized kernels), so the equivalence test checks the vectorized code against an independent
reading of the contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from himari.env.market import MarketData
from himari.env.sim import SimConfig


@dataclass
class ReferenceTrace:
    position: list[list[float]] = field(default_factory=list)  # after each step (at close t+1)
    equity: list[float] = field(default_factory=list)
    fee: list[float] = field(default_factory=list)
    slippage: list[float] = field(default_factory=list)
    funding: list[float] = field(default_factory=list)
    fill_price: list[list[float]] = field(default_factory=list)
    target: list[list[float]] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


def reference_episode(
    market: MarketData, config: SimConfig, start: int, actions: np.ndarray, length: int | None = None
) -> ReferenceTrace:
    """Run one episode from decision bar ``start`` with ``actions[k]`` (A,) at step k; stops at ruin or length."""
    n_assets = market.num_assets
    length = config.episode_length if length is None else length
    costs, rc = config.costs, config.reward
    fee_rate = (costs.taker_fee_bps if costs.order_type == "taker" else costs.maker_fee_bps) / 10_000.0
    slip_rate = costs.slippage_bps / 10_000.0
    rate = 0.0
    if costs.funding_rate_per_8h is not None:
        rate = costs.funding_rate_per_8h * (market.timeframe.seconds / 3600.0) / 8.0
    cap = config.max_position
    lo_cap = -cap if config.allow_short else 0.0
    ppy = market.timeframe.periods_per_year

    equity, peak = 1.0, 1.0
    pos = [0.0] * n_assets
    mean = mean_sq = down_sq = 0.0
    abs_norm = [rc.initial_abs_normalized] * 4
    count = 0
    trace = ReferenceTrace()

    def move(pos: list[float], equity: float, rets: list[float]) -> tuple[list[float], float]:
        growth = 1.0
        for a in range(n_assets):
            growth += pos[a] * (math.exp(rets[a]) - 1.0)
        if growth <= 0.0:
            return [0.0] * n_assets, 0.0
        return [pos[a] * math.exp(rets[a]) / growth for a in range(n_assets)], equity * growth

    t = start
    for k in range(length):
        t1 = t + 1
        if costs.fill == "next_open":
            pre = [float(market.gap_return[t1, a]) for a in range(n_assets)]
            post: list[float] | None = [float(market.intrabar_return[t1, a]) for a in range(n_assets)]
            price = [float(market.mark_open[t1, a]) for a in range(n_assets)]
        else:
            pre = [float(market.log_return[t1, a]) for a in range(n_assets)]
            post = None
            price = [float(market.mark_close[t1, a]) for a in range(n_assets)]
        equity_before, dd_before = equity, 1.0 - equity / peak
        pos, equity = move(pos, equity, pre)
        fund = 0.0

        def pay_funding(pos: list[float], equity: float) -> tuple[list[float], float, float]:
            cost = equity * sum(pos) * rate
            new_eq = equity - cost
            new_pos = [p * equity / new_eq for p in pos] if new_eq > 0 else [0.0] * n_assets
            return new_pos, max(new_eq, 0.0), cost

        if rate != 0.0 and costs.fill == "next_close":  # the old position is held through bar t+1
            pos, equity, fund = pay_funding(pos, equity)
        flat_before = all(p == 0.0 for p in pos)

        # targets
        target = []
        for a in range(n_assets):
            x = actions[k][a]
            if config.action_kind == "discrete":
                hold = pos[a] if config.hold_mode == "keep" else 0.0
                long_t, short_t = cap, lo_cap
                if not config.discrete_rebalance:
                    long_t = pos[a] if pos[a] > 0 else cap
                    short_t = pos[a] if (pos[a] < 0 and lo_cap < 0) else lo_cap
                tgt = long_t if x == 1 else (short_t if x == 2 else hold)
            elif config.action_kind == "continuous":
                tgt = min(max(float(x), lo_cap), cap)
            else:
                if config.delta_base == "constant":
                    base = config.base_position
                else:
                    sig_ann = float(market.volatility[t, a]) * math.sqrt(ppy)
                    base = min(max(config.target_annual_vol / max(sig_ann, 1e-6), 0.0), cap)
                tgt = min(max(base + config.delta_scale * math.tanh(float(x)), lo_cap), cap)
            target.append(tgt)
        if config.max_gross_exposure is not None:
            gross = sum(abs(v) for v in target)
            scale = min(1.0, config.max_gross_exposure / max(gross, 1e-12))
            target = [v * scale for v in target]
        for a in range(n_assets):
            if not market.valid[t, a]:
                target[a] = 0.0 if config.invalid_policy == "flat" else pos[a]

        # fills
        fees = slips = 0.0
        fills, holdings, turnover = [], [], 0.0
        for a in range(n_assets):
            dp = target[a] - pos[a] if market.fillable[t, a] else 0.0
            side = _sign(dp)
            s = slip_rate + costs.vol_slippage_coef * float(market.volatility[t, a])
            notional = abs(dp) * equity
            slips += notional * s
            fees += fee_rate * notional * (1.0 + side * s)
            fills.append(price[a] * (1.0 + side * s))
            holdings.append((pos[a] + dp) * equity)
            turnover += abs(dp)
        equity_post = equity - fees - slips
        pos = [h / equity_post for h in holdings] if equity_post > 0 else [0.0] * n_assets
        equity = max(equity_post, 0.0)
        flat = flat_before and all(p == 0.0 for p in pos)
        if post is not None:
            pos, equity = move(pos, equity, post)
        if rate != 0.0 and costs.fill == "next_open":  # the new position is held through bar t+1
            pos, equity, fund = pay_funding(pos, equity)

        peak = max(peak, equity)
        r = math.log(max(equity, 1e-300)) - math.log(equity_before)
        dd = 1.0 - equity / peak

        # reward
        warm = count >= rc.warmup_steps
        if rc.kind == "pnl":
            base_r = r
        elif rc.kind == "dsr":
            var = mean_sq - mean * mean
            base_r = (
                (mean_sq * (r - mean) - 0.5 * mean * (r * r - mean_sq)) / var**1.5
                if warm and var > 1e-14
                else 0.0
            )
        elif rc.kind == "ddr":
            ddv = math.sqrt(down_sq)
            if warm and ddv > 1e-10:
                if r > 0:
                    base_r = (r - 0.5 * mean) / ddv
                else:
                    base_r = (down_sq * (r - 0.5 * mean) - 0.5 * mean * r * r) / ddv**3
            else:
                base_r = 0.0
        elif rc.kind == "sortino_shaper":
            ddv = max(math.sqrt(down_sq), rc.downside_floor)
            base_r = r / ddv - rc.trade_cost * turnover - rc.dd_weight * dd
        else:
            post_mean = [
                sum(float(market.regime_posterior[t, a, j]) for a in range(n_assets)) / n_assets
                for j in range(4)
            ]
            regime = int(np.argmax(np.asarray(post_mean, dtype=np.float32)))
            sigma = sum(float(market.volatility[t, a]) for a in range(n_assets)) / n_assets
            sig = max(sigma, rc.vol_floor)
            m_k = abs_norm[regime]
            base_r = (
                rc.regime_weight[regime] * r / sig
                - rc.regime_trade_cost[regime] * m_k * turnover
                - rc.regime_hold_cost[regime] * m_k * float(flat)
            )
            mret = sum(float(market.log_return[t1, a]) for a in range(n_assets)) / n_assets
            abs_norm[regime] += rc.eta * (abs(mret) / sig - abs_norm[regime])
        reward = (
            rc.scale * base_r
            - rc.drawdown_penalty * max(dd - dd_before, 0.0)
            - rc.turnover_penalty * turnover
        )
        down = min(r, 0.0)
        mean, mean_sq, down_sq = (
            mean + rc.eta * (r - mean),
            mean_sq + rc.eta * (r * r - mean_sq),
            down_sq + rc.eta * (down * down - down_sq),
        )
        count += 1

        terminated = equity < config.ruin_equity
        truncated = (k + 1 >= length) and not terminated
        trace.position.append(list(pos))
        trace.equity.append(equity)
        trace.fee.append(fees)
        trace.slippage.append(slips)
        trace.funding.append(fund)
        trace.fill_price.append(fills)
        trace.target.append(target)
        trace.reward.append(reward)
        trace.terminated.append(terminated)
        trace.truncated.append(truncated)
        if terminated:
            break
        t = t1
    return trace
