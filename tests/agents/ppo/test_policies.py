"""PPO policies: the Policy protocol, save/load round trips, recurrent state handling, causality of the context."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from himari.agents.base import Policy
from himari.agents.ppo.networks import window_correlations
from himari.agents.registry import load_policy
from himari.errors import RunDirError
from tests.agents.ppo.fake_envs import MemoryEnv
from tests.agents.ppo.helpers import SMALL_CONFIGS, env_for, small_policy

KINDS = tuple(SMALL_CONFIGS)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_acts_identically(kind: str, tmp_path) -> None:
    env = env_for(kind, num_envs=6)
    policy = small_policy(kind, env, seed=4)
    policy.obs_norm.update(torch.randn(50, policy.spec.obs_dim))
    assert isinstance(policy, Policy)
    policy.save(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    assert meta["kind"] == kind and (tmp_path / "p" / "weights.safetensors").exists()
    loaded = load_policy(tmp_path / "p")
    assert type(loaded) is type(policy) and loaded.config == policy.config
    obs = env.reset(seed=1)
    s1, s2 = policy.initial_state(6), loaded.initial_state(6)
    for _ in range(3):
        out1, s1 = policy.act(obs, s1)
        out2, s2 = loaded.act(obs, s2)
        np.testing.assert_array_equal(out1.action, out2.action)
        np.testing.assert_allclose(out1.value, out2.value, rtol=0, atol=0)
        obs = env.step(out1.action).obs
    assert out1.action.shape == (6, env.num_assets)
    if policy.action_kind == "discrete":
        assert out1.action.dtype == np.int64 and out1.action_probs.shape == (6, env.num_assets, 3)
        np.testing.assert_allclose(out1.action_probs.sum(-1), 1.0, rtol=1e-5)
    assert policy.action_kind == ("delta" if kind.startswith("sizer") else "discrete")


def test_load_rejects_broken_directories(tmp_path) -> None:
    env = env_for("mlp", num_envs=2)
    small_policy("mlp", env).save(tmp_path / "p")
    (tmp_path / "p" / "weights.safetensors").unlink()
    with pytest.raises(RunDirError, match="weights"):
        load_policy(tmp_path / "p")
    small_policy("mlp", env).save(tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "policy.json").read_text())
    meta["config"]["hidden_sizes"] = [16, 16]
    (tmp_path / "q" / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match="do not match"):
        load_policy(tmp_path / "q")


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_state_reset_at_episode_start_forgets_the_past(kind: str) -> None:
    env = MemoryEnv(num_envs=2)
    policy = small_policy(kind, env, seed=0)
    obs_a, obs_b = env.reset(seed=1), env.reset(seed=2)
    state = policy.initial_state(2)
    for _ in range(3):
        _, state = policy.act(obs_b, state)
    state = policy.reset_state(state, np.array([True, True]))
    out_reset, _ = policy.act(obs_a, state)
    out_fresh, _ = policy.act(obs_a, policy.initial_state(2))
    np.testing.assert_allclose(out_reset.value, out_fresh.value, atol=1e-6)


def test_transformer_output_at_t_ignores_later_steps() -> None:
    """Causal context: the value at step t depends on steps <= t only."""
    env = MemoryEnv(num_envs=3)
    policy = small_policy("transformer", env, seed=0)
    net = policy.net
    x = torch.randn(6, 3, policy.spec.obs_dim)
    starts = torch.zeros(6, 3, dtype=torch.bool)
    state0 = net.initial_state(3)
    with torch.no_grad():
        _, v_full = net.forward_sequence(x, state0, starts)
        x2 = x.clone()
        x2[4:] = torch.randn(2, 3, policy.spec.obs_dim) * 5
        _, v_changed = net.forward_sequence(x2, state0, starts)
    np.testing.assert_allclose(v_full.reshape(6, 3)[:4].numpy(), v_changed.reshape(6, 3)[:4].numpy(), atol=1e-6)
    assert not torch.allclose(v_full.reshape(6, 3)[4:], v_changed.reshape(6, 3)[4:])


def test_sizer_regime_scaling_shrinks_the_distribution() -> None:
    env = env_for("sizer", num_envs=2)
    policy = small_policy("sizer", env, seed=0)
    obs = env.reset(seed=0)
    crisis = obs._replace(regime=np.zeros_like(obs.regime))
    crisis.regime[..., 3] = 1.0
    x_low, x_crisis = policy.preprocess(obs), policy.preprocess(crisis)
    with torch.no_grad():
        (_m_low, s_low), _, _ = policy.net.forward_step(x_low, None)
        (_m_cr, s_cr), _, _ = policy.net.forward_step(x_crisis, None)
    np.testing.assert_allclose((s_cr - s_low).exp().numpy(), 0.2, rtol=1e-5)


def test_window_correlations_match_numpy() -> None:
    rng = np.random.default_rng(0)
    series = rng.normal(size=(4, 20, 3))
    got = window_correlations(torch.from_numpy(series)).numpy()
    for n in range(4):
        c = np.corrcoef(series[n].T)
        np.testing.assert_allclose(got[n], [c[0, 1], c[0, 2], c[1, 2]], rtol=1e-6)


def test_fast_tanh_matches_torch_tanh_and_its_gradient() -> None:
    from himari.agents.ppo.networks import fast_tanh

    x = torch.linspace(-12.0, 12.0, 4000).reshape(80, 50).requires_grad_(True)
    y = fast_tanh(x)
    y.square().sum().backward()
    assert x.grad is not None
    grad = x.grad.clone()
    x.grad = None
    ref = torch.tanh(x)
    ref.square().sum().backward()
    # both within one float32 ULP of the correctly rounded tanh
    torch.testing.assert_close(y, ref, rtol=0.0, atol=1.2e-7)
    torch.testing.assert_close(grad, x.grad, rtol=0.0, atol=4e-7)
    with torch.inference_mode():  # acting path: no autograd node
        torch.testing.assert_close(fast_tanh(x.detach()[:, ::2]), torch.tanh(x.detach()[:, ::2]), rtol=0.0, atol=1.2e-7)
    double = x.detach().double()
    assert torch.equal(fast_tanh(double), torch.tanh(double))  # other dtypes: torch's kernel


def test_log_softmax_over_actions_equals_torch_log_softmax() -> None:
    from himari.agents.ppo.networks import DiscreteHead, log_softmax_actions

    logits = (torch.randn(257, 2, 3, generator=torch.Generator().manual_seed(0)) * 4).requires_grad_(True)
    ours = log_softmax_actions(logits)
    ref = torch.log_softmax(logits, dim=-1)
    torch.testing.assert_close(ours, ref, rtol=0.0, atol=1e-6)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), logits)
    (grad_ref,) = torch.autograd.grad(ref.square().sum(), logits)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-5, atol=1e-6)
    action = torch.randint(0, 3, (257, 2), generator=torch.Generator().manual_seed(1))
    logp, entropy = DiscreteHead.log_prob_entropy((logits,), action)
    dist = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(logp, dist.log_prob(action).sum(-1), rtol=0.0, atol=1e-5)
    torch.testing.assert_close(entropy, dist.entropy().sum(-1), rtol=0.0, atol=1e-5)


def test_wide_linear_gradients_equal_nn_linear() -> None:
    from torch import nn

    from himari.agents.ppo.networks import Linear

    torch.manual_seed(0)
    ours, ref = Linear(7, 33), nn.Linear(7, 33)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(129, 7, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    (ours(x).tanh().square().sum()).backward()
    (ref(x_ref).tanh().square().sum()).backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    assert ours.weight.grad is not None and ours.weight.grad.is_contiguous()
    with torch.inference_mode():
        torch.testing.assert_close(ours(x.detach()), ref(x.detach()))


def test_sequence_lstm_sizer_reads_only_its_window_bars_in_order() -> None:
    """The L3 LSTM sizer re-reads the window at each decision: its output depends on the window's bars (their
    order too) and nothing else."""
    from himari.agents.ppo.networks import ObsSpec
    from himari.agents.ppo.policies import make_policy

    policy = make_policy("sizer-lstm", ObsSpec(20, 1, 5, 4, 3), SMALL_CONFIGS["sizer-lstm"], seed=0)
    x = torch.randn(4, policy.spec.obs_dim)
    features, regime, account = policy.spec.split(x)
    z1, v1 = policy.net.core(x)
    z2, v2 = policy.net.core(x.clone())
    assert torch.equal(z1, z2) and torch.equal(v1, v2)  # no state between calls
    flipped = torch.cat([features.flip(1).reshape(4, -1), regime.flip(1).reshape(4, -1), account.reshape(4, -1)], 1)
    z3, _ = policy.net.core(flipped)
    assert not torch.allclose(z1, z3)  # a sequence model: the order of the bars matters
