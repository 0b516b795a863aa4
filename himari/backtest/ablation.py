"""The layer ablation of a positioned walk-forward: what each layer of the stack adds, on the same windows, bars,
costs, tactical pipelines and account chain as the strategy.

Rows, each traded over every test period with its own account carried across windows:

1. ``vol-targeted base``: always long at the positioning layer's vol-targeted base (regime multipliers at 1, risk
   gates off except the input checks);
2. ``+ regime multipliers``: the same with the regime multipliers;
3. ``+ risk gates``: the same with every risk gate of the run;
4. ``+ L3 delta`` (stacked runs): the trained L3 sizer around the long base;
5. the strategy itself (the full stack: the L2 direction on top).

Cost controls (decision cadence, minimum holding, rebalance band) are those of the run in every row.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from himari.agents.rules import RuleConfig, RulePolicy
from himari.agents.stack import StackPolicy
from himari.env.sim import SimConfig
from himari.risk.config import RiskConfig
from himari.trading.bundle import Bundle

RISK_OFF: dict[str, Any] = {
    "evt_enabled": False, "kelly_cap_enabled": False, "vol_enabled": False, "drawdown_enabled": False,
    "portfolio_var_enabled": False, "margin_enabled": False, "leverage_enabled": False, "budget_enabled": False,
}
LAYERS: tuple[str, ...] = ("vol-targeted base", "+ regime multipliers", "+ risk gates", "+ L3 delta")


def ablation_bundles(bundle: Bundle) -> list[tuple[str, Bundle]]:
    """The ablation rows below the full strategy for a bundle trained through the positioning layer (else none)."""
    sim = SimConfig.parse(bundle.sim_config)
    if sim.sizing is None or sim.risk is None:
        return []
    n_assets = len(bundle.symbols)
    long_rule = RulePolicy(RuleConfig(rule="long"), n_assets)
    risk_off = RiskConfig.parse(RISK_OFF).to_dict()
    discrete = sim.replace(action_kind="discrete")
    flat_regimes = sim.sizing.replace(regime_multipliers=(1.0, 1.0, 1.0, 1.0), regime_deadband=0.0)
    rows = [
        ("vol-targeted base", discrete.replace(sizing=flat_regimes, risk=risk_off), long_rule),
        ("+ regime multipliers", discrete.replace(risk=risk_off), long_rule),
        ("+ risk gates", discrete, long_rule),
    ]
    if isinstance(bundle.policy, StackPolicy):
        rows.append(("+ L3 delta", sim, StackPolicy(long_rule, bundle.policy.sizer)))
    return [
        (name, replace(bundle, policy=policy, sim_config=cfg.to_dict(),
                       meta={**bundle.meta, "model_id": f"ablation:{name}"}))
        for name, cfg, policy in rows
    ]
