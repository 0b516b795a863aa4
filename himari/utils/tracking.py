"""Experiment tracking: TensorBoard event files and an MLflow store, both off by default.

A :class:`Tracker` belongs to one run directory. It records

- **training curves** of every PPO training inside the run (each walk-forward window's candidates, the stack's
  layers): TensorBoard writes one event directory per training (``RUN/tensorboard/<training>``, so TensorBoard
  shows the windows as separate curves on the same tags), MLflow one child run per training under the run's parent;
- **per-window** validation and test figures (step = window index): ``RUN/tensorboard/walk_forward`` and the
  parent MLflow run's ``window/*`` metrics;
- **the summary** (``metrics.json``'s headline figures) and, in MLflow, the run's parameters (the resolved config,
  flattened) and its result files as artifacts.

MLflow uses a local file store unless ``mlflow_tracking_uri`` names a server: ``mlflow ui --backend-store-uri
mlruns`` shows it (MLflow 3 keeps file stores in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``, which the
tracker sets for ``file:`` stores).

The trainer is reached without threading an argument through every layer: :func:`activate` makes a tracker the
active one for a block (a context variable, so nothing leaks past it), and :func:`training_callbacks` gives the
PPO run assembly the active tracker's callback for a training. Ray workers run without one (their window metrics
are still recorded when the windows are traded in order).
"""

from __future__ import annotations

import contextvars
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from himari.config import FrozenConfig
from himari.errors import ConfigError


class TrackingConfig(FrozenConfig):
    """Where a run's curves and figures go besides its run directory's JSON files."""

    tensorboard: bool = Field(False, description="TensorBoard events in RUN/tensorboard (tensorboard --logdir RUN)")
    mlflow: bool = Field(False, description="log to MLflow (pip install 'himari[mlflow]'; no server needed)")
    mlflow_tracking_uri: str = Field(
        "mlruns", description="MLflow store: a local directory (file store) or a tracking server URI")
    mlflow_experiment: str = Field("himari", min_length=1, description="MLflow experiment name")

    @property
    def enabled(self) -> bool:
        return self.tensorboard or self.mlflow


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "training"


