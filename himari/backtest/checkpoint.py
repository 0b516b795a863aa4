"""Walk-forward window checkpoints: an interrupted walk-forward resumes without redoing finished windows.

After each window, :func:`save_window` writes ``RUN/checkpoints/windows/NNN/``:

- ``state.json`` + ``arrays.npz`` — the window's results (the test period's ``BacktestResult`` with its decision
  log and fills, every configuration's validation result and test path, the ablation paths), the accounts every
  chain carries into the next window, and the run's fingerprint;
- ``bundle/`` — the traded bundle; ``policies/<configuration>/`` — what each configuration's next window fine-tunes
  from (transfer), saved as safetensors + JSON like every model.

Nothing is pickled: the results are a tagged JSON tree whose arrays live in an ``.npz`` read with
``allow_pickle=False``, and only the result dataclasses named in ``_DATACLASSES`` can be rebuilt. A window directory
is written under a temporary name and renamed when complete, so a run killed mid-write leaves either the whole
window or nothing.

The **fingerprint** (:func:`run_fingerprint`) hashes the walk-forward config, the bars of every symbol and the
pre-trained starting weights, if any. A rerun resumes from the longest prefix of windows whose fingerprint matches;
anything else (another config, other data) is retrained and overwritten. Floats round-trip exactly (JSON ``repr``
of doubles, NumPy dtypes kept), so a resumed run writes the same ``metrics.json`` as an uninterrupted one (tested).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from himari.errors import RunDirError
from himari.utils.io import atomic_write_bytes

FORMAT = "himari-wfo-window/1"


def run_fingerprint(config_dict: Mapping[str, Any], bars_by_symbol: Mapping[str, Any], pretrained: Any = None) -> str:
    """Digest of what a walk-forward's windows depend on: its config, the bars and the pre-trained weights."""
    from himari.trading.history import symbol_digest

    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps(config_dict, sort_keys=True, default=str).encode())
    for symbol in sorted(bars_by_symbol):
        h.update(symbol.encode())
        h.update(symbol_digest(bars_by_symbol[symbol]))
    if pretrained is not None:
        for name, policy in sorted(pretrained.items()) if isinstance(pretrained, Mapping) else [("", pretrained)]:
            h.update(name.encode())
            h.update(_policy_digest(policy))
    return h.hexdigest()


def _policy_digest(policy: Any) -> bytes:
    from himari.agents.registry import policy_tensors

    h = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(policy_tensors(policy).items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()


class _Encoder:
    """Python values -> a JSON tree with tagged non-JSON values; arrays collected for an ``.npz``."""

    def __init__(self, known: Mapping[str, type]) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.known = dict(known)  # the result dataclasses that may be saved (by name)

    def __call__(self, v: Any) -> Any:
        if v is None or isinstance(v, bool | str):
            return v
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"__float__": repr(v)}
        if isinstance(v, np.ndarray):
            if v.dtype == object:
                raise RunDirError("checkpoint: an array of Python objects cannot be saved without pickle")
            key = f"a{len(self.arrays)}"
            self.arrays[key] = v
            return {"__array__": key}
        if isinstance(v, np.generic):
            return {"__scalar__": v.dtype.str, "value": self(v.item())}
        if isinstance(v, tuple):
            return {"__tuple__": [self(x) for x in v]}
        if isinstance(v, list):
            return [self(x) for x in v]
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in v):
                return {k: self(x) for k, x in v.items()}
            return {"__items__": [[self(k), self(x)] for k, x in v.items()]}
        if dataclasses.is_dataclass(v) and type(v).__name__ in self.known and type(v) is self.known[type(v).__name__]:
            return {"__dataclass__": type(v).__name__,
                    "fields": {f.name: self(getattr(v, f.name)) for f in dataclasses.fields(v)}}
        raise RunDirError(f"checkpoint: cannot save a {type(v).__name__} value")


