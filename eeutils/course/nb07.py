"""Checks for notebook 7 (base vs tuned): the KL settle layer per token, and where the tuned side settles."""
from __future__ import annotations

import numpy as np

from ..analysis.depth import kl_settle_layer
from .core import Hint, exercise, expect_choice


def _first_below(kl: np.ndarray, threshold: float) -> np.ndarray:
    """Per token, the first layer >= 1 where KL dips below the threshold (L when none): the usual slip."""
    below = kl[:, 1:] < threshold
    below[:, -1] = True
    return np.argmax(below, axis=1) + 1


@exercise("07.settle_per_token", "the KL settle layer of every token", kind="implement")
def settle_per_token(answer, readout, threshold):
    """answer(kl, threshold) -> int array, one layer per token; kl is readout["kl_to_final"], [n_tokens, L + 1]."""
    kl = np.asarray(readout["kl_to_final"], dtype=float)
    got = np.asarray(answer(kl.copy(), threshold))
    want = kl_settle_layer(readout, threshold=threshold, per_token=True)
    if got.shape != want.shape:
        raise Hint(f"return one layer per token, shape {want.shape}; got shape {got.shape} "
                   "(did you average over tokens first?).")
    if np.array_equal(got, want):
        return f"{len(want)} tokens, each settle layer equal to metrics.kl_settle_layer(per_token=True)."
    if np.array_equal(got, _first_below(kl, threshold)):
        raise Hint("some tokens dip below the threshold and rise above it again: the settle layer is the first "
                   "layer from which KL stays below the threshold at every later layer, not the first dip.")
    if np.array_equal(got + 1, want) or np.array_equal(got - 1, want):
        raise Hint("off by one layer everywhere: column 0 of kl_to_final is the embeddings (layer 0); if you "
                   "sliced off columns, add the offset back.")
    if np.any(got < 1):
        raise Hint("layer 0 (the embeddings) is never a place to exit: search layers 1..L.")
    raise Hint(f"{int((got != want).sum())} of {len(want)} tokens get a different layer; the final layer L always "
               "counts as settled.")


def side_settle_depth(readouts, threshold: float) -> float:
    """Mean over a side's models of the mean per-token KL settle layer, as a fraction of depth."""
    return float(np.mean([kl_settle_layer(r, threshold=threshold, per_token=True).mean() / r.n_layers
                          for r in readouts]))


@exercise("07.tuned_settles_later", "does the tuned side settle later than the base side?", kind="predict")
def tuned_settles_later(answer, base, tuned, threshold):
    """answer: "later" or "earlier"; base, tuned: lists of readouts (one per seed) on one workload."""
    expect_choice(answer, ("later", "earlier"), "your prediction")
    diff = side_settle_depth(tuned, threshold) - side_settle_depth(base, threshold)
    truth = "later" if diff > 0 else "earlier"
    if answer != truth:
        raise Hint("the measured settle depths say otherwise: read the settle table and the KL curves below, "
                   "and ask which of the tuned model's layers the fine-tune changed most.")
    return (f"the tuned side settles {truth} by {abs(diff):.3f} of the depth (seed means, no interval: "
            "a description, not a verdict).")
