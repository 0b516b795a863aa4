"""Reading a saved model without leaving its directory: confined paths, checked JSON and safetensors headers.

A bundle names files by relative paths (symbols, ensemble member names). Every such path is resolved (symlinks
followed) and must stay inside the directory the loader was given; absolute paths, ``..`` and symlinks that point
out are refused with :class:`~himari.errors.RunDirError` naming the field. Weights files are checked from their
safetensors header (8-byte length, JSON table of dtype/shape/offsets) before any tensor is allocated, so a
crafted config or header cannot make the loader allocate more than the file holds.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

from himari.errors import RunDirError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # one path component, no separators, not '..'
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
MAX_TREE_ENTRIES = 100_000
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def check_name(name: object, field: str, where: str | Path) -> str:
    """``name`` as one safe path component (letters, digits, ``._:-``; not ``.``/``..``, no ``/``)."""
    if not isinstance(name, str) or not SAFE_NAME.match(name) or set(name) == {"."}:
        shown = repr(name)[:60]
        raise RunDirError(f"{where}: field {field!r}: {shown} is not a plain name (letters, digits, ._:- only)")
    return name


def inside(root: Path, path: Path, field: str) -> Path:
    """``path`` resolved; RunDirError naming ``field`` unless it lies inside ``root`` (resolved)."""
    base = root.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        raise RunDirError(f"{path}: field {field!r} leads outside {base} (to {resolved}); refused")
    return resolved


def check_tree(root: Path, what: str) -> None:
    """Refuse a directory holding a symlink (at any depth) whose target lies outside ``root``; never follows links."""
    base = root.resolve()
    seen = 0
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for name in dirnames + filenames:
            seen += 1
            if seen > MAX_TREE_ENTRIES:
                raise RunDirError(f"{base}: {what} holds more than {MAX_TREE_ENTRIES} files; refused")
            entry = Path(dirpath) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(base):
                raise RunDirError(f"{entry}: symlink out of the {what} (to {entry.resolve()}); refused")


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``: RunDirError (one line, naming the file) if missing, too large, invalid."""
    try:
        size = path.stat().st_size
    except OSError:
        raise RunDirError(f"{path}: {what} is missing") from None
    if size > MAX_JSON_BYTES:
        raise RunDirError(f"{path}: {what} is {size} bytes (limit {MAX_JSON_BYTES}); refused")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RunDirError(f"{path}: {what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: {what} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise RunDirError(f"{path}: {what} nests too deeply") from None
    if not isinstance(payload, dict):
        raise RunDirError(f"{path}: {what} must hold a JSON object, not {type(payload).__name__}")
    return payload


def safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from a safetensors file's header, after checking that every tensor's byte range
    lies inside the file and matches its dtype and shape (reads the header only, allocates no tensor)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise RunDirError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise RunDirError(f"{path}: safetensors header length {n} exceeds the file ({size} bytes)")
            raw = handle.read(n)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot read weights ({exc.strerror})") from None
    try:
        table = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise RunDirError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(table, dict):
        raise RunDirError(f"{path}: safetensors header is not a JSON object")
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    data_size = size - 8 - n
    for name, entry in table.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            ok = all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(begin, int) and isinstance(end, int)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok or dtype not in _DTYPE_BYTES:
            raise RunDirError(f"{path}: tensor {str(name)[:60]!r}: malformed header entry")
        expected = math.prod(shape) * _DTYPE_BYTES[dtype]
        if not 0 <= begin <= end <= data_size or end - begin != expected:
            raise RunDirError(
                f"{path}: tensor {str(name)[:60]!r}: shape {list(shape)} ({dtype}) needs {expected} bytes, "
                f"the file holds {max(0, min(end, data_size) - begin)} for it"
            )
        out[str(name)] = (str(dtype), shape)
    return out
