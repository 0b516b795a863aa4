"""Training metrics: JSON lines in the run directory (always) and TensorBoard scalars (when installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from himari.utils.io import atomic_write_text, to_json


class MetricsLogger:
    """Appends one JSON object per record to ``RUN/metrics.jsonl``; mirrors scalars to ``RUN/tensorboard``.

    ``truncate_after(update)`` drops records of updates that a resumed run will redo, so the log of an interrupted
    and resumed run equals that of an uninterrupted one.
    """

    def __init__(self, run_dir: str | Path | None, tensorboard: bool = True) -> None:
        self.path = None if run_dir is None else Path(run_dir) / "metrics.jsonl"
        self._writer: Any = None
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        if run_dir is not None and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - optional extra
                SummaryWriter = None
            if SummaryWriter is not None:
                self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def truncate_after(self, update: int) -> None:
        if self.path is None or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed process
            if int(record.get("update", -1)) < update:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def log(self, record: dict[str, Any], step: int) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(to_json(record, indent=None) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("update", "global_step"):
                    self._writer.add_scalar(key, float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
