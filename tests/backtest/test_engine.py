"""DecisionEngine.decide (the API's stateless path): recurrent policies are warmed up on the preceding bars."""

from __future__ import annotations

import numpy as np

from himari.trading.engine import RECURRENT_WARMUP_BARS, DecisionEngine
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


def test_invalid_features_make_that_asset_flat_with_a_reason(bundle, btc_slice):
    """Warm-up or a gap in the window: the asset goes flat (the simulator's invalid_policy), and the decision says why."""
    from himari.env.market import MarketData
    from himari.trading.engine import AccountSnapshot

    engine = DecisionEngine(bundle)
    m = engine.build_market({"BTCUSDT": btc_slice.between(None, "2023-01-12")})
    t = m.num_bars - 1
    valid = m.valid.copy()
    valid[t] = False
    broken = MarketData.from_arrays(m.timestamps_ns, m.open, m.high, m.low, m.close, features=m.features,
                                    regime_posterior=m.regime_posterior, valid=valid, symbols=m.symbols,
                                    feature_names=m.feature_names, timeframe=m.timeframe)
    held = AccountSnapshot(1.0, 1.0, np.array([0.5]), np.array([16_000.0]), np.array([3]))
    decision, _ = engine.decide_at(broken, t, held, None)
    assert decision.target_position[0] == 0.0
    assert any("features invalid for BTCUSDT" in r for r in decision.reasons)


def test_out_of_sample_market_refuses_a_tactical_fit_reaching_into_it(bundle, btc_slice):
    """The leakage guard is on where a result is claimed out of sample (walk-forward test periods pass eval_start)."""
    import pytest

    from himari.errors import LeakageError
    from himari.trading.engine import DecisionEngine

    engine = DecisionEngine(bundle)
    bars = {"BTCUSDT": btc_slice}
    engine.build_market(bars, eval_start="2023-01-01")  # after the fit window: fine
    with pytest.raises(LeakageError, match="before the fit window ends"):
        engine.build_market(bars, eval_start="2022-10-01")  # inside the tactical fit window (2022-07 .. 2023-01)
