"""Atomic training checkpoints: weights (safetensors), optimizer state (torch.save, loaded weights_only) and the
trainer's scalar state (JSON).

Layout under ``RUN/checkpoints/``::

    update-000040/weights.safetensors   # policy module state (network + observation normalizer)
    update-000040/optimizer.pt          # Adam state_dict (tensors + plain containers only)
    update-000040/trainer_state.json    # next update, global step, early-stopping state, config hash
    latest.json                         # {"directory": "update-000040"} - written last, atomically

A crash while writing a checkpoint leaves ``latest.json`` pointing at the previous complete one.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from himari.errors import RunDirError
from himari.utils.io import atomic_write_bytes, atomic_write_json, read_json

KEEP_CHECKPOINTS = 2


def save_checkpoint(
    root: str | Path,
    update: int,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    trainer_state: dict[str, Any],
) -> Path:
    """Write checkpoint ``update`` under ``root`` and point ``latest.json`` at it; keep the last two."""
    root = Path(root)
    name = f"update-{update:06d}"
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / "weights.safetensors", safetensors.torch.save(weights))
    buffer = io.BytesIO()
    torch.save(optimizer_state, buffer)
    atomic_write_bytes(directory / "optimizer.pt", buffer.getvalue())
    atomic_write_json(directory / "trainer_state.json", trainer_state)
    atomic_write_json(root / "latest.json", {"directory": name, "update": update})
    old = sorted(p for p in root.glob("update-*") if p.is_dir() and p.name != name)
    for stale in old[: max(0, len(old) - (KEEP_CHECKPOINTS - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return directory


def latest_checkpoint(root: str | Path) -> Path | None:
    pointer = Path(root) / "latest.json"
    if not pointer.exists():
        return None
    directory = Path(root) / read_json(pointer)["directory"]
    if not (directory / "trainer_state.json").exists():
        raise RunDirError(f"{pointer}: points at {directory.name}, which is incomplete")
    return directory


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(weights, optimizer state, trainer state) of one checkpoint directory; no pickle of arbitrary objects."""
    directory = Path(directory)
    try:
        weights = safetensors.torch.load_file(str(directory / "weights.safetensors"))
        optimizer_state = torch.load(directory / "optimizer.pt", weights_only=True)
        trainer_state = read_json(directory / "trainer_state.json")
    except (OSError, ValueError, RuntimeError) as exc:
        raise RunDirError(f"{directory}: unreadable checkpoint: {exc}") from None
    return weights, optimizer_state, trainer_state
