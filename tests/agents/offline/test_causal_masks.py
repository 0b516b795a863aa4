"""Causal masking of every sequence model: bars after t in the context never change the output at t."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from himari.agents.offline.decision_transformer import (
    PAD_ACTION,
    CGDTConfig,
    CriticGuidedDTPolicy,
    DecisionTransformerPolicy,
    DTConfig,
)
from himari.agents.offline.flag_trader import FlagTraderConfig, FlagTraderPolicy
from himari.env.protocol import Observation

from .conftest import random_obs, requires_llm

S = 9


def dt_inputs(b: int, length: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    rtg = torch.randn(b, length, generator=g)
    states = torch.randn(b, length, S, generator=g)
    actions = torch.randint(0, 3, (b, length), generator=g)
    pad = torch.zeros(b, length, dtype=torch.bool)
    pad[0, :5] = True  # one left-padded sequence
    actions[pad] = PAD_ACTION
    return rtg, states, actions, pad


@pytest.mark.parametrize("cls,cfg_cls", [(DecisionTransformerPolicy, DTConfig), (CriticGuidedDTPolicy, CGDTConfig)])
def test_decision_transformer_is_causal(cls, cfg_cls) -> None:
    policy = cls(cfg_cls(state_dim=S, context=16, d_model=32, n_layers=2, n_heads=4, seed=1))
    rtg, states, actions, pad = dt_inputs(3, 16, 0)
    with torch.no_grad():
        base = policy.dt(rtg, states, actions, pad)
        for t in (5, 9, 14):
            r2, s2, a2 = rtg.clone(), states.clone(), actions.clone()
            r2[:, t + 1 :] += 5.0
            s2[:, t + 1 :] = torch.randn_like(s2[:, t + 1 :]) * 3
            a2[:, t:] = (a2[:, t:] + 1) % 3  # the action at t itself is not visible to the prediction at t
            out = policy.dt(r2, s2, a2, pad)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-5)
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])  # later outputs do depend on them
        # the fast inference path (last position only) equals the full forward
        torch.testing.assert_close(policy.dt(rtg, states, actions, pad, last_only=True)[:, 0], base[:, -1],
                                   rtol=0, atol=1e-5)


def test_decision_transformer_padding_is_inert() -> None:
    policy = DecisionTransformerPolicy(DTConfig(state_dim=S, context=16, d_model=32, seed=2))
    rtg, states, actions, pad = dt_inputs(3, 16, 1)
    with torch.no_grad():
        base = policy.dt(rtg, states, actions, pad)
        states2 = states.clone()
        states2[0, :5] = 1e3  # garbage in padded slots
        out = policy.dt(rtg, states2, actions, pad)
    torch.testing.assert_close(out[0, 5:], base[0, 5:], rtol=0, atol=1e-5)


@requires_llm
def test_flag_trader_is_causal() -> None:
    policy = FlagTraderPolicy(FlagTraderConfig(n_inputs=7, context=12, n_embd=32, n_layer=2, n_head=4,
                                               n_positions=16, seed=0))
    g = torch.Generator().manual_seed(0)
    windows = torch.randn(4, 12, 7, generator=g)
    with torch.no_grad():
        base = policy.logits_all_positions(windows)
        for t in (0, 6, 10):
            changed = windows.clone()
            changed[:, t + 1 :] = torch.randn(4, 11 - t, 7, generator=g) * 5
            out = policy.logits_all_positions(changed)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-5)
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


@requires_llm
def test_flag_trader_act_uses_only_the_window_ending_at_t() -> None:
    """Truncation invariance at the policy level: extra future bars beyond the decision bar are never in the input."""
    policy = FlagTraderPolicy(FlagTraderConfig(n_inputs=9, context=8, n_embd=32, n_layer=1, n_head=4, n_positions=8))
    rng = np.random.default_rng(0)
    obs = random_obs(rng, 2, 8, 1, 5)
    longer = random_obs(rng, 2, 12, 1, 5)
    longer = Observation(np.concatenate([longer.features[:, :4], obs.features], 1),
                         np.concatenate([longer.regime[:, :4], obs.regime], 1), obs.account)
    a, _ = policy.act(obs, None)
    b, _ = policy.act(longer, None)
    np.testing.assert_allclose(a.action_probs, b.action_probs, atol=1e-6)
    assert policy.trainable_parameters() < sum(p.numel() for p in policy.net.parameters())  # LoRA: base frozen


@requires_llm
def test_flag_trader_loads_local_pretrained_weights(tmp_path) -> None:
    """`pretrained_path` loads GPT-2 weights from a local directory (no download); LoRA leaves them frozen."""
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(5)
    GPT2Model(GPT2Config(n_embd=24, n_layer=1, n_head=2, n_positions=32, vocab_size=10)).save_pretrained(tmp_path / "g")
    reference = GPT2Model.from_pretrained(str(tmp_path / "g"), local_files_only=True).state_dict()
    policy = FlagTraderPolicy.create(FlagTraderConfig(n_inputs=5, context=8, pretrained_path=str(tmp_path / "g")))
    assert (policy.config.n_embd, policy.config.n_layer, policy.config.vocab_size) == (24, 1, 10)
    loaded = policy.net.backbone.base_model.model.state_dict()
    torch.testing.assert_close(loaded["h.0.mlp.c_fc.base_layer.weight"], reference["h.0.mlp.c_fc.weight"])
    assert not any(p.requires_grad for n, p in policy.net.backbone.named_parameters() if "lora_" not in n)
    policy.save(tmp_path / "p")
    again = FlagTraderPolicy.load(tmp_path / "p")  # rebuilt from the saved weights alone
    x = torch.randn(2, 8, 5)
    with torch.no_grad():
        torch.testing.assert_close(again.logits_from_windows(x), policy.logits_from_windows(x))
