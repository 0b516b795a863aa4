"""PPO runs on the real simulator: the timing contract through training, train_ppo per policy kind, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from himari.agents.ppo.config import PPOConfig
from himari.agents.ppo.networks import ObsSpec
from himari.agents.ppo.policies import make_policy
from himari.agents.ppo.trainer import PPOTrainer, evaluate_policy
from himari.agents.training import prepare_training_data
from himari.cli.main import cli
from himari.env.market import MarketData
from himari.env.sim import SimConfig, SimVecEnv
from himari.trading.bundle import load_bundle
from himari.training.ppo import train_ppo

ZERO_COSTS = {"taker_fee_bps": 0.0, "maker_fee_bps": 0.0, "slippage_bps": 0.0, "vol_slippage_coef": 0.0}


def _iid_market(shift: int, n_bars: int = 3000, seed: int = 0) -> MarketData:
    """i.i.d. ±1% bar returns; feature 0 at bar t shows the return of bar t + shift (0: already seen; 1: future)."""
    rng = np.random.default_rng(seed)
    ret = np.where(rng.random(n_bars) < 0.5, 0.01, -0.01)
    close = 100.0 * np.exp(np.cumsum(ret))
    open_ = np.concatenate([[100.0], close[:-1]])
    high, low = np.maximum(open_, close) * 1.0001, np.minimum(open_, close) * 0.9999
    shown = np.roll(ret, -shift) * 100.0
    shown[n_bars - shift:] = 0.0
    features = np.stack([shown, rng.normal(size=n_bars)], axis=1).astype(np.float32)
    ts = (np.arange(n_bars, dtype=np.int64) * 3600 + 1_600_000_000) * 1_000_000_000
    return MarketData.from_arrays(ts, open_, high, low, close, features=features)


def _trained_mean_reward(shift: int) -> float:
    market = _iid_market(shift)
    sim = SimConfig.parse({"window": 1, "episode_length": 64, "costs": ZERO_COSTS})
    env = SimVecEnv(market, sim, 32, seed=0, start_index=0, end_index=2000)
    policy = make_policy("mlp", ObsSpec.from_env(env), {"hidden_sizes": (32, 32)}, seed=0)
    config = PPOConfig(total_steps=32 * 32 * 20, n_steps=32, learning_rate=3e-3, ent_coef=0.0, lr_final_fraction=1.0)
    PPOTrainer(policy, env, config, seed=0, progress=False, tensorboard=False).train()
    evaluation = SimVecEnv.for_evaluation(market, sim, 2000, 3000, num_envs=8)
    return evaluate_policy(policy, evaluation, 120, seed=0)["mean_reward"]


def test_policy_is_never_paid_on_a_return_it_has_seen() -> None:
    """With the simulator's timing contract, knowing bar t's (i.i.d.) return is worth nothing; the same training
    budget does exploit a feature that (in this test only) shows the next bar's return."""
    honest = _trained_mean_reward(shift=0)
    cheat = _trained_mean_reward(shift=1)
    assert abs(honest) < 0.001, honest  # E|r| = 0.01 per bar
    assert cheat > 0.005, cheat


@pytest.fixture(scope="module")
def btc_data():
    return prepare_training_data(["BTCUSDT"], "2022-01-01", "2022-03-01", "2022-03-15", warmup_bars=600)


