"""Training/trading parity: the position the simulator fills during training equals the position the trading path
(backtester, paper trading, API: all through TradingSession) fills, for the same bars, account and policy outputs.

A scripted policy replays one pre-drawn action sequence in both worlds: the simulator's episode (SimVecEnv, N = 1)
and a TradingSession over the same market, from the same decision bar, with the positioning layer and risk gates on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from himari.agents.base import PolicyOutput
from himari.data.bars import Bars
from himari.env.market import MarketData
from himari.env.sim import SimConfig, SimVecEnv
from himari.risk.config import RiskConfig
from himari.sizing.positioning import discrete_directions
from himari.sizing.sizer import SizingConfig
from himari.tactical.pipeline import TacticalPipeline
from himari.trading.bundle import Bundle
from himari.trading.session import TradingSession

STEPS = 300


class ScriptedPolicy:
    """Replays ``actions[k]`` at its k-th decision (the step count is its recurrent state)."""

    kind = "scripted"

    def __init__(self, actions: np.ndarray, action_kind: str, window: int, directions: np.ndarray | None = None) -> None:
        self.actions = actions
        self.directions = directions
        self.action_kind = action_kind
        self.window = window
        self.n_assets = actions.shape[1]

    def initial_state(self, n: int) -> Any:
        return 0

    def reset_state(self, state: Any, done: np.ndarray) -> Any:
        return state

    def act(self, obs: Any, state: Any, deterministic: bool = True) -> tuple[PolicyOutput, Any]:
        k = min(state, len(self.actions) - 1)
        direction = None if self.directions is None else self.directions[k][None, :]
        return PolicyOutput(self.actions[k][None, :], direction_action=direction), state + 1

    def save(self, directory: Any) -> None:  # pragma: no cover - not saved in this test
        raise NotImplementedError


@pytest.fixture(scope="module")
def market(btc_slice: Bars) -> MarketData:
    bars = btc_slice.between("2022-06-01", "2022-11-01")
    tp = TacticalPipeline().fit(bars, "2022-07-01", "2022-09-01")
    return MarketData.from_frames([bars], [tp.transform(bars)])


def _actions(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "discrete":  # sticky codes, so positions are held and resized as well as flipped
        codes = np.repeat(rng.integers(0, 3, STEPS // 6 + 1), 6)[:STEPS]
        return codes[:, None].astype(np.int64)
    if kind == "continuous":
        return rng.normal(0.0, 0.8, (STEPS, 1))
    return rng.normal(0.0, 1.5, (STEPS, 1))


RISK = {
    "all gates": {},
    "tight gates": {"vol_cap_annual": 0.2, "portfolio_var_limit_daily": 0.02, "drawdown_thresholds": (0.01, 0.02, 0.04),
                    "drawdown_peak_halflife_days": 0.5, "evt_es_limit_daily": 0.05, "budget_sensitivity": 3.0,
                    "budget_min_bars": 24, "budget_halflife_bars": 12.0},
}


# the tight variant also decides every 4th bar only and holds a side at least 6 bars
COST_CONTROLS = {"all gates": {}, "tight gates": {"decision_every_bars": 4, "min_hold_bars": 6}}


@pytest.mark.parametrize("risk", sorted(RISK))
@pytest.mark.parametrize("kind", ["discrete", "continuous", "delta", "stack"])
def test_simulator_fills_what_trading_fills(market: MarketData, kind: str, risk: str) -> None:
    """``stack``: delta actions whose base direction comes from a discrete L2 (the stacked policy)."""
    action_kind = "delta" if kind == "stack" else kind
    sim = SimConfig(
        action_kind=action_kind, window=4, episode_length=STEPS,
        sizing=SizingConfig(kelly_min_outcomes=30, **COST_CONTROLS[risk]), risk=RiskConfig.parse(RISK[risk]),
    )
    actions = _actions(action_kind, np.random.default_rng(7))
    codes = _actions("discrete", np.random.default_rng(8)) if kind == "stack" else None
    start = market.index_of("2022-09-05")
    env = SimVecEnv(market, sim, num_envs=1, starts=[start], lengths=[STEPS])
    env.reset()
    sim_pos, sim_eq = [], []
    for k in range(STEPS):
        direction = None
        if codes is not None:
            direction = discrete_directions(codes[k][None, :], env.state.position, sim.hold_mode, sim.allow_short)
        out = env.step(actions[k][None, :], direction=direction)
        sim_pos.append(out.info["position"][0].copy())
        sim_eq.append(float(out.info["equity"][0]))

    bundle = Bundle(symbols=market.symbols, timeframe=str(market.timeframe), tactical={},
                    policy=ScriptedPolicy(actions, action_kind, 4, codes), sim_config=sim.to_dict(),
                    meta={"model_id": "scripted"})
    session = TradingSession(bundle)
    trade_pos, trade_eq, bound = [], [], set()
    for k in range(STEPS + 1):
        outcome = session.process(market, start + k)
        bound.update(outcome.decision.binding)
        if k > 0:  # the decision of bar start+k-1, filled at start+k and marked at its close
            trade_pos.append(outcome.positions.copy())
            trade_eq.append(outcome.equity / session.config.initial_equity)
    np.testing.assert_allclose(np.array(trade_pos), np.array(sim_pos), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(trade_eq, sim_eq, rtol=1e-9)
    moved = np.abs(np.diff(np.array(sim_pos)[:, 0])) > 1e-9
    assert moved.sum() > 10  # the episode traded (resizes and flips), so the comparison means something
    if kind == "stack":  # the L2 put the base on both sides
        assert (np.array(sim_pos)[:, 0] < -1e-6).any() and (np.array(sim_pos)[:, 0] > 1e-6).any()
    if risk == "tight gates":  # the stateful gates acted too
        assert {"evt", "kelly_cap"} <= bound and bound & {"risk_budget", "drawdown_brake"}

