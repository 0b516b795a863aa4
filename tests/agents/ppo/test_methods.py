"""The optional PPO training methods (himari.agents.ppo.methods): exact mechanics on small cases, and the methods
through the one run assembly (fit_ppo): off == as before, resume mid-curriculum, augmented markets end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.methods.attacks import decision_loss, feature_mask, fgsm, pgd
from himari.agents.ppo.methods.augment import (
    augment_bars,
    relative_moves,
    segment_positions,
    segment_start_pool,
    splice_segments,
    split_envs,
    stress_segments,
)
from himari.agents.ppo.methods.aux import AuxTasks, aux_targets
from himari.agents.ppo.methods.config import AugmentConfig, AuxConfig, CurriculumConfig, RareEventConfig
from himari.agents.ppo.methods.curriculum import PooledSimVecEnv, stage_at, stage_pools
from himari.agents.ppo.methods.reptile import reptile, reptile_update, task_ranges
from himari.agents.ppo.networks import DiscreteHead, ObsSpec
from himari.agents.ppo.policies import make_policy
from himari.agents.ppo.trainer import PPOTrainer
from himari.data.bars import Bars
from himari.env.market import MarketData
from himari.env.rewards import RewardConfig
from himari.env.sim import SimConfig, SimVecEnv
from himari.training.ppo import fit_ppo


def _market(n_bars: int = 1200, seed: int = 0) -> MarketData:
    """Returns whose volatility rises through the series (calm first, wild last), two noise features."""
    rng = np.random.default_rng(seed)
    sigma = np.linspace(0.002, 0.03, n_bars)
    ret = rng.normal(0, 1, n_bars) * sigma
    close = 100.0 * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[100.0], close[:-1]])
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    features = rng.normal(size=(n_bars, 2)).astype(np.float32)
    ts = (np.arange(n_bars, dtype=np.int64) * 3600 + 1_600_000_000) * 1_000_000_000
    return MarketData.from_arrays(ts, open_, high, low, close, features=features)


SIM = SimConfig(window=4, episode_length=32)


# -- attacks ---------------------------------------------------------------------------------------------------
def test_fgsm_is_the_sign_of_the_hand_computed_gradient_on_a_linear_policy():
    torch.manual_seed(0)
    head = DiscreteHead(3, 1)  # logits = L x + b, 3 actions for one asset
    x = torch.tensor([[0.3, -0.2, 0.5]])
    action = torch.tensor([[1]])
    eps = 0.1
    adv = fgsm(lambda z: decision_loss(head, head(z), action), x, eps)
    weight = head.linear.weight.detach()
    p = torch.softmax(head.linear(x).detach()[0], dim=0)
    grad = -(weight[1] - p @ weight)  # d(-log p_a)/dx for softmax logits L x + b
    assert torch.equal(adv[0], x[0] + eps * torch.sign(grad))
    mask = torch.tensor([1.0, 0.0, 1.0])
    masked = fgsm(lambda z: decision_loss(head, head(z), action), x, eps, mask)
    assert masked[0, 1] == x[0, 1] and torch.equal(masked[0, [0, 2]], adv[0, [0, 2]])


def test_pgd_stays_in_the_eps_ball_and_raises_the_loss():
    torch.manual_seed(1)
    head = DiscreteHead(6, 2)
    x = torch.randn(16, 6)
    action = torch.randint(0, 3, (16, 2))

    def loss(z):
        return decision_loss(head, head(z), action)

    for gen in (None, torch.Generator().manual_seed(0)):
        adv = pgd(loss, x, 0.05, steps=7, generator=gen)
        assert float((adv - x).abs().max()) <= 0.05 + 1e-7
        assert float(loss(adv).detach()) > float(loss(x).detach())
    spec = ObsSpec(window=2, n_assets=1, n_features=3, n_regimes=4, n_account=6)
    mask = feature_mask(spec, "features")
    assert mask is not None and mask.sum() == spec.feature_dim and mask[: spec.feature_dim].all()


def test_continuous_decision_loss_pushes_against_the_reference_direction():
    mean = torch.tensor([[0.4, -0.2]], requires_grad=True)
    loss = decision_loss(type("H", (), {"kind": "continuous"})(), (mean, torch.zeros(1, 2)), torch.tensor([[1.0, -1.0]]))
    loss.backward()
    assert torch.equal(mean.grad, torch.tensor([[-1.0, 1.0]]))


# -- curriculum -------------------------------------------------------------------------------------------------
def test_curriculum_stage_boundaries_and_pools():
    fractions = (0.25, 0.25, 0.5)
    assert [stage_at(u, 8, fractions) for u in range(8)] == [0, 0, 1, 1, 2, 2, 2, 2]
    assert [stage_at(u, 3, (0.34, 0.33, 0.33)) for u in range(3)] == [0, 1, 2]
    market = _market()
    env = PooledSimVecEnv(market, SIM, 4, seed=0, start_index=0, end_index=1000)
    pools = stage_pools(market, env, CurriculumConfig())
    assert set(pools[0]) <= set(pools[1]) <= set(pools[2]) and pools[2].size == 1000 - 32 - 3
    vol = market.volatility.mean(axis=1)
    assert vol[pools[0]].mean() < vol[pools[1]].mean() < vol[pools[2]].mean()  # volatility rises with the index
    env.set_pool(pools[0])
    env.reset(seed=5)
    for _ in range(40):
        env.step(np.zeros((4, 1), dtype=np.int64))
        assert set(env.state.start) <= set(pools[0])


def _fit(ppo: dict, run_dir=None, resume=False, callbacks_crash_at=None, seed=2):
    market = _market()
    cfg = PPOConfig.parse({"total_steps": 8 * 16 * 6, "n_steps": 16, "n_minibatches": 2, "n_epochs": 1,
                           "checkpoint_every_updates": 2, **ppo})
    return fit_ppo("mlp", market, SIM, cfg, train_range=(0, 1000), seed=seed, num_envs=8, run_dir=run_dir,
                   resume=resume, progress=False)


def test_methods_off_train_exactly_as_before():
    policy, _result = _fit({})
    market = _market()
    cfg = PPOConfig.parse({"total_steps": 8 * 16 * 6, "n_steps": 16, "n_minibatches": 2, "n_epochs": 1,
                           "checkpoint_every_updates": 2})
    env = SimVecEnv(market, SIM, 8, seed=2, start_index=0, end_index=1000)
    plain = make_policy("mlp", ObsSpec.from_env(env), None, seed=2)
    trainer = PPOTrainer(plain, env, cfg, seed=2, progress=False, tensorboard=False)
    trainer.train()
    a, b = policy.state_dict(), plain.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "curriculum" not in str(trainer.config_hash)  # hash of a run without methods: no method keys
    on = PPOTrainer(plain, env, cfg.replace(curriculum=CurriculumConfig()), seed=2, progress=False, tensorboard=False)
    assert on.config_hash != trainer.config_hash


def test_resume_mid_curriculum_continues_the_same_schedule(tmp_path):
    ppo = {"curriculum": {}, "aux": {}}
    full, full_result = _fit(ppo, run_dir=tmp_path / "full")
    assert [h["curriculum_stage"] for h in full_result.history] == [0, 0, 1, 2, 2, 2]  # edges round(6 · (0.25, 0.5, 1)) = 2, 3, 6
    from himari.agents.ppo import trainer as trainer_module

    original = trainer_module.PPOTrainer.update

    def crash(self, update_index):
        if update_index == 3:  # in stage 2, after the checkpoint written at update 2 (stage 1)
            raise KeyboardInterrupt
        return original(self, update_index)

    trainer_module.PPOTrainer.update = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            _fit(ppo, run_dir=tmp_path / "part")
    finally:
        trainer_module.PPOTrainer.update = original
    resumed, result = _fit(ppo, run_dir=tmp_path / "part", resume=True)
    assert [h["curriculum_stage"] for h in result.history] == [1, 2, 2, 2]
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- multi-task --------------------------------------------------------------------------------------------------
def test_aux_targets_never_read_past_the_training_end_and_gradients_reach_the_encoder():
    market = _market()
    cfg = AuxConfig(vol_horizon=5)
    t = np.array([10, 990, 994, 995, 999])
    ret, logvol, _regime, valid = aux_targets(market, t, 1000, cfg)
    assert valid.tolist() == [True, True, True, False, False]
    r = market.log_return.mean(axis=1)
    assert np.isclose(ret[0], r[11] / market.volatility.mean(axis=1)[10])
    assert np.isclose(logvol[0], np.log(np.sqrt(np.mean(r[11:16] ** 2)) / market.volatility.mean(axis=1)[10]))
    env = SimVecEnv(market, SIM, 4, seed=0, start_index=0, end_index=1000)
    policy = make_policy("mlp", ObsSpec.from_env(env), None, seed=0)
    aux = AuxTasks(policy, env, cfg, seed=0, n_steps=4, n_minibatches=1)
    obs = torch.randn(5, policy.spec.obs_dim)
    loss, parts = aux.loss(obs, t)
    loss.backward()
    encoder = policy.net.actor
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert all(p.grad is None for p in policy.net.critic.parameters())  # only the shared encoder is trained
    assert set(parts) == {"aux_return", "aux_volatility", "aux_regime"}


# -- meta-learning -----------------------------------------------------------------------------------------------
class _Quadratic:
    """A 'policy' with one parameter vector; task i's loss is ||θ - c_i||², trained by k SGD steps."""

    def __init__(self) -> None:
        self.net = torch.nn.Linear(1, 2, bias=False)
        torch.nn.init.zeros_(self.net.weight)
        self.obs_norm = torch.nn.Linear(1, 1)


