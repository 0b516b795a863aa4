"""End to end: `himari train --policy {mlp-classifier,cql,dt,cgdt,flag-trader}` with tiny budgets on bundled data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from himari.cli.main import cli
from himari.errors import ConfigError
from himari.trading.bundle import load_bundle

from .conftest import requires_llm

ARGS = ["--data", "BTCUSDT", "--train-start", "2022-01-01", "--train-end", "2022-03-01", "--val-end", "2022-03-15",
        "--seed", "0"]


@pytest.mark.slow
@pytest.mark.parametrize("kind,steps", [("mlp-classifier", 1024), ("cql", 1024), ("dt", 512), ("cgdt", 512),
                                        pytest.param("flag-trader", 256, marks=requires_llm)])
def test_train_cli_each_offline_kind(kind: str, steps: int, tmp_path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--policy", kind, "--out", str(out), "--steps", str(steps), *ARGS])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["policy_kind"] == kind
    val = metrics["classification"]["validation"]
    assert {"accuracy", "balanced_accuracy", "macro_f1", "log_loss"} <= set(val["model"])
    assert val["majority_baseline"]["n"] == val["model"]["n"] > 0
    assert metrics["test"]["classification"]["model"]["n"] > 0  # [val_end, val_end + 14 days)
    assert "always_long" in metrics["test"]["simulator"]
    assert metrics["windows"]["test"][0].startswith("2022-03-15")
    run_meta = json.loads((out / "run.json").read_text())
    assert run_meta["seed"] == 0 and run_meta["config"]["policy_kind"] == kind
    bundle = load_bundle(out)
    assert bundle.policy.kind == kind and bundle.symbols == ("BTCUSDT",)
    assert bundle.sim_config["window"] >= bundle.policy.window
    if kind in ("cql", "dt", "cgdt"):
        data = metrics["training"]["dataset"]
        assert data["transitions"] > 0 and "rule:random" in data["behaviours"]
        assert metrics["training"]["best_val_score"] is not None  # selected on the validation window
    # the bundle decides on an observation built from its own tactical pipeline
    frame = bundle.tactical["BTCUSDT"]
    assert frame.feature_names
    w = bundle.sim_config["window"]
    obs_features = np.zeros((1, w, 1, len(frame.feature_names)), np.float32)
    from himari.env.protocol import ACCOUNT_FIELDS, Observation

    obs = Observation(obs_features, np.full((1, w, 1, 4), 0.25, np.float32), np.zeros((1, 1, len(ACCOUNT_FIELDS)),
                                                                                     np.float32))
    out_action, _ = bundle.policy.act(obs, bundle.policy.initial_state(1))
    assert out_action.action.shape == (1, 1)


def test_train_offline_resume_and_errors(tmp_path) -> None:
    from himari.training.offline import train_offline

    with pytest.raises(ConfigError):
        train_offline("ppo", ["BTCUSDT"], tmp_path / "x", "2022-01-01", "2022-03-01", "2022-03-15")
    with pytest.raises(ConfigError):
        train_offline("cql", ["BTCUSDT"], tmp_path / "x", "2022-03-01", "2022-01-01", "2022-03-15")
    with pytest.raises(ConfigError):
        train_offline("cql", ["BTCUSDT"], tmp_path / "x", "2022-01-01", "2022-03-01", "2022-03-15",
                      options={"bogus": 1})
    run = train_offline("mlp-classifier", ["BTCUSDT"], tmp_path / "r", "2022-01-01", "2022-03-01", "2022-03-15",
                        steps=256, options={"test": False})
    before = (run / "metrics.json").stat().st_mtime_ns
    again = train_offline("mlp-classifier", ["BTCUSDT"], tmp_path / "r", "2022-01-01", "2022-03-01", "2022-03-15",
                          steps=256, resume=True, options={"test": False})
    assert again == run and (run / "metrics.json").stat().st_mtime_ns == before  # finished run: returned as is
    from himari.errors import RunDirError

    with pytest.raises(RunDirError):
        train_offline("mlp-classifier", ["BTCUSDT"], tmp_path / "r", "2022-01-01", "2022-03-01", "2022-03-15",
                      steps=256, options={"test": False})
    with pytest.raises(RunDirError):
        train_offline("mlp-classifier", ["BTCUSDT"], tmp_path / "r", "2022-01-01", "2022-03-01", "2022-03-15",
                      steps=512, resume=True, options={"test": False})


@pytest.mark.slow
def test_offline_ensemble_cli_from_trained_runs(tmp_path) -> None:
    from himari.training.offline import train_offline

    windows = ("2022-01-01", "2022-03-01", "2022-03-15")
    cql = train_offline("cql", ["BTCUSDT"], tmp_path / "cql", *windows, steps=512, options={"test": False})
    mlp = train_offline("mlp-classifier", ["BTCUSDT"], tmp_path / "mlp", *windows, steps=512,
                        options={"test": False})
    runner = CliRunner()
    for weights in ("fit", "low-latency"):
        out = tmp_path / f"ens-{weights}"
        result = runner.invoke(cli, ["offline", "ensemble", "--member", str(cql), "--member", str(mlp),
                                     "--weights", weights, "--out", str(out)])
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert sum(metrics["weights"].values()) == pytest.approx(1.0)
        assert metrics["test"]["classification"]["model"]["n"] > 0
        bundle = load_bundle(out)
        assert bundle.policy.kind == "ensemble" and len(bundle.policy.members) == 2
    assert json.loads((tmp_path / "ens-low-latency" / "metrics.json").read_text())["weights"] == {
        "cql": pytest.approx(0.6), "mlp-classifier": pytest.approx(0.4)}
    bad = runner.invoke(cli, ["offline", "ensemble", "--member", str(cql), "--weights", "production",
                              "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "needs trained" in bad.output


@pytest.mark.parametrize("kind", ["mlp-classifier", "cql"])
def test_fit_offline_never_reads_data_after_val_end(btc_bars, kind: str) -> None:
    """Corrupting every bar at or after val_end leaves the fitted model unchanged (WFO-style in-memory fit):
    fitting and selection (validation log-loss, validation-window simulator return) never see the test period."""
    from himari.training.offline import fit_offline

    bars = btc_bars.between("2021-09-01", "2022-05-01")
    frame = bars.frame.copy()
    after = frame.index >= "2022-03-15"
    frame.loc[after, ["open", "high", "low", "close"]] *= 3.0
    corrupted = bars.with_frame(frame)
    fits = [fit_offline(kind, [b], "2022-01-01", "2022-03-01", "2022-03-15", steps=512, seed=1,
                        options={"evaluations": 2, "collect_steps": 64, "num_envs": 4})
            for b in (bars, corrupted)]
    for key, value in fits[0].policy.net.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), fits[1].policy.net.state_dict()[key].numpy())
    assert fits[0].bundle.policy is fits[0].policy and fits[0].bundle.meta["val_end"].startswith("2022-03-15")


def test_interrupted_train_offline_resumes_to_the_same_bundle(tmp_path, monkeypatch) -> None:
    """A CQL run killed after its second checkpoint and resumed ends with the uninterrupted run's weights: the
    simulator data are recollected identically, the loop continues on the same random stream."""
    import himari.training.offline as offline_train
    from himari.agents.offline import loop
    from himari.errors import RunDirError

    windows = ("2022-01-01", "2022-03-01", "2022-03-15")
    opts = {"test": False, "evaluations": 4, "collect_steps": 64, "num_envs": 4}
    full = offline_train.train_offline("cql", ["BTCUSDT"], tmp_path / "full", *windows, steps=1536, options=opts)

    class Killed(Exception):
        pass

    def dying_fit(algorithm, config, checkpoint_dir=None, resume=False, on_step=None):
        def die(step: int, loss: float) -> None:
            if step == 5:  # validations and checkpoints at updates 2, 4, 6
                raise Killed

        return loop.fit(algorithm, config, checkpoint_dir, resume, die)

    cut = tmp_path / "cut"
    monkeypatch.setattr(offline_train, "fit", dying_fit)
    with pytest.raises(Killed):
        offline_train.train_offline("cql", ["BTCUSDT"], cut, *windows, steps=1536, options=opts)
    monkeypatch.undo()
    assert (cut / "run.json").exists() and not (cut / "bundle").exists()
    assert json.loads((cut / "checkpoints" / "latest.json").read_text())["update"] == 4
    with pytest.raises(RunDirError):  # an interrupted run is continued only when asked
        offline_train.train_offline("cql", ["BTCUSDT"], cut, *windows, steps=1536, options=opts)
    offline_train.train_offline("cql", ["BTCUSDT"], cut, *windows, steps=1536, resume=True, options=opts)
    expected = load_bundle(full).policy.net.state_dict()
    resumed = load_bundle(cut).policy.net.state_dict()
    for key, value in expected.items():
        np.testing.assert_array_equal(value.numpy(), resumed[key].numpy(), err_msg=key)
    history = [json.loads((run / "metrics.json").read_text())["training_history"] for run in (full, cut)]
    assert history[0] == history[1] and len(history[0]) == 3


def test_offline_kinds_come_from_the_registry_and_loop_options_are_checked(tmp_path) -> None:
    from himari.agents.registry import POLICY_CLASSES, policy_class
    from himari.training.offline import DEFAULT_STEPS, LABEL_KINDS, OFFLINE_KINDS, RL_KINDS, train_offline

    assert set(OFFLINE_KINDS) == set(LABEL_KINDS) | set(RL_KINDS) == set(DEFAULT_STEPS)
    assert set(OFFLINE_KINDS) < set(POLICY_CLASSES)
    for kind in OFFLINE_KINDS:
        assert policy_class(kind).kind == kind
    windows = ("2022-01-01", "2022-03-01", "2022-03-15")
    for loop_options, message in (({"lr": 0.1}, "'lr'"), ({"grad_clip": 0.0}, "grad_clip"),
                                  ({"device": "tpu"}, "device"), ({"patience": 0}, "patience")):
        with pytest.raises(ConfigError, match=message):
            train_offline("cql", ["BTCUSDT"], tmp_path / "x", *windows, options={"loop": loop_options})
    assert not (tmp_path / "x").exists()  # rejected before any work


def test_classifier_window_is_the_labels_window(tmp_path) -> None:
    """options.model.window sets the labels' input window (the classifier and its inputs agree, so the trained
    model decides); contradicting windows are a clear error."""
    from himari.agents.registry import load_policy
    from himari.errors import ConfigError
    from himari.training.offline import train_offline

    windows = ("2022-01-01", "2022-03-01", "2022-03-15")
    with pytest.raises(ConfigError, match=r"options.model.window \(12\) and options.labels.window \(4\) differ"):
        train_offline("mlp-classifier", ["BTCUSDT"], tmp_path / "bad", *windows, steps=64,
                      options={"test": True, "model": {"window": 12}, "labels": {"window": 4}})
    run = train_offline("mlp-classifier", ["BTCUSDT"], tmp_path / "r", *windows, steps=256,
                        options={"test": True, "model": {"window": 12}})
    assert load_policy(run / "bundle" / "policy").window == 12
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["classification"]["model"]["n"] > 0  # the test period was decided with window 12
