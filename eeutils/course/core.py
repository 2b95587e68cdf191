"""The exercise machinery: a registry of checks that say right or wrong with a hint, never the answer.

A notebook's "your turn" cell ends with ``check("03.eas_by_hand", my_eas, readout=r)``. The check runs the
student's answer against the package's own tested functions and shows a `Feedback`: correct, wrong (with a
hint that points at the mistake), or not attempted yet (the answer is still the placeholder ``...``).
A wrong answer never raises, so a notebook with unanswered exercises still runs from top to bottom. A value
answer left at ``...`` and a function whose body still raises NotImplementedError count as not attempted.

Each notebook's checks live in one module of this package (``nb01.py``, ...), one ``@exercise`` entry per
check; the solutions ship in ``notebooks/solutions/`` and ``tests/test_course.py`` runs every check on its
solution (must pass) and on typical wrong answers (must fail with their hint).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

KINDS = ("implement", "predict", "explore")  # write code; say what will happen, then run; change one thing


class Hint(Exception):
    """Raised by a checker when an answer is wrong; its message is the hint shown to the student."""


@dataclass(frozen=True)
class Exercise:
    key: str  # "NN.short_name": the notebook number, then a name
    title: str
    kind: str
    checker: Callable[..., str | None]  # checker(answer, **context): a success note, or raises Hint

    @property
    def notebook(self) -> str:
        return self.key.split(".", 1)[0]


@dataclass(frozen=True)
class Feedback:
    key: str
    status: str  # "correct", "wrong" or "todo"
    message: str

    def __bool__(self) -> bool:
        return self.status == "correct"

    def _repr_markdown_(self) -> str:
        mark = {"correct": "✅ **correct**", "wrong": "❌ **not yet**", "todo": "✏️ **your turn**"}[self.status]
        return f"{mark} ({self.key}): {self.message}"

    def __repr__(self) -> str:
        return f"[{self.status}] {self.key}: {self.message}"


@dataclass(frozen=True)
class Case:
    """How the tests exercise one check: the context a notebook passes, a right answer, typical wrong ones.

    context() returns the keyword arguments of ``check(key, answer, **context)``; `wrong` holds pairs of
    (a typical wrong answer, a fragment its hint must contain). Solutions files (notebooks/solutions/)
    define ``CASES = {key: Case(...)}``.
    """

    context: Callable[[], dict]
    solution: Any
    wrong: tuple = ()


REGISTRY: dict[str, Exercise] = {}


def exercise(key: str, title: str, kind: str = "implement"):
    """Register `checker(answer, **context)` under `key` (decorator)."""
    if kind not in KINDS:
        raise ValueError(f"exercise kind must be one of {KINDS}, got {kind!r}")
    notebook, _, name = key.partition(".")
    if not (len(notebook) == 2 and notebook.isdigit() and name):
        raise ValueError(f"exercise key must look like 'NN.name', got {key!r}")

    def register(checker):
        if key in REGISTRY:
            raise ValueError(f"exercise {key!r} is registered twice")
        REGISTRY[key] = Exercise(key, title, kind, checker)
        return checker
    return register


def is_placeholder(answer: Any) -> bool:
    """True for a value answer the student has not filled in yet: ``...`` or None."""
    return answer is Ellipsis or answer is None


def check(key: str, answer: Any, **context) -> Feedback:
    """Check `answer` for exercise `key` against the package's reference; never raises for a wrong answer."""
    if key not in REGISTRY:
        raise KeyError(f"no exercise {key!r}; known: {sorted(REGISTRY)}")
    if is_placeholder(answer):
        return Feedback(key, "todo", f"{REGISTRY[key].title}: replace the `...` with your answer, then run this cell.")
    try:
        note = REGISTRY[key].checker(answer, **context)
    except NotImplementedError:  # a skeleton function: `raise NotImplementedError("your code here")`
        return Feedback(key, "todo", f"{REGISTRY[key].title}: write the function's body, then run this cell.")
    except Hint as hint:
        return Feedback(key, "wrong", str(hint))
    except Exception as err:  # the student's code raised: say where, not how to fix it
        return Feedback(key, "wrong", f"your answer raised {type(err).__name__}: {err}")
    return Feedback(key, "correct", note or REGISTRY[key].title)


def exercises(notebook: str | None = None) -> list[Exercise]:
    """The registered exercises, in key order (one notebook's with `notebook="03"`)."""
    return [e for k, e in sorted(REGISTRY.items()) if notebook is None or e.notebook == notebook]


# ---- helpers for checkers: compare with a hint, never print the expected value -------------------------------
def expect_close(got, want, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Hint unless `got` has `want`'s shape and values (the hint says how far off, not what is right)."""
    got_arr = np.asarray(got, dtype=float)
    want_arr = np.asarray(want, dtype=float)
    if got_arr.shape != want_arr.shape:
        raise Hint(f"{what} has shape {got_arr.shape}; expected shape {want_arr.shape}.")
    if not np.all(np.isfinite(got_arr) == np.isfinite(want_arr)):
        raise Hint(f"{what} has NaN or inf where it should not (or finite values where it should).")
    if not np.allclose(got_arr, want_arr, rtol=rtol, atol=atol, equal_nan=True):
        worst = float(np.nanmax(np.abs(got_arr - want_arr)))
        raise Hint(f"{what} is off by up to {worst:.3g}.")


def as_number(answer, hint: str) -> float:
    """`answer` as a float, or a Hint saying what number is asked for (a list, a string, a None...)."""
    try:
        return float(answer)
    except (TypeError, ValueError):
        raise Hint(hint) from None


def expect_choice(got, allowed, what: str) -> None:
    """Hint unless `got` is one of `allowed` (for predict-then-run answers given as a word)."""
    if got not in allowed:
        raise Hint(f"{what} should be one of {list(allowed)}, got {got!r}.")


def exercise_table() -> str:
    """The exercises as a markdown table (key, notebook, kind, title): docs/COURSE.md embeds it."""
    rows = ["| key | kind | exercise |", "|---|---|---|"]
    rows += [f"| `{e.key}` | {e.kind} | {e.title} |" for e in exercises()]
    return "\n".join(rows)
