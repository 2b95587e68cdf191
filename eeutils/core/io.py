"""Atomic file writes: write to a temporary file in the target's folder, then `os.replace` it into place.

A reader sees either the old file or the whole new one, never a partial write, and the temporary
file never survives an exception (a killed process can leave one behind: `clean_stale_tmp`).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

STALE_TMP_SECONDS = 600  # a temporary file older than this belongs to a killed process


def atomic_write(path, write_fn: Callable[[Path], None]) -> Path:
    """write_fn(tmp) then os.replace(tmp, path); the temporary file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    return path


def write_text_atomic(text: str, path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(obj, path, *, default=str, indent: int = 2) -> Path:
    """JSON (indented, trailing newline) written atomically."""
    text = json.dumps(obj, indent=indent, default=default)
    return write_text_atomic(text + "\n", path)


def _isnull(v) -> bool:
    import numpy as np
    import pandas as pd

    try:
        return v is None or (not isinstance(v, (str, dict, list, tuple, np.ndarray)) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def parquet_safe(frame):
    """Object columns of mixed types become strings (dicts/lists as JSON) so parquet can store them."""
    import numpy as np
    import pandas as pd

    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        vals = [v for v in frame[col] if not _isnull(v)]
        types = {type(v) for v in vals}
        if not vals or types <= {str} or types <= {bool, np.bool_}:
            continue
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in vals):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
            continue
        frame[col] = [None if _isnull(v) else (v if isinstance(v, str) else json.dumps(v, default=str)
                                               if isinstance(v, (dict, list, tuple)) else str(v))
                      for v in frame[col]]
    return frame


def write_parquet_atomic(frame, path) -> Path:
    """A DataFrame as parquet (mixed object columns made storable, see `parquet_safe`), atomically."""
    safe = parquet_safe(frame)
    return atomic_write(path, lambda tmp: safe.to_parquet(tmp, index=False))


def write_csv_atomic(frame, path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def clean_stale_tmp(folders: Iterable[Path], max_age: float = STALE_TMP_SECONDS, before: float | None = None) -> list:
    """Remove temporary files left by killed writers: older than max_age seconds, or (with `before`, a
    time.time() stamp) last written before it, e.g. before a run that has now finished. Returns those removed."""
    now, removed = time.time(), []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and (p.name.endswith(".tmp") or p.name.endswith(".tmp.npz")):
                try:
                    mtime = p.stat().st_mtime
                    if now - mtime > max_age or (before is not None and mtime < before):
                        p.unlink()
                        removed.append(p)
                except OSError:
                    pass
    return removed
