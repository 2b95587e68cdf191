"""Solutions to notebook 5's exercises (architectures). Try them before reading on."""
from __future__ import annotations

import numpy as np

from eeutils.course import Case

# EAS / ceiling per model (illustrative numbers of the size a smoke run of the zoo gives)
SCORES = {"dense-mid": 0.827, "dense-mid-s1": 0.799, "moe-mid": 0.863, "moe-mid-s1": 0.856}
A, B = ["dense-mid", "dense-mid-s1"], ["moe-mid", "moe-mid-s1"]


def verdict(effect, lo, hi, floor):
    """agree: interval above 0 and effect > floor; disagree: interval below 0 and -effect > floor; else
    inconclusive (comparisons with NaN are False, so a NaN floor or interval ends there too)."""
    if lo > 0 and effect > floor:
        return "agree"
    if hi < 0 and -effect > floor:
        return "disagree"
    return "inconclusive"


def noise_floor(scores, a, b):
    """The larger of the two recipes' seed-to-seed |differences|."""
    return max(abs(scores[side[0]] - scores[side[1]]) for side in (a, b))


def _interval_only(effect, lo, hi, floor):
    """Wrong: the interval decides alone."""
    return "agree" if lo > 0 else "disagree" if hi < 0 else "inconclusive"


def _size_only(effect, lo, hi, floor):
    """Wrong: the effect's size decides alone."""
    return "agree" if effect > floor else "disagree" if -effect > floor else "inconclusive"


def _disagree_sign_slip(effect, lo, hi, floor):
    """Wrong: the disagree branch compares the signed effect with the floor."""
    if lo > 0 and effect > floor:
        return "agree"
    return "disagree" if hi < 0 and effect > floor else "inconclusive"


def _booleans(effect, lo, hi, floor):
    """Wrong: answers whether the paper is confirmed, not with one of the three words."""
    return bool(lo > 0 and effect > floor)


CASES = {
    "05.verdict_rule": Case(
        context=lambda: {},
        solution=verdict,
        wrong=((_interval_only, "not enough"), (_size_only, "contains 0"), (_disagree_sign_slip, "sign"),
               (_booleans, "one of the words"))),
    "05.noise_floor": Case(
        context=lambda: {"scores": SCORES, "a": A, "b": B},
        solution=noise_floor(SCORES, A, B),
        wrong=((SCORES["dense-mid-s1"] - SCORES["dense-mid"], "absolute"),
               (abs(SCORES["moe-mid"] - SCORES["moe-mid-s1"]), "one side"),
               (np.mean([SCORES[m] for m in B]) - np.mean([SCORES[m] for m in A]), "that is the effect"),
               (abs(SCORES["moe-mid"] - SCORES["dense-mid"]), "two seeds of one recipe"))),
    "05.exceeds_seed_spread": Case(
        context=lambda: {"scores": SCORES, "a": A, "b": B},
        solution="yes",  # for these scores; the notebook's own scores decide its answer
        wrong=(("no", "say otherwise"), (True, "should be one of"))),
}