@pytest.mark.parametrize("kind", ["mlp", "lstm", "transformer", "sizer"])
def test_train_ppo_writes_bundle_that_loads(kind: str, btc_data, tmp_path) -> None:
    result = train_ppo(kind, btc_data, tmp_path, steps=512, seed=0, num_envs=8, eval_envs=4,
                       ppo_overrides={"n_steps": 32}, sim_overrides={"episode_length": 48},
                       policy_config={"transformer": {"d_model": 32, "n_layers": 1, "context": 8}}.get(kind),
                       tensorboard=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 512 and np.isfinite(metrics["validation"]["mean_reward"])
    bundle = load_bundle(tmp_path)
    assert bundle.policy.kind == kind and bundle.symbols == ("BTCUSDT",)
    assert bundle.sim_config["action_kind"] == result.policy.action_kind
    env = SimVecEnv.for_evaluation(btc_data.market, SimConfig.parse(bundle.sim_config), *btc_data.val_range, 2)
    out, _ = bundle.policy.act(env.reset(), bundle.policy.initial_state(2))
    assert out.action.shape == (2, 1)


def test_cli_train_multiasset_end_to_end_and_resume_guard(tmp_path) -> None:
    runner = CliRunner()
    args = ["train", "--policy", "multiasset", "--data", "BTCUSDT", "--data", "ETHUSDT", "--out", str(tmp_path / "r"),
            "--train-start", "2022-01-01", "--train-end", "2022-03-01", "--val-end", "2022-03-10", "--steps", "256",
            "--num-envs", "8", "--n-steps", "16", "--episode-length", "32", "--no-tensorboard"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["config"]["policy"] == "multiasset" and set(run["data"]) == {"BTCUSDT", "ETHUSDT"}
    assert load_bundle(tmp_path / "r").symbols == ("BTCUSDT", "ETHUSDT")
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "--resume" in again.output
    changed = runner.invoke(cli, [*args[:-1], "--seed", "1", "--resume"])
    assert changed.exit_code == 2 and "different config" in changed.output
    resumed = runner.invoke(cli, [*args, "--resume"])  # finished run: resumes to the end at once
    assert resumed.exit_code == 0, resumed.output
    # the saved config reruns the same run (the same resolved config, so --resume accepts it)
    saved = tmp_path / "r" / "config.json"
    assert json.loads(saved.read_text())["sim"]["episode_length"] == 32
    rerun = runner.invoke(cli, ["train", "--config", str(saved), "--out", str(tmp_path / "r"), "--resume",
                                "--no-tensorboard"])
    assert rerun.exit_code == 0, rerun.output


def test_synthetic_pretraining_is_measured_on_validation(btc_data, tmp_path) -> None:
    result = train_ppo("mlp", btc_data, tmp_path, steps=256, seed=0, num_envs=8, eval_envs=4,
                       ppo_overrides={"n_steps": 16, "eval_every_updates": 1}, sim_overrides={"episode_length": 32},
                       pretrain_synthetic_steps=256, synthetic_bars=800, tensorboard=False)
    sp = json.loads((tmp_path / "metrics.json").read_text())["synthetic_pretraining"]
    assert sp["pretrain_steps"] == 256 and sp["chosen"] in ("pretrained", "scratch")
    assert sp["helps"] == (sp["val_mean_reward_pretrained"] > sp["val_mean_reward_scratch"])
    assert (tmp_path / "pretrain" / "checkpoints" / "latest.json").exists()
    chosen_best = sp["val_mean_reward_pretrained"] if sp["chosen"] == "pretrained" else sp["val_mean_reward_scratch"]
    assert result.train.best_metric == chosen_best
    assert load_bundle(tmp_path).policy.kind == "mlp"


def test_cli_dispatches_offline_kinds(monkeypatch, tmp_path) -> None:
    import himari.training.offline as offline_train

    calls = []
    monkeypatch.setattr(offline_train, "train_offline", lambda **kwargs: calls.append(kwargs) or tmp_path)
    result = CliRunner().invoke(cli, ["train", "--policy", "cql", "--data", "BTCUSDT", "--out", str(tmp_path / "o"),
                                      "--steps", "10", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert calls == [{"policy_kind": "cql", "data_specs": ["BTCUSDT"], "out": str(tmp_path / "o"),
                      "train_start": "2023-01-01", "train_end": "2024-01-01", "val_end": "2024-04-01", "steps": 10,
                      "seed": 3, "resume": False, "options": None}]
