"""Run directories: everything needed to reproduce a result and to serve a model.

Layout (written by the commands that create runs)::

    RUN/
      run.json          # command, resolved config, seed, config hash, data files with sha256, versions
      metrics.json      # results (written last, atomically)
      checkpoints/      # training checkpoints; walk-forward windows in checkpoints/windows (safetensors + json + npz), atomic
      bundle/           # the trained model bundle that backtest/serve/paper load
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

from himari import __version__
from himari.config import config_hash
from himari.errors import RunDirError
from himari.utils.io import atomic_write_json, read_json, sha256_file

NUMERIC_PACKAGES = ("numpy", "pandas", "torch", "scipy", "numba", "arch", "scikit-learn", "pydantic")


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages whose arithmetic the numbers depend on (installed
    distributions, read without importing them)."""
    from importlib import metadata

    out = {"himari": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in NUMERIC_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover
            pass
    return out


def installed_packages() -> dict[str, str]:
    """Every installed distribution and its version: the environment a run's numbers came from (``run.json``)."""
    from importlib import metadata

    return dict(sorted((d.metadata["Name"], d.version) for d in metadata.distributions() if d.metadata["Name"]))


def data_record(paths: dict[str, str | Path]) -> dict[str, dict[str, str]]:
    """``{name: {"path": ..., "sha256": ...}}`` for the data files a run read."""
    return {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in paths.items()}


def create_run_dir(
    out: str | Path,
    command: str,
    config: dict[str, Any],
    seed: int,
    data_files: dict[str, str | Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Create (or reuse) ``out`` and write ``run.json``. Returns the path."""
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": command,
        "config": config,
        "config_hash": config_hash(config),
        "seed": seed,
        "data": data_record(data_files or {}),
        "versions": versions(),
        "packages": installed_packages(),
    }
    if extra:
        meta.update(extra)
    atomic_write_json(run / "run.json", meta)
    return run


def load_run_meta(run: str | Path) -> dict[str, Any]:
    path = Path(run) / "run.json"
    if not path.exists():
        raise RunDirError(f"{run}: not a run directory (no run.json)")
    return read_json(path)  # type: ignore[no-any-return]
