"""Parameter checks shared by the kit: numbers are numbers, never strings or bools coerced silently.

`check_real` accepts Python and NumPy reals (ints and floats, not bools) that are finite and in range;
`check_integer` accepts Python and NumPy integers, and floats only when integral (2.0, never 2.5).
A value of the wrong type raises TypeError, a number out of range ValueError; both name the parameter.
`check_count` is the entry points' count check (repeats, n_docs, max_new_tokens, ...): integers only, and a
ValueError for any bad value. Every entry point checks its numbers here (the benchmark wraps them in its own
error class).
"""
from __future__ import annotations

import math
import numbers


def is_real(x) -> bool:
    """A real number that is not a bool (Python or NumPy int/float)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and type(x).__name__ != "bool_"


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
