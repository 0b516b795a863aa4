"""The torch simulator (GPU when present) equals the NumPy simulator step for step, auto-reset included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from himari.env.execution import CostConfig
from himari.env.rewards import RewardConfig
from himari.env.sim import SimConfig, SimVecEnv
from himari.env.torch_sim import TorchSimVecEnv, default_device
from himari.errors import DataError
from tests.env._synth import make_market

CASES = [
    ("discrete", "pnl", "next_open", None),
    ("discrete", "regime_adaptive", "next_close", 0.0003),
    ("continuous", "dsr", "next_open", None),
    ("delta", "ddr", "next_close", None),
    ("continuous", "sortino_shaper", "next_open", 0.0001),
]


@pytest.mark.parametrize(("action_kind", "reward_kind", "fill", "funding"), CASES)
def test_torch_matches_numpy(action_kind: str, reward_kind: str, fill: str, funding: float | None) -> None:
    torch.set_num_threads(1)
    market = make_market(seed=3, t_len=260, n_assets=3, messy=True, vol=0.02)
    config = SimConfig(
        action_kind=action_kind, window=5, episode_length=30, max_position=2.0, max_gross_exposure=4.0,
        costs=CostConfig(fill=fill, funding_rate_per_8h=funding),
        reward=RewardConfig(kind=reward_kind, drawdown_penalty=0.2, turnover_penalty=0.01, warmup_steps=3),
    )  # fmt: skip
    n = 16
    np_env = SimVecEnv(market, config, n, seed=5)
    t_env = TorchSimVecEnv(market, config, n, seed=5, device="cpu")
    o_np, o_t = np_env.reset(), t_env.reset()
    for x, y in zip(o_np, o_t, strict=True):
        np.testing.assert_allclose(y.numpy(), x, rtol=1e-6, atol=1e-7)
    rng = np.random.default_rng(0)
    for _ in range(70):  # more than two episodes: auto-reset is exercised
        if action_kind == "discrete":
            act = rng.integers(0, 3, size=(n, 3))
        else:
            act = rng.normal(0, 1.5, size=(n, 3))
        r_np, r_t = np_env.step(act), t_env.step(torch.as_tensor(act))
        np.testing.assert_allclose(r_t.reward.numpy(), r_np.reward, rtol=1e-5, atol=1e-7)
        for key in ("equity", "fee", "slippage", "funding", "position", "fill_price", "log_return"):
            np.testing.assert_allclose(
                r_t.info[key].numpy(), r_np.info[key], rtol=1e-10, atol=1e-13, err_msg=key
            )
        np.testing.assert_array_equal(r_t.terminated.numpy(), r_np.terminated)
        np.testing.assert_array_equal(r_t.truncated.numpy(), r_np.truncated)
        for x, y in zip(r_np.obs, r_t.obs, strict=True):
            np.testing.assert_allclose(y.numpy(), x, rtol=1e-5, atol=1e-6)
        for x, y in zip(r_np.final_obs, r_t.final_obs, strict=True):
            np.testing.assert_allclose(y.numpy(), x, rtol=1e-5, atol=1e-6)


def test_default_device_and_gpu_when_present() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected
    market = make_market(seed=1, t_len=120)
    env = TorchSimVecEnv(market, SimConfig(window=4, episode_length=20), 4)
    obs = env.reset()
    assert obs.features.device.type == expected
    res = env.step(torch.ones((4, 1), dtype=torch.int64, device=env.device))
    assert res.reward.device.type == expected and res.reward.dtype == torch.float32


def test_action_checks_can_be_turned_off_for_policy_actions() -> None:
    market = make_market(seed=3, t_len=120, n_assets=1, vol=0.02)
    config = SimConfig(action_kind="discrete", window=2, episode_length=20)
    checked = TorchSimVecEnv(market, config, 4, seed=1, device="cpu")
    checked.reset()
    with pytest.raises(DataError, match="discrete action"):
        checked.step(torch.full((4, 1), 7))
    unchecked = TorchSimVecEnv(market, config, 4, seed=1, device="cpu", check_actions=False)
    reference = TorchSimVecEnv(market, config, 4, seed=1, device="cpu")
    unchecked.reset(), reference.reset()
    action = torch.tensor([[0], [1], [2], [1]])
    a, b = unchecked.step(action), reference.step(action)
    assert torch.equal(a.reward, b.reward) and torch.equal(a.obs.account, b.obs.account)
