"""The exercises: every check passes its solution, fails typical wrong answers with their hint, and is used."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from eeutils.course import REGISTRY, Case, Feedback, Hint, check, exercise, exercises

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "notebooks" / "solutions"
NOTEBOOKS = {p.name[:2]: p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
# at least this many exercises per notebook (the course's promise; the rest have none yet)
MIN_EXERCISES = {**{f"{i:02d}": 2 for i in range(1, 9)}, "11": 1, "12": 1, "13": 1}


def _load_cases() -> dict[str, Case]:
    cases = {}
    for path in sorted(SOLUTIONS.glob("nb[0-9][0-9].py")):
        spec = importlib.util.spec_from_file_location(f"solutions_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for key, case in module.CASES.items():
            assert key not in cases, f"{key} has two solution cases"
            assert key.startswith(path.stem[2:] + "."), f"{key} is solved in {path.name}"
            cases[key] = case
    return cases


CASES = _load_cases()
KEYS = sorted(REGISTRY)


def test_every_exercise_has_a_solution_case():
    assert set(CASES) == set(REGISTRY), (sorted(set(REGISTRY) - set(CASES)), sorted(set(CASES) - set(REGISTRY)))


@pytest.mark.parametrize("notebook", sorted(MIN_EXERCISES))
def test_each_notebook_has_its_exercises(notebook):
    found = [e.key for e in exercises(notebook)]
    assert len(found) >= MIN_EXERCISES[notebook], (notebook, found)


@pytest.mark.parametrize("key", KEYS)
def test_the_notebook_runs_the_check(key):
    source = NOTEBOOKS[key[:2]].read_text()
    assert re.search(r'check\(\\?"' + re.escape(key) + r'\\?"', source), f"{key} is never checked in its notebook"


@pytest.mark.parametrize("key", KEYS)
def test_solution_passes(key):
    case = CASES[key]
    feedback = check(key, case.solution, **case.context())
    assert feedback.status == "correct", feedback


@pytest.mark.parametrize("key", KEYS)
def test_typical_wrong_answers_get_their_hint(key):
    case = CASES[key]
    assert case.wrong, f"{key}: give at least one typical wrong answer"
    for answer, fragment in case.wrong:
        feedback = check(key, answer, **case.context())
        assert feedback.status == "wrong", (answer, feedback)
        assert fragment.lower() in feedback.message.lower(), (fragment, feedback.message)


@pytest.mark.parametrize("key", KEYS)
def test_placeholder_is_not_attempted(key):
    assert check(key, ..., **CASES[key].context()).status == "todo"


def test_the_machinery():
    @exercise("99.double", "double a number")
    def _double(answer, x):
        if answer(x) != 2 * x:
            raise Hint("multiply, do not add")
        return "doubled"

    def skeleton(x):
        raise NotImplementedError("your code here")

    try:
        assert check("99.double", lambda x: 2 * x, x=3) == Feedback("99.double", "correct", "doubled")
        wrong = check("99.double", lambda x: x + 3, x=4)
        assert wrong.status == "wrong" and "multiply" in wrong.message and "8" not in wrong.message
        assert check("99.double", skeleton, x=1).status == "todo"
        assert "ZeroDivisionError" in check("99.double", lambda x: 1 / 0, x=1).message
        assert "not yet" in wrong._repr_markdown_()
        with pytest.raises(ValueError, match="twice"):
            exercise("99.double", "again")(_double)
        with pytest.raises(ValueError, match="NN.name"):
            exercise("3.bad", "bad key")
        with pytest.raises(KeyError, match="no exercise"):
            check("99.nope", 1)
    finally:
        REGISTRY.pop("99.double", None)


def test_the_syllabus_lists_every_exercise():
    from eeutils.course.__main__ import COURSE_MD, synced
    text = COURSE_MD.read_text()
    assert synced(text) == text, "docs/COURSE.md's exercise table is out of date: python -m eeutils.course --sync"
    assert all(f"`{key}`" in text for key in REGISTRY)
