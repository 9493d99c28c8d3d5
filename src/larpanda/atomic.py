"""Atomic file writes: write to a temporary file in the same directory, fsync, then ``os.replace``.

A process killed at any point leaves either the previous file or the complete new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Use for writers that need a file name (h5py, torch.save, safetensors)::

        with atomic_path("out.h5") as tmp:
            with h5py.File(tmp, "w") as f: ...
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON (`json_text`): NaN and ±Inf become ``null``."""
    atomic_write_text(path, json_text(obj, indent=indent) + "\n")


def json_text(obj, indent: int | None = None) -> str:
    """Strict JSON text (RFC 8259) of ``obj``: non-finite floats (NaN, ±Inf, also numpy ones and inside
    numpy arrays) become ``null``; numpy scalars/arrays become numbers/lists, paths strings. Python's
    ``json.dumps`` would write the non-standard tokens ``NaN``/``Infinity``, which strict parsers (browsers'
    ``JSON.parse``, jq, most languages) reject."""
    return json.dumps(_finite(obj), indent=indent, sort_keys=False, default=_json_default, allow_nan=False)


def _finite(o):
    """A copy of ``o`` with every non-finite float replaced by None (dicts, lists, tuples, numpy)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    mod = type(o).__module__
    if mod == "numpy" and hasattr(o, "tolist"):  # numpy scalar or array
        return _finite(o.tolist())
    return o


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist") and type(o).__module__ == "numpy":
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