def test_reptile_on_quadratic_tasks_reaches_the_known_optimum():
    centers = torch.tensor([[1.0, 4.0], [3.0, -2.0], [-1.0, 1.0]])  # 2x1 weights as columns of each task

    def adapt(inner, task, iteration):
        for _ in range(3):
            w = inner.net.weight
            loss = (w[:, 0] - centers[task]).square().sum()
            (grad,) = torch.autograd.grad(loss, w)
            with torch.no_grad():
                w -= 0.1 * grad

    policy = _Quadratic()
    drawn = reptile(policy, n_tasks=3, outer_iterations=600, outer_lr=0.1, seed=0, adapt=adapt)
    assert sorted(set(drawn)) == [0, 1, 2]
    # equal curvature: Reptile's fixed point is the mean of the task optima
    assert torch.allclose(policy.net.weight[:, 0], centers.mean(0), atol=0.2)
    theta = {"w": torch.zeros(2), "n": torch.tensor(3)}
    out = reptile_update(theta, {"w": torch.tensor([2.0, -4.0]), "n": torch.tensor(5)}, 0.25)
    assert torch.equal(out["w"], torch.tensor([0.5, -1.0])) and int(out["n"]) == 5
    assert task_ranges((100, 1100), 4, 200) == [(100, 350), (350, 600), (600, 850), (850, 1100)]
    assert len(task_ranges((0, 300), 4, 200)) == 1


