"""Reading a saved readout (.npz) back, checked: a damaged or tampered file is refused, naming the file.

`read_arrays(path)` opens the archive (no pickles) and `check_arrays` verifies what `Readout.save` wrote:
every array present, metadata a JSON object, lengths and layer counts that agree, integer ids where ids
belong, and values inside each statistic's range (`eeutils.lens.statistics` bounds; token ids inside the
vocabulary recorded in the metadata).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .statistics import REGISTRY

TOKEN_ARRAYS = ("doc", "position", "token", "target", "answer")
REQUIRED = ("topk", "meta", "stat__top1") + TOKEN_ARRAYS
TOLERANCE = 1e-3  # float rounding of bounded statistics (a cosine of 1.0000001 is fine, 1.5 is not)


class ReadoutFileError(ValueError):
    """A readout file is damaged, tampered with or not a readout; the message names the file."""


def file_error(path: Path, problem: str) -> ReadoutFileError:
    return ReadoutFileError(f"{path} is not a valid readout file: {problem}. Recompute the readout (a damaged "
                            "file cannot be repaired).")


def read_arrays(path) -> dict:
    """Every array of a readout archive, read (and checksummed) now; the file's name in any error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no readout file at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise file_error(path, "it holds a single array, not the archive Readout.save writes")
            return {k: z[k] for k in z.files}
    except ReadoutFileError:
        raise
    except PermissionError:
        raise
    except Exception as err:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, IsADirectoryError, pickle refusals
        raise file_error(path, f"it cannot be read as an .npz archive ({type(err).__name__}: {err})") from err


def read_meta(arrays: dict, path: Path) -> dict:
    raw = arrays["meta"]
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise file_error(path, f"its metadata is not JSON ({err})") from err
    if not isinstance(meta, dict):
        raise file_error(path, f"its metadata is a JSON {type(meta).__name__}, not an object")
    return meta


def _check_range(name, arr, lo, hi, vocab, path):
    if hi == "vocab":
        hi = None if vocab is None else vocab - 1
    vals = arr[~np.isnan(arr)] if arr.dtype.kind == "f" else arr
    if not vals.size:
        return
    tol = TOLERANCE if arr.dtype.kind == "f" else 0
    if lo is not None and vals.min() < lo - tol:
        raise file_error(path, f"{name} has a value {vals.min()!r} below its minimum {lo}")
    if hi is not None and vals.max() > hi + tol:
        raise file_error(path, f"{name} has a value {vals.max()!r} above its maximum {hi}")


def check_arrays(arrays: dict, path) -> dict:
    """Raise ReadoutFileError unless the arrays form a consistent readout; returns the metadata."""
    path = Path(path)
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise file_error(path, f"it lacks the array(s) {missing}")
    meta = read_meta(arrays, path)
    n = arrays["doc"].shape[0] if arrays["doc"].ndim == 1 else -1
    for name in TOKEN_ARRAYS:
        a = arrays[name]
        if a.ndim != 1 or a.shape[0] != n:
            raise file_error(path, f"{name} has shape {a.shape}, expected [{n}] like doc")
        kind = "b" if name == "answer" else "iu"
        if a.dtype.kind not in kind:
            raise file_error(path, f"{name} has dtype {a.dtype}, expected {'bool' if name == 'answer' else 'integers'}")
    n_layers = arrays["stat__top1"].shape[1] if arrays["stat__top1"].ndim == 2 else -1
    vocab = meta.get("vocab") if isinstance(meta.get("vocab"), int) else None
    for key, a in arrays.items():
        if not key.startswith("stat__"):
            continue
        name = key[len("stat__"):]
        if a.ndim != 2 or a.shape != (n, n_layers):
            raise file_error(path, f"statistic {name!r} has shape {a.shape}, expected [{n}, {n_layers}] (tokens x layers)")
        spec = REGISTRY.get(name)
        if spec is None:
            continue
        if spec.column == "int" and a.dtype.kind not in "iu" or spec.column == "float" and a.dtype.kind != "f":
            raise file_error(path, f"statistic {name!r} has dtype {a.dtype}, expected "
                              f"{'integers' if spec.column == 'int' else 'floats'}")
        _check_range(name, a, *spec.bounds, vocab, path)
    topk = arrays["topk"]
    if topk.ndim != 3 or topk.shape[:2] != (n, n_layers) or topk.shape[2] < 1 or topk.dtype.kind not in "iu":
        raise file_error(path, f"topk has shape {topk.shape} and dtype {topk.dtype}, expected integers of shape "
                          f"[{n}, {n_layers}, k]")
    if isinstance(meta.get("k"), int) and meta["k"] != topk.shape[2]:
        raise file_error(path, f"topk holds {topk.shape[2]} ids per layer but the metadata says k={meta['k']}")
    if isinstance(meta.get("n_layers"), int) and meta["n_layers"] != n_layers - 1:
        raise file_error(path, f"the statistics have {n_layers} layers but the metadata says n_layers={meta['n_layers']}")
    for name, lo in (("topk", 0), ("token", 0), ("target", -1), ("doc", 0), ("position", 0)):
        _check_range(name, arrays[name], lo, "vocab" if name in ("topk", "token", "target") else None, vocab, path)
    return meta
