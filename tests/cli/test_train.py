"""``himari train``: a run directory's own files rerun it, and ``--resume`` extends a finished run."""

from __future__ import annotations

import importlib.util
import json

from click.testing import CliRunner

from himari.cli.main import cli

TINY = ["--train-start", "2023-01-01", "--train-end", "2023-03-01", "--val-end", "2023-04-01", "--num-envs", "8",
        "--n-steps", "32", "--episode-length", "64", "--no-tensorboard"]


def _without_speed(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k != "steps_per_s"}
    out["train_last"] = {k: v for k, v in metrics["train_last"].items() if k not in ("steps_per_s", "update_s")}
    return out


def test_run_json_reruns_and_resume_extends_a_finished_run(tmp_path, monkeypatch) -> None:
    runner = CliRunner()
    a, b = tmp_path / "a", tmp_path / "b"
    store = tmp_path / "mlruns"
    with_mlflow = importlib.util.find_spec("mlflow") is not None
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    first = runner.invoke(cli, ["train", "--policy", "mlp", "--out", str(a), "--steps", "512", "--learning-rate",
                                "0.001", *TINY, *(["--mlflow", str(store)] if with_mlflow else [])])
    assert first.exit_code == 0, first.output
    if with_mlflow:  # the training curve in a child run of the run directory's run, on a local store
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=store.resolve().as_uri())
        runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("himari").experiment_id])}
        assert set(runs) == {"train: a", "ppo mlp"} and runs["train: a"].data.metrics["global_step"] == 512
        assert runs["train: a"].data.params["ppo.learning_rate"] == "0.001"
        curve = client.get_metric_history(runs["ppo mlp"].info.run_id, "rollout_mean_reward")
        assert [m.step for m in curve] == [256, 512]
    # RUN/run.json holds the resolved config: it reruns the same run (was: "unknown sections")
    rerun = runner.invoke(cli, ["train", "--config", str(a / "run.json"), "--out", str(b), "--no-tensorboard"])
    assert rerun.exit_code == 0, rerun.output
    assert "trained mlp: 512 steps" in rerun.output and "[2023-03-01, 2023-04-01)" in rerun.output
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert _without_speed(ma) == _without_speed(mb)
    # resuming the finished run with its own config: nothing to train, said so, no "nan steps/s"
    done = runner.invoke(cli, ["train", "--out", str(a), "--resume"])
    assert done.exit_code == 0, done.output
    assert "already complete at 512 steps" in done.output and "nan" not in done.output
    assert json.loads((a / "metrics.json").read_text())["steps_per_s"] == ma["steps_per_s"]
    # more --steps extend it from its final checkpoint; the learning rate given at the start is kept
    more = runner.invoke(cli, ["train", "--out", str(a), "--resume", "--steps", "1024"])
    assert more.exit_code == 0, more.output
    assert "extending" in more.output and "trained mlp: 1024 steps" in more.output
    records = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records] == [0, 1, 2, 3] and records[-1]["global_step"] == 1024
    run = json.loads((a / "run.json").read_text())
    assert run["config"]["steps"] == 1024 and run["config"]["ppo"]["learning_rate"] == 0.001
    fewer = runner.invoke(cli, ["train", "--out", str(a), "--resume", "--steps", "600"])
    assert fewer.exit_code != 0 and "cannot shrink" in fewer.output
    other = runner.invoke(cli, ["train", "--out", str(a), "--resume", "--steps", "2048", "--seed", "1"])
    assert other.exit_code != 0 and "seed" in other.output and "Traceback" not in other.output


def test_run_json_of_a_walk_forward_run_is_not_a_train_config(tmp_path) -> None:
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"command": "wfo", "config": {"wfo": {"policy": "mlp"}, "backend": "local"}}))
    result = CliRunner().invoke(cli, ["train", "--config", str(run), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "not a train config" in result.output
    assert not (tmp_path / "o").exists()


def test_run_json_of_an_offline_run_reruns_it(tmp_path) -> None:
    runner = CliRunner()
    args = ["--train-start", "2023-01-01", "--train-end", "2023-03-01", "--val-end", "2023-04-01"]
    first = runner.invoke(cli, ["train", "--policy", "mlp-classifier", "--out", str(tmp_path / "a"), "--steps", "200",
                                "--seed", "4", *args])
    assert first.exit_code == 0, first.output
    again = runner.invoke(cli, ["train", "--config", str(tmp_path / "a" / "run.json"), "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    a, b = (json.loads((tmp_path / d / "run.json").read_text()) for d in "ab")
    assert a["config"] == b["config"] and a["seed"] == b["seed"] == 4
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