def _scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of ``values`` (nested mappings flattened with ``/``); booleans and strings are left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_scalars(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"sizing": {"decision_every_bars": 24}}`` -> ``{"sizing.decision_every_bars": "24"}`` (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out


def _file_store_path(uri: str) -> Path | None:
    if "://" in uri and not uri.startswith("file:"):
        return None
    return Path(uri.removeprefix("file://").removeprefix("file:"))


class Tracker:
    """Tracking of one run directory (see the module docstring). ``close()`` ends it; a disabled config gives a
    tracker that records nothing."""

    def __init__(self, config: TrackingConfig, run_dir: str | Path, run_name: str,
                 params: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self._training_writer: tuple[str, Any] | None = None
        self._window_writer: Any = None
        self._mlflow: Any = None
        self._parent_run: str | None = None
        self._child_runs: dict[str, str] = {}
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError as exc:
                raise ConfigError("tracking.tensorboard needs the 'tensorboard' extra: "
                                  "pip install 'himari[tensorboard]'") from exc
        if config.mlflow:
            self._start_mlflow(run_name, params or {})

    # ------------------------------------------------------------------------------------------ MLflow
    def _start_mlflow(self, run_name: str, params: Mapping[str, Any]) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError("tracking.mlflow needs the 'mlflow' extra: pip install 'himari[mlflow]'") from exc
        uri = self.config.mlflow_tracking_uri
        store = _file_store_path(uri)
        if store is not None:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            store.mkdir(parents=True, exist_ok=True)
            uri = store.resolve().as_uri()
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(self.config.mlflow_experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(self.config.mlflow_experiment))
        run = client.create_run(experiment_id, run_name=run_name,
                                tags={"himari.run_dir": str(self.run_dir.resolve())})
        self._mlflow, self._experiment_id, self._parent_run = client, experiment_id, run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(self._parent_run, params=items[i:i + 100])

    def _log_mlflow(self, run_id: str, scalars: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in scalars.items()]
        if metrics:
            self._mlflow.log_batch(run_id, metrics=metrics)

    @property
    def mlflow_run_id(self) -> str | None:
        """The parent MLflow run of this run directory (None without MLflow)."""
        return self._parent_run

    # ------------------------------------------------------------------------------------------ logging
    def _writer(self, name: str) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard" / name))

    def log_training(self, training: str, metrics: Mapping[str, Any], step: int) -> None:
        """One PPO update's record (``metrics.jsonl``'s fields) of the training named ``training``."""
        scalars = {k: v for k, v in _scalars(metrics).items() if k not in ("update", "global_step")}
        if self.config.tensorboard:
            if self._training_writer is None or self._training_writer[0] != training:
                self._close_training_writer()  # trainings run one after the other: one open writer at a time
                self._training_writer = (training, self._writer(_slug(training)))
            writer = self._training_writer[1]
            for key, value in scalars.items():
                writer.add_scalar(key, value, step)
        if self._mlflow is not None:
            run_id = self._child_runs.get(training)
            if run_id is None:
                run = self._mlflow.create_run(self._experiment_id, run_name=training,
                                              tags={"mlflow.parentRunId": self._parent_run})
                run_id = self._child_runs[training] = run.info.run_id
            self._log_mlflow(run_id, scalars, step)

    def log_window(self, index: int, figures: Mapping[str, Any]) -> None:
        """A walk-forward window's validation and test figures (its numeric fields), at step ``index``."""
        scalars = {k: v for k, v in _scalars(figures).items() if k != "window"}
        if self.config.tensorboard:
            if self._window_writer is None:
                self._window_writer = self._writer("walk_forward")
            for key, value in scalars.items():
                self._window_writer.add_scalar(f"window/{key}", value, index)
            self._window_writer.flush()
        if self._mlflow is not None:
            self._log_mlflow(self._parent_run, {f"window/{k}": v for k, v in scalars.items()}, index)  # type: ignore[arg-type]

    def log_summary(self, metrics: Mapping[str, Any]) -> None:
        """The run's headline figures: top-level numbers of ``metrics.json`` and its ``statistics``."""
        scalars = _scalars({k: v for k, v in metrics.items() if not isinstance(v, Mapping)})
        scalars.update(_scalars(metrics.get("statistics") or {}, "statistics/"))
        if self.config.tensorboard:
            if self._window_writer is None:
                self._window_writer = self._writer("walk_forward")
            for key, value in scalars.items():
                self._window_writer.add_scalar(f"summary/{key}", value, 0)
            self._window_writer.flush()
        if self._mlflow is not None:
            self._log_mlflow(self._parent_run, scalars, 0)  # type: ignore[arg-type]

    def log_artifacts(self, paths: list[Path]) -> None:
        """Copy result files (metrics.json, report.html, experiment.yaml...) into the MLflow run."""
        if self._mlflow is None:
            return
        for path in paths:
            if Path(path).is_file():
                self._mlflow.log_artifact(self._parent_run, str(path))

    def callback(self, training: str) -> Callable[[Any, dict[str, Any]], None]:
        """A :class:`~himari.agents.ppo.trainer.PPOTrainer` callback recording ``training``'s updates."""

        def record(trainer: Any, metrics: dict[str, Any]) -> None:
            self.log_training(training, metrics, int(metrics.get("global_step", trainer.global_step)))

        return record

    def _close_training_writer(self) -> None:
        if self._training_writer is not None:
            self._training_writer[1].close()
            self._training_writer = None

    def finish(self, metrics: Mapping[str, Any], artifacts: list[Path]) -> None:
        """Record the summary and the result files, then close."""
        self.log_summary(metrics)
        self.log_artifacts(artifacts)
        self.close()

    def close(self, status: str = "FINISHED") -> None:
        self._close_training_writer()
        if self._window_writer is not None:
            self._window_writer.close()
            self._window_writer = None
        if self._mlflow is not None:
            for run_id in self._child_runs.values():
                self._mlflow.set_terminated(run_id, status)
            self._mlflow.set_terminated(self._parent_run, status)
            self._mlflow = None


_ACTIVE: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar("himari_tracker", default=None)


def open_tracker(config: TrackingConfig | None, run_dir: str | Path, run_name: str,
                 params: Mapping[str, Any] | None = None) -> Tracker | None:
    """A tracker for ``run_dir``, or None when ``config`` tracks nothing."""
    if config is None or not config.enabled:
        return None
    return Tracker(config, run_dir, run_name, params)


@contextmanager
def activate(tracker: Tracker | None) -> Iterator[None]:
    """Make ``tracker`` the active one inside the block (trainings started there report to it); when the block
    raises, the tracker is closed (its MLflow runs end FAILED)."""
    token = _ACTIVE.set(tracker)
    try:
        yield
    except BaseException:
        if tracker is not None:
            tracker.close("FAILED")
        raise
    finally:
        _ACTIVE.reset(token)


def active_tracker() -> Tracker | None:
    return _ACTIVE.get()


def training_callbacks(training: str) -> list[Callable[[Any, dict[str, Any]], None]]:
    """Trainer callbacks recording the training named ``training`` to the active tracker (none when inactive)."""
    tracker = _ACTIVE.get()
    return [] if tracker is None else [tracker.callback(training)]
