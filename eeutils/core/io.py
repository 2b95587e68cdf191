"""Atomic file writes: write to a temporary file in the target's folder, then `os.replace` it into place.

A reader sees either the old file or the whole new one, never a partial write, and the temporary
file never survives an exception (a killed process can leave one behind: `clean_stale_tmp`).
`file_lock` keeps two processes out of one folder (a lock file holding the holder's pid and host).
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

try:
    import fcntl
except ImportError:  # Windows: `file_lock` falls back to an exclusive O_EXCL file
    fcntl = None

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


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names the lock file and its holder."""


def _holder_text(path: Path) -> str:
    try:
        h = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {h['pid']} on {h['host']}, since {h['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _holder() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _stale(path: Path) -> bool:
    """An O_EXCL lock file whose holder (on this host) no longer runs."""
    try:
        h = json.loads(path.read_text(encoding="utf-8"))
        return h["host"] == socket.gethostname() and not _alive(int(h["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextmanager
def _excl_lock(path: Path):
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            if not _stale(path):
                raise LockHeld(f"{path} is held by {_holder_text(path)}") from None
            path.unlink(missing_ok=True)  # its holder died without removing it
    else:
        raise LockHeld(f"{path} is held by {_holder_text(path)}")
    try:
        os.write(fd, _holder().encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def file_lock(path, *, shared: bool = False):
    """Hold the lock file `path` for the block, or raise LockHeld naming its holder.

    Exclusive, or shared with other shared holders (`shared=True`). Uses flock, which the operating
    system releases when its holder exits or is killed, so a lock left by a dead process never blocks;
    the file records the holder's pid, host and start for the message. Without flock (Windows) the lock is
    an O_EXCL file, always exclusive, taken over when its holder's pid no longer runs on this host.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        with _excl_lock(path):
            yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"{path} is held by {_holder_text(path)}") from None
        os.ftruncate(fd, 0)
        os.write(fd, _holder().encode())
        yield
    finally:
        os.close(fd)