def _decode(v: Any, arrays: Mapping[str, np.ndarray], known: Mapping[str, type]) -> Any:
    if isinstance(v, list):
        return [_decode(x, arrays, known) for x in v]
    if not isinstance(v, dict):
        return v
    if "__float__" in v:
        return float(v["__float__"])
    if "__array__" in v:
        return arrays[v["__array__"]]
    if "__scalar__" in v:
        return np.dtype(v["__scalar__"]).type(_decode(v["value"], arrays, known))
    if "__tuple__" in v:
        return tuple(_decode(x, arrays, known) for x in v["__tuple__"])
    if "__items__" in v:
        return {_decode(k, arrays, known): _decode(x, arrays, known) for k, x in v["__items__"]}
    if "__dataclass__" in v:
        cls = known.get(v["__dataclass__"])
        if cls is None:
            raise RunDirError(f"checkpoint: unknown result type {v['__dataclass__']!r}")
        return cls(**{k: _decode(x, arrays, known) for k, x in v["fields"].items()})
    return {k: _decode(x, arrays, known) for k, x in v.items()}


def window_dir(root: Path, index: int) -> Path:
    return root / f"{index:03d}"


def save_window(root: str | Path, result: Any, carries: Mapping[str, Any] | None, fingerprint: str,
                known: Mapping[str, type]) -> Path:
    """Write window ``result`` (a :class:`~himari.backtest.wfo.WindowResult`) and the chains' carries after it;
    ``known``: the result dataclasses it holds, by name."""
    from himari.trading.bundle import save_bundle

    root = Path(root)
    final = window_dir(root, result.window.index)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    enc = _Encoder(known)
    state = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "window": result.window.index,
        "test": str(result.window.test),
        "selected": result.selected,
        "wall_s": result.wall_s,
        "trade_s": result.trade_s,
        "configurations": enc(result.configurations),
        "test_result": enc(result.test),
        "ablation": enc(result.ablation),
        "carries": enc(dict(carries or {})),
        "lineage": {name: list(s.get("lineage") or []) for name, s in result.policy_state.items()},
    }
    save_bundle(tmp / "bundle", result.bundle)
    for name, s in result.policy_state.items():
        s["policy"].save(tmp / "policies" / name)
    buf = _npz_bytes(enc.arrays)
    atomic_write_bytes(tmp / "arrays.npz", buf)
    atomic_write_bytes(tmp / "state.json", json.dumps(state).encode())  # dict order is kept
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_window(root: str | Path, window: Any, fingerprint: str,
                known: Mapping[str, type]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The fields of window ``window``'s result (those of :class:`~himari.backtest.wfo.WindowResult` but the window)
    and the chains' carries after it, or None when it was not checkpointed for a run with this ``fingerprint``
    (missing, incomplete, another config or other data)."""
    from himari.agents.registry import load_policy
    from himari.trading.bundle import load_bundle

    directory = window_dir(Path(root), window.index)
    path = directory / "state.json"
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable window checkpoint ({exc}); delete it or rerun with --fresh") from None
    if state.get("format") != FORMAT or state.get("fingerprint") != fingerprint or state.get("test") != str(window.test):
        return None
    with np.load(directory / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    policy_state = {name: {"policy": load_policy(directory / "policies" / name), "lineage": lineage}
                    for name, lineage in state["lineage"].items()}
    fields = {
        "selected": state["selected"],
        "configurations": _decode(state["configurations"], arrays, known),
        "test": _decode(state["test_result"], arrays, known),
        "bundle": load_bundle(directory / "bundle"),
        "wall_s": float(state["wall_s"]),
        "trade_s": float(state.get("trade_s", 0.0)),
        "policy_state": policy_state,
        "ablation": _decode(state["ablation"], arrays, known),
    }
    return fields, _decode(state["carries"], arrays, known)


def save_policies(root: str | Path, policies: Mapping[str, Any], fingerprint: str) -> None:
    """Pre-trained starting policies (configuration -> policy), so a resumed run does not pre-train again."""
    root = Path(root)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, policy in policies.items():
        policy.save(tmp / name)
    atomic_write_bytes(tmp / "state.json", json.dumps({"format": FORMAT, "fingerprint": fingerprint,
                                                       "names": list(policies)}).encode())
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)


def load_policies(root: str | Path, fingerprint: str) -> dict[str, Any] | None:
    from himari.agents.registry import load_policy

    root = Path(root)
    path = root / "state.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("format") != FORMAT or state.get("fingerprint") != fingerprint:
        return None
    return {name: load_policy(root / name) for name in state["names"]}
