"""Finding a fitted :class:`~himari.tactical.pipeline.TacticalPipeline` on disk, wherever a command saved it."""

from __future__ import annotations

from pathlib import Path

from himari.errors import RunDirError
from himari.tactical.pipeline import PIPELINE_FILE, TacticalPipeline


def find_tactical_pipeline(path: str | Path, symbol: str) -> TacticalPipeline:
    """Load the pipeline for ``symbol`` from a ``himari regime fit`` directory (or its ``tactical_pipeline.json``),
    a run directory holding ``bundle/``, or a bundle directory (``tactical/<SYMBOL>/``). A bundle with a single
    symbol's pipeline serves any symbol name."""
    root = Path(path)
    if root.is_file() or (root / PIPELINE_FILE).exists():
        return TacticalPipeline.load(root)
    for tactical in (root / "bundle" / "tactical", root / "tactical"):
        if not tactical.is_dir():
            continue
        candidates = sorted(p for p in tactical.iterdir() if p.is_dir())
        for candidate in candidates:
            if candidate.name == symbol.replace("/", ""):
                return TacticalPipeline.load(candidate)
        if len(candidates) == 1:
            return TacticalPipeline.load(candidates[0])
        raise RunDirError(f"{tactical}: no fitted tactical pipeline for {symbol} (have: "
                          f"{', '.join(p.name for p in candidates) or 'none'})")
    raise RunDirError(f"{root}: no fitted tactical pipeline here (expected {PIPELINE_FILE}, bundle/tactical/ or "
                      "tactical/)")
