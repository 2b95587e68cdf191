"""Solutions to notebook 6's exercises (scale). Try them before reading on."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from eeutils.analysis.matching import final_loss, revision_losses
from eeutils.arch.names import list_revisions
from eeutils.course import Case


@lru_cache(maxsize=None)
def matched_loss_context(larger=("zoo/dense-mid", "zoo/dense-mid-s1"),
                         smaller=("zoo/dense-small", "zoo/dense-small-s1")) -> dict:
    """What notebook 6 passes: every revision of the larger side's seeds with its card losses (the final one
    named "main"), and the mean final card loss of the smaller side's seeds (read from the model cards)."""
    candidates = {}
    for name in larger:
        final = list_revisions(name)[-1]
        for rev, loss in revision_losses(name).items():
            candidates.setdefault("main" if rev == final else rev, []).append(loss)
    return {"candidates": candidates, "target": float(np.mean([final_loss(s) for s in smaller]))}


def closest(candidates, target):
    """The revision whose mean loss over seeds is closest to the target (the first one on a tie)."""
    return min(candidates, key=lambda rev: abs(np.mean(candidates[rev]) - target))


def _first_seed(candidates, target):
    """Wrong: the first seed's loss stands for the revision."""
    return min(candidates, key=lambda rev: abs(candidates[rev][0] - target))


def _lowest_below(candidates, target):
    """Wrong: the signed gap, so the lowest loss wins."""
    return min(candidates, key=lambda rev: np.mean(candidates[rev]) - target)


def _last_on_tie(candidates, target):
    """Wrong: on a tie the later revision wins."""
    return min(reversed(list(candidates)), key=lambda rev: abs(np.mean(candidates[rev]) - target))


def _the_loss(candidates, target):
    """Wrong: returns the matched loss, not the revision."""
    return float(np.mean(candidates[closest(candidates, target)]))


CASES = {
    "06.fair_comparison": Case(
        context=lambda: {},
        solution={"budget": "equal tokens", "size_itself": "matched loss"},
        wrong=(({"budget": "matched loss", "size_itself": "equal tokens"}, "holds"),
               ({"budget": "equal tokens"}, "exactly the keys"),
               ({"budget": "equal tokens", "size_itself": "equal loss"}, "should be one of"))),
    "06.matched_revision": Case(
        context=lambda: dict(matched_loss_context()),
        solution=closest,
        wrong=((_first_seed, "one seed only"), (_lowest_below, "absolute"), (_last_on_tie, "tie"),
               (_the_loss, "name"))),
}
