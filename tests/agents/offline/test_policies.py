"""Every offline policy: the Policy protocol, shapes with several assets, save/load round trips (no pickle)."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest

from himari.agents.base import Policy
from himari.agents.offline.classifier import ClassifierConfig, ClassifierPolicy
from himari.agents.offline.cql import CQLConfig, CQLPolicy
from himari.agents.offline.decision_transformer import (
    CGDTConfig,
    CriticGuidedDTPolicy,
    DecisionTransformerPolicy,
    DTConfig,
)
from himari.agents.offline.flag_trader import FlagTraderConfig, FlagTraderPolicy
from himari.agents.registry import load_policy
from himari.env.protocol import ACCOUNT_FIELDS, Observation
from himari.errors import RunDirError

from .conftest import random_obs, requires_llm

F = 5
N_IN = F + 4
STATE = N_IN + len(ACCOUNT_FIELDS)


def make(kind: str) -> object:
    return {
        "mlp-classifier": lambda: ClassifierPolicy(ClassifierConfig(n_inputs=N_IN, window=6, hidden=(16,))),
        "cql": lambda: CQLPolicy(CQLConfig(state_dim=STATE, hidden=(16,))),
        "dt": lambda: DecisionTransformerPolicy(DTConfig(state_dim=STATE, context=8, d_model=16, n_heads=2)),
        "cgdt": lambda: CriticGuidedDTPolicy(CGDTConfig(state_dim=STATE, context=8, d_model=16, n_heads=2,
                                                        critic_hidden=(16,))),
        "flag-trader": lambda: FlagTraderPolicy(FlagTraderConfig(n_inputs=N_IN, context=6, n_embd=16, n_layer=1,
                                                                 n_head=2, n_positions=8, lora_rank=4)),
    }[kind]()


KINDS = ("mlp-classifier", "cql", "dt", "cgdt", pytest.param("flag-trader", marks=requires_llm))


@pytest.mark.parametrize("kind", KINDS)
def test_policy_contract_and_round_trip(kind: str, tmp_path) -> None:
    policy = make(kind)
    assert isinstance(policy, Policy) and policy.kind == kind and policy.action_kind == "discrete"
    rng = np.random.default_rng(0)
    n, assets = 3, 2
    obs_seq = [random_obs(rng, n, 8, assets, F) for _ in range(4)]
    state = policy.initial_state(n)
    outputs = []
    for obs in obs_seq:
        out, state = policy.act(obs, state, deterministic=True)
        outputs.append(out)
        assert out.action.shape == (n, assets) and out.action.dtype == np.int64
        assert out.action_probs.shape == (n, assets, 3)
        np.testing.assert_allclose(out.action_probs.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(out.action, out.action_probs.argmax(-1))
    policy.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    assert meta["kind"] == kind and (tmp_path / "p" / "weights.safetensors").exists()
    loaded = load_policy(tmp_path / "p")
    state = loaded.initial_state(n)
    for obs, expected in zip(obs_seq, outputs, strict=True):
        out, state = loaded.act(obs, state, deterministic=True)
        np.testing.assert_allclose(out.action_probs, expected.action_probs, atol=1e-5)
    sampled, _ = loaded.act(obs_seq[0], loaded.initial_state(n), deterministic=False)
    assert set(np.unique(sampled.action)) <= {0, 1, 2}


def test_load_rejects_mismatched_weights(tmp_path) -> None:
    make("cql").save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    meta["config"]["hidden"] = [32]
    (tmp_path / "p" / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError):
        load_policy(tmp_path / "p")


def test_decision_transformer_context_and_return_to_go() -> None:
    """The DT state keeps the last `context` steps; the return-to-go falls by the realised equity change / γ."""
    policy = make("dt")
    cfg = policy.config
    rng = np.random.default_rng(1)
    state = policy.initial_state(1)
    target = float(policy.dt.target_rtg)
    eq_idx = ACCOUNT_FIELDS.index("equity_log")
    equity = [0.0, 0.01, 0.005]
    for step, eq in enumerate(equity):
        obs = random_obs(rng, 1, 2, 1, F)
        obs.account[0, 0, eq_idx] = eq
        out, state = policy.act(obs, state)
        assert state["length"][0] == step + 1
        assert state["actions"][0, -1] == out.action[0, 0]
    expected = target
    for prev, eq in pairwise(equity):
        expected = (expected - (eq - prev) * cfg.reward_scale) / cfg.gamma
    assert state["rtg_now"][0] == pytest.approx(expected)
    for _ in range(cfg.context + 3):
        _, state = policy.act(random_obs(rng, 1, 2, 1, F), state)
    assert state["length"][0] == cfg.context
    state = policy.reset_state(state, np.array([True]))
    assert state["length"][0] == 0 and state["rtg_now"][0] == pytest.approx(target)


def test_dt_ignores_a_changed_future_of_the_stream() -> None:
    """Streams are independent and a decision depends only on the stream's past observations."""
    policy = make("dt")
    rng = np.random.default_rng(2)
    seq = [random_obs(rng, 2, 2, 1, F) for _ in range(5)]
    state = policy.initial_state(2)
    first = []
    for obs in seq:
        out, state = policy.act(obs, state)
        first.append(out.action_probs)
    altered = [Observation(o.features.copy(), o.regime, o.account) for o in seq]
    altered[3].features[1] += 10.0  # change stream 1 at step 3 only
    state = policy.initial_state(2)
    for k, obs in enumerate(altered):
        out, state = policy.act(obs, state)
        np.testing.assert_allclose(out.action_probs[0], first[k][0], atol=1e-6)  # other stream untouched
        if k < 3:
            np.testing.assert_allclose(out.action_probs[1], first[k][1], atol=1e-6)  # the past is untouched
