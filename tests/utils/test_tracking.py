"""Tracking to local stores: TensorBoard event files and an MLflow file store (no server)."""

from __future__ import annotations

import pytest

from himari.utils.tracking import (
    Tracker,
    TrackingConfig,
    activate,
    active_tracker,
    flatten_params,
    open_tracker,
    training_callbacks,
)


def _log_a_run(tracker: Tracker) -> None:
    for step, reward in ((256, -0.5), (512, 0.25)):
        tracker.log_training("window 0 candidate 0", {"update": step // 256 - 1, "global_step": step,
                                                      "rollout_mean_reward": reward, "stopped": True}, step)
    tracker.log_training("window 1 candidate 0", {"rollout_mean_reward": 1.5, "val_mean_reward": float("nan")}, 128)
    tracker.log_window(0, {"window": 0, "train": "2022", "validation_sharpe": 1.25, "test_return": -0.02})
    tracker.log_window(1, {"window": 1, "validation_sharpe": 0.5, "test_return": 0.03})
    tracker.log_summary({"sharpe": 0.7, "verdict": "no", "statistics": {"dsr": 0.4, "n": 3}, "nested": {"x": 1}})


def test_disabled_tracking_opens_nothing(tmp_path) -> None:
    assert open_tracker(TrackingConfig(), tmp_path, "r") is None and open_tracker(None, tmp_path, "r") is None
    assert training_callbacks("any") == [] and active_tracker() is None
    assert flatten_params({"sizing": {"decision_every_bars": 24}, "sim": {}, "seed": 0}) == {
        "sizing.decision_every_bars": "24", "sim": "{}", "seed": "0"}


def test_tensorboard_events_per_training_and_per_window(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = open_tracker(TrackingConfig(tensorboard=True), tmp_path, "run")
    assert tracker is not None
    with activate(tracker):
        assert active_tracker() is tracker and len(training_callbacks("w")) == 1
    assert active_tracker() is None
    _log_a_run(tracker)
    tracker.close()

    def scalars(name: str) -> dict[str, list[tuple[int, float]]]:
        acc = EventAccumulator(str(tmp_path / "tensorboard" / name)).Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

    w0 = scalars("window_0_candidate_0")
    assert w0 == {"rollout_mean_reward": [(256, -0.5), (512, 0.25)]}  # update/global_step/bools left out
    assert scalars("window_1_candidate_0") == {"rollout_mean_reward": [(128, 1.5)]}  # NaN left out
    wf = scalars("walk_forward")
    assert wf["window/validation_sharpe"] == [(0, 1.25), (1, 0.5)]
    assert wf["window/test_return"] == [(0, pytest.approx(-0.02)), (1, pytest.approx(0.03))]
    assert wf["summary/sharpe"] == [(0, pytest.approx(0.7))] and wf["summary/statistics/dsr"] == [(0, pytest.approx(0.4))]
    assert "window/window" not in wf and not any("nested" in t for t in wf)


def _mlflow_client(store):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.resolve().as_uri())


def test_mlflow_file_store_parent_and_child_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    cfg = TrackingConfig(mlflow=True, mlflow_tracking_uri=str(store), mlflow_experiment="exp")
    tracker = open_tracker(cfg, tmp_path / "run", "wfo: run", {"policy": "mlp", "sizing": {"decision_every_bars": 24}})
    assert tracker is not None
    _log_a_run(tracker)
    (tmp_path / "metrics.json").write_text("{}")
    tracker.finish({"total_return": 0.1}, [tmp_path / "metrics.json", tmp_path / "absent.html"])
    client = _mlflow_client(store)
    experiment = client.get_experiment_by_name("exp")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"wfo: run", "window 0 candidate 0", "window 1 candidate 0"}
    parent = runs["wfo: run"]
    assert parent.info.status == "FINISHED" and parent.data.params == {"policy": "mlp", "sizing.decision_every_bars": "24"}
    history = client.get_metric_history(parent.info.run_id, "window/validation_sharpe")
    assert [(m.step, m.value) for m in history] == [(0, 1.25), (1, 0.5)]
    assert parent.data.metrics["total_return"] == pytest.approx(0.1)
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["metrics.json"]
    child = runs["window 0 candidate 0"]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
    curve = client.get_metric_history(child.info.run_id, "rollout_mean_reward")
    assert [(m.step, m.value) for m in curve] == [(256, -0.5), (512, 0.25)]
    # a run that fails inside the tracked block ends FAILED
    failing = open_tracker(cfg, tmp_path / "run2", "failing")
    with pytest.raises(RuntimeError), activate(failing):
        raise RuntimeError("boom")
    failed = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "failing"]
    assert failed[0].info.status == "FAILED"
