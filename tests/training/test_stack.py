"""``himari train --policy stack`` end to end: L2 then L3, a bundle that backtests and decides through the API."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from himari.agents.stack import StackPolicy
from himari.cli.main import cli
from himari.trading.bundle import load_bundle


def test_train_stack_backtest_and_decide(tmp_path, btc_bars) -> None:
    runner = CliRunner()
    run = tmp_path / "stack"
    res = runner.invoke(cli, ["train", "--policy", "stack", "--out", str(run), "--train-start", "2022-01-01",
                              "--train-end", "2022-03-01", "--val-end", "2022-03-15", "--steps", "256",
                              "--num-envs", "8", "--n-steps", "16", "--episode-length", "32", "--no-tensorboard"])
    assert res.exit_code == 0, res.output
    bundle = load_bundle(run)
    assert isinstance(bundle.policy, StackPolicy)
    sim = bundle.sim_config
    assert sim["action_kind"] == "delta" and sim["sizing"] is not None and sim["risk"] is not None
    assert json.loads((run / "config.json").read_text())["policy"] == "stack"
    res = runner.invoke(cli, ["backtest", "--run", str(run), "--start", "2022-04-01", "--end", "2022-04-08",
                              "--out", str(tmp_path / "bt")])
    assert res.exit_code == 0, res.output
    from himari.api import load_run

    decision = load_run(run).decide(btc_bars.between("2021-12-01", "2022-04-08").frame)
    assert decision.actions == ("DELTA",) and abs(decision.target_position[0]) <= 3.0


@pytest.mark.parametrize("l2", ["mlp-classifier", "dt"])
def test_stack_with_an_offline_l2_trains_frozen_sizer_and_decides(tmp_path, btc_bars, l2) -> None:
    """An offline L2 (the supervised classifier; the decision transformer, which keeps a context across bars) is
    fitted first, frozen, and the L3 sizer trains under it; the stack's window is at least the L2's; the bundle
    reloads and backtests."""
    runner = CliRunner()
    run = tmp_path / "stack"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"policy": "stack", "policy_config": {"direction_kind": l2}}))
    res = runner.invoke(cli, ["train", "--config", str(cfg), "--out", str(run), "--train-start", "2022-01-01",
                              "--train-end", "2022-03-01", "--val-end", "2022-03-15", "--steps", "256",
                              "--num-envs", "8", "--n-steps", "16", "--episode-length", "32", "--no-tensorboard"])
    assert res.exit_code == 0, res.output
    bundle = load_bundle(run)
    assert bundle.policy.direction.kind == l2 and bundle.policy.sizer.kind == "sizer"
    assert bundle.sim_config["window"] == max(8, bundle.policy.direction.window)  # the L3's 8 bars or the L2's
    res = runner.invoke(cli, ["backtest", "--run", str(run), "--start", "2022-04-01", "--end", "2022-04-08",
                              "--out", str(tmp_path / "bt")])
    assert res.exit_code == 0, res.output


def test_an_interrupted_stack_training_resumes_to_the_same_weights(tmp_path, monkeypatch) -> None:
    """Killed during the L3 sizer's training: ``resume`` restores the finished L2 from its final checkpoint and the L3
    from its last one, and ends with the uninterrupted run's weights (both layers)."""
    import torch

    from himari.agents.ppo.trainer import PPOTrainer
    from himari.agents.registry import policy_tensors
    from himari.agents.training import prepare_training_data
    from himari.training.ppo import train_stack

    data = prepare_training_data(["BTCUSDT"], "2022-01-01", "2022-03-01", "2022-03-15")
    kwargs = {"steps": 640, "num_envs": 8, "ppo_overrides": {"n_steps": 16, "checkpoint_every_updates": 2},
              "sim_overrides": {"episode_length": 32}, "progress": False}
    whole = train_stack(data, tmp_path / "whole", **kwargs)

    real_save = PPOTrainer.save_checkpoint
    saves: list[str] = []

    def killed_mid_sizer(self):
        saves.append(self.description)
        if "L3 sizer" in self.description and sum("L3 sizer" in d for d in saves) == 2:
            raise KeyboardInterrupt  # killed before the sizer's second checkpoint
        return real_save(self)

    monkeypatch.setattr(PPOTrainer, "save_checkpoint", killed_mid_sizer)
    with pytest.raises(KeyboardInterrupt):
        train_stack(data, tmp_path / "resumed", **kwargs)
    monkeypatch.setattr(PPOTrainer, "save_checkpoint", real_save)
    assert not (tmp_path / "resumed" / "bundle").exists()
    real_collect = PPOTrainer.collect_rollout
    rollouts: list[str] = []

    def counting(self, *args, **kw):
        rollouts.append(self.description)
        return real_collect(self, *args, **kw)

    monkeypatch.setattr(PPOTrainer, "collect_rollout", counting)
    resumed = train_stack(data, tmp_path / "resumed", **kwargs, resume=True)
    # the L2 is not trained again; the L3 continues after its checkpoint at update 2 (3 of its 5 updates)
    assert len(rollouts) == 3 and all("L3 sizer" in d for d in rollouts)
    a, b = policy_tensors(whole.policy.direction), policy_tensors(resumed.policy.direction)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = policy_tensors(whole.policy.sizer), policy_tensors(resumed.policy.sizer)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="checkpoints of an earlier run"):
        train_stack(data, tmp_path / "resumed", **kwargs)  # without resume: refused, nothing overwritten
