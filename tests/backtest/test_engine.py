"""DecisionEngine.decide (the API's stateless path): recurrent policies are warmed up on the preceding bars."""

from __future__ import annotations

import numpy as np

from himari.backtest.engine import RECURRENT_WARMUP_BARS, DecisionEngine
from tests.backtest.conftest import make_bundle


def test_recurrent_policy_is_warmed_up_before_a_stateless_decision(btc_slice):
    bundle = make_bundle(btc_slice.between(None, "2023-01-01"), "2022-07-01", "2023-01-01", steps=256, kind="lstm")
    engine = DecisionEngine(bundle)
    calls = []
    act = bundle.policy.act

    def counting_act(obs, state, deterministic=True):
        calls.append(state is None)
        return act(obs, state, deterministic=deterministic)

    bundle.policy.act = counting_act
    decision = engine.decide(btc_slice.between("2022-09-01", "2023-01-10"))
    assert len(calls) == RECURRENT_WARMUP_BARS + 1
    assert decision.actions[0] in ("HOLD", "LONG", "SHORT")
    assert np.isfinite(decision.target_position).all()
    assert decision.to_dict()["gates"], "every decision reports its risk gates"
