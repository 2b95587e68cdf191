"""Checks for notebook 5 (architectures): the verdict rule, the seed-noise floor, effect against seed spread."""
from __future__ import annotations

import itertools

import numpy as np

from ..analysis.verdicts import VERDICTS, side_spread, verdict
from .core import Hint, as_number, exercise, expect_choice, expect_close

NAN = float("nan")
# (effect, lo, hi, smallest effect of interest): every region of the rule, and the NaNs of a missing twin
VERDICT_CASES = (
    (0.05, 0.02, 0.08, 0.01), (0.05, 0.02, 0.08, 0.07), (0.05, -0.01, 0.11, 0.01), (0.05, 0.02, 0.08, NAN),
    (-0.05, -0.08, -0.02, 0.01), (-0.05, -0.08, -0.02, 0.07), (-0.05, -0.11, 0.01, 0.01), (-0.05, -0.08, -0.02, NAN),
    (0.0, -0.03, 0.03, 0.01), (0.02, 0.001, 0.04, 0.02), (-0.3, -0.5, -0.1, 0.29), (0.3, 0.1, 0.5, 0.29),
    (0.01, NAN, NAN, 0.01), (0.004, 0.001, 0.007, 0.01), (-0.004, -0.007, -0.001, 0.01),
)


def _region(effect, lo, hi, floor) -> str:
    """Why the package's verdict is what it is, in the words of the hints."""
    if not np.isfinite(floor) or not (np.isfinite(lo) and np.isfinite(hi)):
        return "nan"
    if lo > 0 or hi < 0:
        return "small" if abs(effect) <= floor else ("agree" if lo > 0 else "disagree")
    return "straddles"


REGION_HINTS = {
    "small": "an interval that excludes 0 is not enough: the effect's size must also exceed the floor "
             "(the smallest effect of interest), else the verdict is inconclusive.",
    "straddles": "an interval that contains 0 leaves the sign open: inconclusive, whatever the effect's size.",
    "nan": "a NaN floor (no seed twin) or a NaN interval can decide nothing: inconclusive.",
    "agree": "agree: the whole interval lies above 0 (lo > 0) and effect > floor (positive means the paper's "
             "direction).",
    "disagree": "disagree: the whole interval lies below 0 (hi < 0) and the effect's size -effect exceeds the floor "
                "(sign: a negative effect is the opposite of the paper's direction).",
}


@exercise("05.verdict_rule", "the protocol's verdict rule", kind="implement")
def verdict_rule(answer, cases=VERDICT_CASES):
    """answer(effect, lo, hi, floor) -> "agree" / "disagree" / "inconclusive"; checked against
    `eeutils.analysis.verdicts.verdict` on every case (floor: the smallest effect of interest)."""
    for effect, lo, hi, floor in cases:
        got = answer(effect, lo, hi, floor)
        if got not in VERDICTS:
            raise Hint(f"return one of the words {list(VERDICTS)}, got {got!r}.")
        if got != verdict(lo, hi, effect, floor):
            raise Hint(f"effect {effect}, interval [{lo}, {hi}], floor {floor} gets {got!r}: "
                       + REGION_HINTS[_region(effect, lo, hi, floor)])
    return f"the package's verdict on all {len(cases)} cases, NaN floors included."


def noise_floor(scores: dict, sides) -> float:
    """The protocol's noise floor: the largest seed-to-seed |difference| within any side (`side_spread`)."""
    return max(side_spread([scores[m] for m in side])[1] for side in sides)


@exercise("05.noise_floor", "the seed-noise floor from the seed twins' scores", kind="implement")
def noise_floor_check(answer, scores, a, b):
    """answer: one number; scores: {model: EAS/ceiling}; a, b: the two sides' models (two seeds each)."""
    got = as_number(answer, "answer with one number: the floor, in units of EAS / ceiling.")
    want = noise_floor(scores, (a, b))
    if np.isclose(got, want, rtol=1e-9, atol=1e-12):
        return f"noise floor {want:.4f}: two runs of one recipe already differ this much."
    if got < 0:
        raise Hint("a floor is a size: take the absolute difference between the two seeds.")
    one_side = [abs(scores[s[0]] - scores[s[1]]) for s in (a, b)]
    if any(np.isclose(got, x) for x in one_side):
        raise Hint("you used one side's seeds only: the floor is the larger seed difference of the two recipes.")
    if np.isclose(abs(got), abs(np.mean([scores[m] for m in a]) - np.mean([scores[m] for m in b]))):
        raise Hint("that is the effect (side A's mean minus side B's): the floor compares the two seeds of ONE "
                   "recipe with each other.")
    if any(np.isclose(got, abs(scores[x] - scores[y])) for x, y in itertools.product(a, b)):
        raise Hint("that compares a model of side A with one of side B: the floor compares two seeds of one recipe.")
    expect_close(got, want, "your floor")


@exercise("05.exceeds_seed_spread", "does the dense-vs-MoE difference exceed the seed spread?", kind="predict")
def exceeds_seed_spread(answer, scores, a, b):
    """answer: "yes" or "no": is |mean(A) - mean(B)| larger than the noise floor of the two recipes?"""
    expect_choice(answer, ("yes", "no"), "your prediction")
    effect = float(np.mean([scores[m] for m in a]) - np.mean([scores[m] for m in b]))
    floor = noise_floor(scores, (a, b))
    truth = "yes" if abs(effect) > floor else "no"
    if answer != truth:
        raise Hint("the measured scores say otherwise: compare the gap between the two families' seed means with "
                   "the gap between the two seeds of each family (all seeds, both sides).")
    return (f"|effect| {abs(effect):.4f} vs noise floor {floor:.4f}: the difference "
            f"{'clears' if truth == 'yes' else 'does not clear'} the seed spread.")