def test_reptile_phase_in_the_run_assembly_uses_part_of_the_budget():
    _policy, result = _fit({"meta": {"tasks": 2, "inner_updates": 1, "budget_fraction": 0.5}})
    assert result.global_step == 8 * 16 * 3  # the other half went to the meta phase


# -- augmentation and rare events -------------------------------------------------------------------------------
def _bars(n: int = 600, seed: int = 0) -> Bars:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.003, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.003, n)))
    ts = np.datetime64("2022-01-01T00:00") + np.arange(n) * np.timedelta64(1, "h")
    return Bars.from_arrays(ts, open_, high, low, close, rng.uniform(1, 2, n), symbol="X", timeframe="1h")


def _consistent(b: Bars) -> bool:
    return bool((b.high >= np.maximum(b.open, b.close)).all() and (b.low <= np.minimum(b.open, b.close)).all()
                and (b.low > 0).all())


def test_augmentation_scales_moves_keeps_ohlc_and_is_causal():
    bars = _bars()
    cfg = AugmentConfig(block_bars=50)
    (aug,) = augment_bars([bars], cfg, np.random.default_rng(3))
    assert _consistent(aug) and np.array_equal(aug.timestamps_ns, bars.timestamps_ns)
    ratio = relative_moves(aug)[1:, 3] / relative_moves(bars)[1:, 3]
    blocks = ratio[49:99]  # bars 50..99: one factor
    assert np.allclose(blocks, blocks[0]) and cfg.vol_scale_low <= blocks[0] <= cfg.vol_scale_high
    (short,) = augment_bars([bars.head(300)], cfg, np.random.default_rng(3))  # truncation invariance
    np.testing.assert_allclose(short.frame.to_numpy(), aug.frame.to_numpy()[:300], rtol=1e-12)


