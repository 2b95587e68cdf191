"""Checks for notebook 6 (scale): which comparison answers which question, and the matched-loss revision."""
from __future__ import annotations

from ..analysis.matching import closest_revision
from .core import Hint, exercise, expect_choice

CHOICES = ("equal tokens", "matched loss")
# each question and the comparison that holds fixed what the question holds fixed
QUESTIONS = {
    "budget": ("I can afford a fixed number of training tokens: does spending them on a larger model buy more "
               "early-exit potential?", "equal tokens"),
    "size_itself": ("Is a larger model more suitable than a smaller one that predicts text equally well, i.e. does "
                    "size itself matter, not how far training got?", "matched loss"),
}
WHY = {
    "equal tokens": "equal tokens holds the training budget fixed and lets the loss differ: it answers what a "
                    "budget buys.",
    "matched loss": "matched loss holds how well the models predict fixed (their validation loss) and lets the "
                    "budget differ: it isolates what size does beyond training progress.",
}


@exercise("06.fair_comparison", "equal tokens or matched loss: which comparison answers which question?",
          kind="predict")
def fair_comparison(answer, questions=QUESTIONS):
    """answer: {question key: "equal tokens" or "matched loss"} for every key of QUESTIONS."""
    if not isinstance(answer, dict) or set(answer) != set(questions):
        raise Hint(f"answer with a dict that has exactly the keys {sorted(questions)}.")
    for key, (_, want) in questions.items():
        expect_choice(answer[key], CHOICES, f"your answer for {key!r}")
        if answer[key] != want:
            raise Hint(f"{key!r}: ask what the question holds fixed. " + WHY[answer[key]])
    return "each question fixes what its comparison fixes; the findings table reports both rows for that reason."


# synthetic candidate sets, each one catching a usual slip: {revision: [loss of each seed]}, target loss
MATCH_CASES = (
    ({"step-100": [2.70, 3.10], "step-200": [2.80, 2.60]}, 2.70),   # average the seeds, not the first one
    ({"step-100": [3.00], "step-200": [2.75], "main": [2.00]}, 2.70),  # the smallest |gap|, not the lowest loss
    ({"step-100": [2.75], "step-200": [2.25]}, 2.50),               # a tie goes to the earlier revision
)


def _slip(candidates: dict, target: float) -> str:
    """The usual slips' picks, to name the one an answer made."""
    first_seed = min(candidates, key=lambda r: abs(candidates[r][0] - target))
    signed = min(candidates, key=lambda r: sum(candidates[r]) / len(candidates[r]) - target)
    return {first_seed: "you compared one seed only: a revision's loss is the mean over the seeds that have it.",
            signed: "closest means the smallest ABSOLUTE gap |mean loss - target|, not the lowest loss."}


@exercise("06.matched_revision", "the matched-loss revision: card loss closest to the target", kind="implement")
def matched_revision(answer, candidates, target):
    """answer(candidates, target) -> revision name; candidates {revision: [card loss per seed]}."""
    cases = ((candidates, target),) + MATCH_CASES
    for cands, tgt in cases:
        got = answer({k: list(v) for k, v in cands.items()}, tgt)
        want = closest_revision(cands, tgt)[0]
        if not isinstance(got, str) or got not in cands:
            raise Hint(f"return the revision's NAME (one of the candidates' keys), got {got!r}.")
        if got != want:
            if closest_revision({got: cands[got]}, tgt)[2] == closest_revision(cands, tgt)[2]:
                raise Hint("a tie: two revisions are equally close; the earlier one (first in the dict) wins.")
            raise Hint(_slip(cands, tgt).get(got, "the smallest |mean loss over seeds - target| wins."))
    rev, loss, gap = closest_revision(candidates, target)
    return f"revision {rev}: mean card loss {loss:.3f} vs target {target:.3f}, gap {gap:.3f} nats."
