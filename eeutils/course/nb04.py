"""Checks for notebook 4 (training dynamics): agreement at half depth across training, the fall per doubling."""
from __future__ import annotations

import numpy as np

from ..analysis.bootstrap import layer_curve
from ..analysis.trend import slope
from .core import Hint, as_number, exercise, expect_choice


def half_depth_agreement(readout, similarity: str = "top1") -> float:
    """Token-mean S at layer L // 2 (relative depth 0.5 for an even depth) of one readout."""
    return float(layer_curve(readout, similarity=similarity).S.iloc[readout.n_layers // 2])


@exercise("04.half_depth", "does agreement at half depth rise or fall from an early checkpoint to the final one?",
          kind="predict")
def half_depth(answer, early, final, similarity="top1"):
    """answer: "rises" or "falls"; early, final: readouts of one seed's early and final checkpoints."""
    expect_choice(answer, ("rises", "falls"), "your prediction")
    s_early, s_final = half_depth_agreement(early, similarity), half_depth_agreement(final, similarity)
    truth = "rises" if s_final > s_early else "falls"
    if answer != truth:
        raise Hint(f"the measured curves say otherwise: read S at relative depth 0.5 ({similarity}) of the early "
                   "and the final checkpoint of the SAME seed in the figure above (one row per seed).")
    return (f"{similarity} agreement at layer {final.n_layers // 2} goes from {s_early:.3f} to {s_final:.3f} "
            f"({s_final - s_early:+.3f}): one seed and one layer, a description, not a verdict.")


@exercise("04.fall_per_doubling", "the fall of suitability per doubling of training, for one seed",
          kind="implement")
def fall_per_doubling(answer, steps, scores, min_step=1):
    """answer: -(OLS slope of scores against log2(step)) over the checkpoints with step >= min_step."""
    got = as_number(answer, "answer with one number: the fall of the score per doubling of training steps.")
    steps, scores = np.asarray(steps, dtype=float), np.asarray(scores, dtype=float)
    keep = steps >= min_step
    x, y = np.log2(steps[keep]), scores[keep]
    want = float(-slope(x, y))
    if np.isclose(got, want, rtol=1e-6, atol=1e-9):
        return (f"{want:+.4f} per doubling ({'falls' if want > 0 else 'rises'} with training) for this seed; the "
                "protocol fits the seed-averaged curve and compares it with the other seed's slope.")
    if not np.isfinite(got):
        raise Hint("your answer is not finite: log2(0) is -inf. Step 0 (random init) is a baseline, not a point "
                   f"of the trend; the segment is step >= {min_step}.")
    if np.isclose(got, -want, rtol=1e-6, atol=1e-9):
        raise Hint("sign: the effect is the FALL per doubling, positive when the score falls as training proceeds "
                   "(positive means the paper's direction). Negate the slope.")
    if np.isclose(got, float(-slope(steps[keep], y)), rtol=1e-6, atol=1e-12):
        raise Hint("the x axis is log2(step), not the step itself: one unit of x is one doubling of training.")
    if np.isclose(got, float(-slope(np.log2(steps + 1.0), scores)), rtol=1e-6, atol=1e-9):
        raise Hint("you kept step 0 (random init) by shifting to log2(step + 1): step 0 is a baseline, "
                   f"not a point of the trend; the segment is step >= {min_step}.")
    raise Hint("fit a straight line to (log2(step), score) over the segment, e.g. np.polyfit(x, y, 1)[0] is the "
               "slope; the effect is minus that slope.")


@exercise("04.with_step0", "put step 0 back into the fit: what does the baseline do to the trend?", kind="explore")
def with_step0(answer, steps, scores, min_step=1):
    """answer: -(slope of the curve against log2(step + 1)) over EVERY checkpoint, step 0 included."""
    got = as_number(answer, "answer with one number: the fall per doubling when step 0 is kept.")
    steps, scores = np.asarray(steps, dtype=float), np.asarray(scores, dtype=float)
    want = float(-slope(np.log2(steps + 1.0), scores))
    keep = steps >= min_step
    segment = float(-slope(np.log2(steps[keep]), scores[keep]))
    if np.isclose(got, want, rtol=1e-6, atol=1e-9):
        return (f"{want:+.4f} per doubling with step 0, {segment:+.4f} without: the climb out of random "
                "initialisation pulls the whole fit, which is why the protocol's segment starts after step 0.")
    if not np.isfinite(got):
        raise Hint("your answer is not finite: log2(0) is -inf; shift every step by one, x = log2(step + 1).")
    if np.isclose(got, segment, rtol=1e-6, atol=1e-9):
        raise Hint("that is the protocol's segment (step 0 left out): this exercise puts step 0 back in.")
    if np.isclose(got, -want, rtol=1e-6, atol=1e-9):
        raise Hint("sign: report the FALL per doubling (minus the slope), as the protocol does.")
    raise Hint("fit the seed-averaged score of every checkpoint against x = log2(step + 1) and negate the slope.")
