"""Exercises with checks for the notebook series: ``from eeutils.course import check``.

`check(key, answer, **context)` says whether an answer is right, with a hint when it is not (never the
answer). `exercises()` lists them all. Each notebook's checks are one module here (``nb01.py`` for
notebook 1, ...), imported below so that their entries register; solutions: notebooks/solutions/.
"""
import importlib
import pkgutil

from .core import REGISTRY, Case, Exercise, Feedback, Hint, check, exercise, exercise_table, exercises

NOTEBOOK_MODULES = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name[:2] == "nb" and m.name[2:].isdigit())
for _name in NOTEBOOK_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["REGISTRY", "Case", "Exercise", "Feedback", "Hint", "check", "exercise", "exercise_table", "exercises", "NOTEBOOK_MODULES"]
