"""Checkpoints of the learned market generators: ``generator.json`` (kind, config, fit metadata) plus
``weights.safetensors`` (network weights and the frozen row scaler), both written atomically; no pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from himari.errors import RunDirError
from himari.utils.io import atomic_write_bytes, atomic_write_json, read_json

MANIFEST = "generator.json"
WEIGHTS = "weights.safetensors"
FORMAT = "himari.generator/1"


def save_generator(directory: str | Path, kind: str, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                   meta: dict[str, Any] | None = None) -> Path:
    """Write the weights, then the manifest (a reader never sees a manifest without its weights)."""
    from safetensors.torch import save

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(root / WEIGHTS, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    atomic_write_json(root / MANIFEST, {"format": FORMAT, "kind": kind, "config": config, "meta": meta or {}})
    return root / MANIFEST


def load_generator(directory: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(config, tensors, meta) of a checkpoint of ``kind``; :class:`RunDirError` naming the file otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(directory)
    manifest, weights = root / MANIFEST, root / WEIGHTS
    if not manifest.exists() or not weights.exists():
        raise RunDirError(f"{root}: a generator checkpoint needs {MANIFEST} and {WEIGHTS}")
    try:
        payload = read_json(manifest)
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{manifest}: not readable JSON ({exc})") from None
    if payload.get("format") != FORMAT or payload.get("kind") != kind:
        raise RunDirError(f"{manifest}: not a {kind} checkpoint (format={payload.get('format')!r}, "
                          f"kind={payload.get('kind')!r})")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise RunDirError(f"{weights}: not a readable safetensors file ({exc})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise RunDirError(f"{weights}: tensor {name!r} holds NaN/inf")
    return payload["config"], tensors, payload.get("meta", {})


def scaler_tensors(mean: np.ndarray, std: np.ndarray) -> dict[str, torch.Tensor]:
    return {"scaler.mean": torch.as_tensor(mean, dtype=torch.float64),
            "scaler.std": torch.as_tensor(std, dtype=torch.float64)}
