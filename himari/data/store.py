"""Writing canonical OHLCV frames, and the local data store.

``write_frame`` writes a canonical frame (UTC ``timestamp`` index, OHLCV columns) as Parquet or CSV(.gz) atomically.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd

from himari.utils.io import atomic_write_bytes


def frame_to_csv_text(frame: pd.DataFrame) -> str:
    out = frame.copy()
    out.index = out.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.index.name = "timestamp"
    return out.to_csv(float_format=None, lineterminator="\n")


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a canonical OHLCV frame to ``.parquet``, ``.csv`` or ``.csv.gz`` atomically."""
    target = Path(path)
    name = target.name.lower()
    if name.endswith((".parquet", ".pq")):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=True)
        return atomic_write_bytes(target, buffer.getvalue())
    text = frame_to_csv_text(frame)
    if name.endswith(".gz"):
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
            handle.write(text.encode())
        return atomic_write_bytes(target, buffer.getvalue())
    return atomic_write_bytes(target, text.encode())
