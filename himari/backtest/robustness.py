"""Robustness of a trained policy to observation attacks (K5): decision flip rate and P&L under FGSM / PGD attacks
of growing ε (normalized feature units) over a period, through the simulator with the bundle's own costs,
positioning and risk gates (the world it trades in, see ``docs/ARCHITECTURE.md``).

For every ε the policy trades the period once (one episode over ``[start, end)``, deterministic actions), each
decision taken on the attacked observation ``x' = attack(x)`` (:mod:`himari.agents.ppo.methods.attacks`, reference:
the decision at the clean ``x`` of the same state). ``flip_rate``: share of decisions where the attacked decision
differs from the clean one (discrete: any asset's action; continuous: any asset's sign of the mean position);
``total_return`` and ``sharpe``: the equity path traded on the attacked decisions. ε = 0 is the clean run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from himari.agents.ppo.methods.attacks import attack, decision_loss, feature_mask
from himari.agents.ppo.networks import observation_tensor
from himari.data.bars import Bars
from himari.env.sim import SimConfig, SimVecEnv
from himari.errors import ConfigError


def period_of(bundle: Any, start: str | None, end: str | None) -> tuple[str, str, str]:
    """(start, end, what): the given period, else the bundle's walk-forward test period, else its validation."""
    if start and end:
        return start, end, "given"
    windows = bundle.meta.get("fit_windows") or {}
    if windows.get("test_start") and windows.get("test_end"):
        return windows["test_start"], windows["test_end"], "test period of the bundle's walk-forward window"
    val = bundle.meta.get("validation_window") or [None, None]
    if val[0] and val[1]:
        return val[0], val[1], "validation window of the bundle (used for its checkpoint selection)"
    raise ConfigError("robustness: give --start and --end (the bundle names no test or validation period)")


@torch.no_grad()
def _decide(policy: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    params, _, _ = policy.net.forward_step(x, None)
    head = policy.net.head
    mode = head.mode(params)
    decision = mode if getattr(head, "kind", "") != "continuous" else torch.sign(mode)
    return mode, decision


def attacked_run(policy: Any, env: SimVecEnv, eps: float, steps: int, target: str, periods_per_year: float
                 ) -> dict[str, float]:
    """One deterministic pass over ``env``'s episode with every decision attacked at ``eps``."""
    if policy.recurrent:
        raise ConfigError("robustness: recurrent policies are not supported (attacks need a feed-forward policy)")
    obs = env.reset(seed=0)
    n_steps = int(np.min(env.state.length))
    mask = feature_mask(policy.spec, target)
    head = policy.net.head
    flips, log_returns = 0, []
    equity = 1.0
    for _ in range(n_steps):
        x = policy.obs_norm(observation_tensor(obs))
        reference, clean = _decide(policy, x)
        if eps > 0:
            def loss_fn(z: torch.Tensor, ref: torch.Tensor = reference) -> torch.Tensor:
                params, _, _ = policy.net.forward_step(z, None)
                return decision_loss(head, params, ref)

            x = attack(loss_fn, x, eps, steps, None, mask)
        action, decision = _decide(policy, x)
        flips += int(bool((decision != clean).any()))
        result = env.step(policy.env_action(action))
        new_equity = float(result.info["equity"][0])
        log_returns.append(math.log(max(new_equity, 1e-300) / equity))
        equity = new_equity
        obs = result.obs
        if bool(result.terminated[0] or result.truncated[0]):
            break
    r = np.expm1(np.asarray(log_returns))
    sd = r.std(ddof=1) if r.size > 1 else 0.0
    return {"eps": eps, "decisions": float(len(log_returns)), "flip_rate": flips / max(1, len(log_returns)),
            "total_return": float(equity - 1.0),
            "sharpe": float(r.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0}


def robustness_report(bundle: Any, bars_by_symbol: Mapping[str, Bars], start: str, end: str,
                      eps_values: Sequence[float], steps: int = 1, target: str = "features") -> list[dict[str, float]]:
    """One row per ε (0 first: the clean run), see the module docstring."""
    from himari.agents.ppo.policies import PPOPolicy
    from himari.trading.engine import DecisionEngine

    if not isinstance(bundle.policy, PPOPolicy):
        raise ConfigError(f"robustness: needs a PPO policy bundle, got {type(bundle.policy).__name__}")
    engine = DecisionEngine(bundle)
    market = engine.build_market(bars_by_symbol, eval_start=start)
    sim = SimConfig.parse(bundle.sim_config)
    lo, hi = market.index_of(start), market.index_of(end)
    rows = []
    for eps in [0.0, *[e for e in eps_values if e > 0]]:
        env = SimVecEnv.for_evaluation(market, sim, lo, hi, num_envs=1)
        rows.append(attacked_run(bundle.policy, env, float(eps), steps, target, market.timeframe.periods_per_year))
    return rows


def render_robustness(rows: Sequence[Mapping[str, float]], title: str) -> str:
    lines = [f"### {title}", "", "| eps | decisions | flip rate | return | Sharpe |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['eps']:g} | {int(r['decisions'])} | {r['flip_rate'] * 100:.1f}% | "
                     f"{r['total_return'] * 100:+.1f}% | {r['sharpe']:.2f} |")
    return "\n".join(lines) + "\n"