def test_rare_event_segments_are_spliced_price_continuously():
    bars = _bars()
    cfg = RareEventConfig(segments=2, segment_bars=24)
    moves, volumes = stress_segments(cfg, seed=0)
    assert moves.shape == (2, 24, 4) and np.all(moves[:, :, 3].sum(axis=1) < 0)  # each segment loses
    positions = segment_positions(50, 550, 2, 24, np.random.default_rng(0))
    assert positions[0] + 24 <= 300 <= positions[1] and positions[1] + 24 <= 550
    (spliced,) = splice_segments([bars], positions, moves, volumes)
    assert _consistent(spliced)
    m, m0 = relative_moves(spliced), relative_moves(bars)
    p = positions[0]
    np.testing.assert_allclose(m[p: p + 24], moves[0], atol=1e-12)
    np.testing.assert_allclose(m[:p], m0[:p], atol=1e-12)  # before: untouched
    np.testing.assert_allclose(m[p + 24: positions[1]], m0[p + 24: positions[1]], atol=1e-12)  # after: real moves
    assert split_envs(32, 0.1) == (29, 3) and split_envs(4, 0.01) == (3, 1)
    market = _market(600)
    pool = segment_start_pool(market, SIM, 0, 600, positions, 24)
    for s in pool:
        assert any(s <= q and q + 24 <= s + SIM.episode_length for q in positions)


def test_reward_presets_hold_the_seeds_coefficients():
    sortino = RewardConfig.parse({"preset": "seeds_sortino"})
    assert (sortino.kind, sortino.trade_cost, sortino.dd_weight, sortino.eta) == ("sortino_shaper", 0.0005, 0.25, 1 / 200)
    adaptive = RewardConfig.parse({"preset": "seeds_adaptive", "scale": 2.0})
    assert adaptive.regime_trade_cost == (0.40, 0.40, 0.60, 0.40) and adaptive.regime_weight == (1.0, 1.0, 0.5, 0.5)
    assert adaptive.scale == 2.0 and "preset" not in adaptive.to_dict()


def test_augmentation_needs_the_runs_bars_and_pipelines():
    from himari.errors import ConfigError

    with pytest.raises(ConfigError, match="augment_source"):
        _fit({"augment": {}})


def test_train_with_augmentation_and_rare_events_then_robustness_cli(tmp_path):
    """Tiny end to end: augmented and stress-spliced markets recomputed by the run's pipelines, then the
    robustness report of the trained bundle from the CLI (clean row first, flip rate grows from 0)."""
    import json

    from click.testing import CliRunner

    from himari.agents.training import prepare_training_data
    from himari.cli.main import cli
    from himari.training.ppo import train_ppo

    data = prepare_training_data(["BTCUSDT"], "2022-01-01", "2022-02-15", "2022-03-01", warmup_bars=600)
    result = train_ppo("mlp", data, tmp_path / "run", steps=256, seed=0, num_envs=8, eval_envs=2, tensorboard=False,
                       ppo_overrides={"n_steps": 16, "augment": {"rate": 0.25},
                                      "rare_events": {"rate": 0.25, "segments": 2, "segment_bars": 24}},
                       sim_overrides={"episode_length": 48})
    assert result.train.global_step == 256
    out = CliRunner().invoke(cli, ["robustness", "--run", str(tmp_path / "run"), "--eps", "0.05,0.5", "--steps", "2",
                                   "--start", "2022-02-15", "--end", "2022-02-20", "--out", str(tmp_path / "rob")])
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "rob" / "robustness.json").read_text())["rows"]
    assert [r["eps"] for r in rows] == [0.0, 0.05, 0.5] and rows[0]["flip_rate"] == 0.0
    assert rows[2]["flip_rate"] >= rows[1]["flip_rate"] and rows[0]["decisions"] > 100
    bad = CliRunner().invoke(cli, ["robustness", "--run", str(tmp_path / "run"), "--eps", "x"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "--eps" in bad.output
