"""Parameter checks shared by the kit: numbers are numbers, never strings or bools coerced silently.

`check_real` accepts Python and NumPy reals (ints and floats, not bools) that are finite and in range;
`check_integer` accepts Python and NumPy integers, and floats only when integral (2.0, never 2.5).
A value of the wrong type raises TypeError, a number out of range ValueError; both name the parameter.
The same holds for flags (`check_bool`: True or False, never "no"), names from a table (`check_choice`,
`check_names`), paths (`check_path`) and devices (`check_device`: one this machine has, else the list of those it has).
`check_count` is the entry points' count check (repeats, n_docs, max_new_tokens, ...): integers only, and a
ValueError for any bad value. Every entry point checks its numbers here (the benchmark wraps them in its own
error class).
"""
from __future__ import annotations

import math
import os
import numbers


def is_real(x) -> bool:
    """A real number that is not a bool (Python or NumPy int/float)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and type(x).__name__ not in ("bool_", "bool")


def _range(lo, hi, lo_open, hi_open) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" {'<' if hi_open else '<='} {hi}"
    return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def check_real(name: str, value, lo=None, hi=None, *, lo_open: bool = False, hi_open: bool = False,
               hint: str = "") -> float:
    """float(value) if it is a finite real number in the range; else TypeError / ValueError naming `name`."""
    want = f"{name} must be a finite real number{_range(lo, hi, lo_open, hi_open)}{hint}"
    if not is_real(value):
        raise TypeError(f"{want}, got {value!r} (a {type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) \
            or (hi is not None and (v >= hi if hi_open else v > hi)):
        raise ValueError(f"{want}, got {value!r}")
    return v


def check_integer(name: str, value, minimum=None, hint: str = "", integral_floats: bool = True) -> int:
    """int(value) if it is an integer (or, with integral_floats, an integral float) >= minimum; else
    TypeError / ValueError naming `name`."""
    want = f"{name} must be an integer{'' if minimum is None else f' >= {minimum}'}{hint}"
    if not is_real(value) or (not integral_floats and not isinstance(value, numbers.Integral)):
        raise TypeError(f"{want}, got {value!r} (a {type(value).__name__})")
    if not math.isfinite(float(value)) or float(value) != int(value):
        raise ValueError(f"{want}, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{want}, got {value!r}")
    return v


def check_count(name: str, value, minimum: int = 1, maximum: int | None = None, *, allow_none: bool = False,
                hint: str = "") -> int | None:
    """int(value) for a count or index: a Python or NumPy integer (never a bool, a float or a str) in
    minimum..maximum (maximum None: no upper bound); None passes with allow_none. Anything else is a ValueError
    naming `name`, whatever is wrong with it: the entry points' counts (repeats, n_docs, max_new_tokens, ...)
    have always been refused with a ValueError."""
    if value is None and allow_none:
        return None
    if not (is_real(value) and isinstance(value, numbers.Integral)) or value < minimum \
            or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be an integer {bound}{hint}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def check_bool(name: str, value) -> bool:
    """value if it is a bool (Python or NumPy); else TypeError naming `name` (a string "no" is not False)."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} (a {type(value).__name__})")


def check_bools(**flags) -> None:
    """`check_bool` on each keyword: check_bools(stop_at_eos=stop_at_eos, progress=progress)."""
    for name, value in flags.items():
        check_bool(name, value)


def check_choice(name: str, value, choices, hint: str = ""):
    """value if it is one of `choices` (compared as is: no case folding, no stripping); else ValueError naming
    `name` and listing the choices (TypeError for an unhashable value)."""
    try:
        ok = value in choices
    except TypeError:
        ok = None
    if ok:
        return value
    msg = f"{name} must be one of {', '.join(repr(c) for c in choices)}{hint}, got {value!r}"
    raise (TypeError if ok is None else ValueError)(msg)


def check_names(name: str, values, choices, empty: bool = False) -> tuple:
    """A tuple of names, each one of `choices`: a list/tuple (or one str, taken as a list of one) of them, not
    empty unless `empty`; else TypeError / ValueError naming `name`."""
    if isinstance(values, str):
        values = (values,)
    if not isinstance(values, (list, tuple)) or not (values or empty):
        raise (ValueError if isinstance(values, (list, tuple)) else TypeError)(
            f"{name} must be a non-empty list of names from {', '.join(repr(c) for c in choices)}, got {values!r}")
    return tuple(check_choice(f"{name}[{i}]", v, choices) for i, v in enumerate(values))


def check_path(name: str, value) -> "os.PathLike":
    """pathlib.Path(value) for a non-empty str or os.PathLike (no bytes, no whitespace-only name); else
    TypeError / ValueError naming `name`."""
    from pathlib import Path

    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise TypeError(f"{name} must be a path (a str or pathlib.Path), got {value!r} (a {type(value).__name__})")
    path = Path(value)
    if not str(value).strip() or not path.name.strip():
        raise ValueError(f"{name} must name a file or folder, got {str(value)!r}")
    return path


def check_device(name: str, device) -> None:
    """None, or a torch device this machine has (a str such as "cpu", "cuda:0", or a torch.device); else
    TypeError / ValueError naming `name`, saying which devices are available."""
    if device is None:
        return
    import torch

    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a device name such as 'cpu' or 'cuda', got {device!r} "
                        f"(a {type(device).__name__}); available here: {', '.join(available_devices())}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name}={device!r} is not a torch device; available here: "
                         f"{', '.join(available_devices())}") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            why = "CUDA is not available on this machine" if n == 0 else f"this machine has {n} CUDA device(s)"
            raise ValueError(f"{name}={device!r}: {why}; available here: {', '.join(available_devices())}")
        return
    if not any(getattr(m, "is_available", lambda: False)()
               for m in (getattr(torch.backends, dev.type, None), getattr(torch, dev.type, None)) if m is not None):
        raise ValueError(f"{name}={device!r}: no {dev.type} device on this machine; available here: "
                         f"{', '.join(available_devices())}")


def available_devices() -> list:
    """The torch devices this machine has: "cpu", then "cuda:0".. and "mps" where present."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_int_array(name: str, values, lo=None, hi=None):
    """values as a NumPy integer array (an integer array, or a list of Python/NumPy ints; no floats, bools or
    strings), each in [lo, hi] where given; else TypeError / ValueError naming `name`."""
    import numpy as np

    arr = np.asarray(values) if isinstance(values, (list, tuple, np.ndarray)) or hasattr(values, "__array__") \
        else None
    if arr is None or arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        got = f"an array of {arr.dtype}" if arr is not None else f"{values!r} (a {type(values).__name__})"
        raise TypeError(f"{name} must be an array or list of integers, got {got}")
    if arr.size and ((lo is not None and arr.min() < lo) or (hi is not None and arr.max() > hi)):
        raise ValueError(f"{name} must lie in {lo}..{hi}, got values {arr.min()}..{arr.max()}")
    return arr.astype(np.int64, copy=False)


def check_frame(name: str, frame, columns=(), source: str = ""):
    """frame if it is a pandas DataFrame with every one of `columns`; else TypeError / ValueError naming `name`,
    the missing columns and where such a frame comes from (`source`, e.g. "eeutils.metrics.sensitivity")."""
    import pandas as pd

    where = f" (the output of {source})" if source else ""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame{where}, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {missing}; expected a frame{where} with {list(columns)}")
    return frame
