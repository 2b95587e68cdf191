"""Solutions to notebook 4's exercises (training dynamics). Try them before reading on."""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

import eeutils
from eeutils.course import Case
from eeutils.workloads import get_workload

# one seed's curve: EAS / ceiling at each training step (illustrative numbers, shaped like the zoo's)
STEPS = [0, 8, 16, 32, 64, 112, 192, 264, 352, 448]
SCORES = [0.40, 0.76, 0.90, 0.89, 0.91, 0.97, 0.90, 0.86, 0.84, 0.83]


@lru_cache(maxsize=None)
def _readout(name: str, revision: str | None = None):
    """A short readout (3 prose documents, 48 tokens each) of a zoo checkpoint: cheap, and the same every time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the documents are truncated to 48 tokens on purpose
        return eeutils.readout(eeutils.load_model(name, revision=revision), get_workload("zoo-prose", n_docs=3),
                               max_length=48, progress=False)


def fall_per_doubling(steps, scores, min_step=1):
    """Minus the slope of score against log2(step), over the steps >= min_step (step 0 is the baseline)."""
    steps, scores = np.asarray(steps, dtype=float), np.asarray(scores, dtype=float)
    keep = steps >= min_step
    return -np.polyfit(np.log2(steps[keep]), scores[keep], 1)[0]


def _with_log2_zero(steps, scores):
    """Wrong: keeps step 0 as it is, so x has log2(0) = -inf."""
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log2(np.asarray(steps, dtype=float))
        xc = x - x.mean()
        return -float(np.dot(xc, np.asarray(scores) - np.mean(scores)) / np.dot(xc, xc))


def fall_with_step0(steps, scores):
    """Minus the slope against log2(step + 1) over every checkpoint: step 0 kept, to see what it does."""
    return -np.polyfit(np.log2(np.asarray(steps, dtype=float) + 1.0), scores, 1)[0]


CASES = {
    "04.half_depth": Case(
        context=lambda: {"early": _readout("zoo/dense-mid", "step-8"), "final": _readout("zoo/dense-mid"),
                         "similarity": "top1"},
        solution="falls",  # on these three documents; the notebook's own readouts decide its answer
        wrong=(("rises", "measured curves say otherwise"), ("up", "should be one of"))),
    "04.fall_per_doubling": Case(
        context=lambda: {"steps": STEPS, "scores": SCORES, "min_step": 1},
        solution=fall_per_doubling(STEPS, SCORES),
        wrong=((-fall_per_doubling(STEPS, SCORES), "sign"),
               (-np.polyfit(STEPS[1:], SCORES[1:], 1)[0], "log2(step)"),
               (fall_with_step0(STEPS, SCORES), "step 0"),
               (_with_log2_zero(STEPS, SCORES), "not finite"),
               ("a lot", "one number"))),
    "04.with_step0": Case(
        context=lambda: {"steps": STEPS, "scores": SCORES, "min_step": 1},
        solution=fall_with_step0(STEPS, SCORES),
        wrong=((fall_per_doubling(STEPS, SCORES), "puts step 0 back"), (-fall_with_step0(STEPS, SCORES), "sign"),
               (_with_log2_zero(STEPS, SCORES), "not finite"))),
}
