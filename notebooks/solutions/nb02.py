"""Solutions to notebook 2's exercises (exit rules). Try each exercise before reading its solution.

The context is a small readout (the zoo's dense-mid model on four short documents) so that the tests run fast;
the notebook passes its own readout to the same checks.
"""
from functools import lru_cache

import numpy as np

import eeutils
from eeutils import exits
from eeutils.course import Case

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


@lru_cache(maxsize=None)
def _readout():
    docs = eeutils.workloads.get_workload("zoo-prose", n_docs=4, max_chars=300)
    return eeutils.readout(eeutils.load_model("zoo/dense-mid"), docs, progress=False)


def entropy_exit(entropy, threshold):
    """First layer from 1 to L-1 whose entropy is at most `threshold`; L (every block) when none is."""
    entropy = np.asarray(entropy)
    L = entropy.shape[1] - 1
    fires = entropy[:, 1:L] <= threshold  # layer 0 never exits; layer L is where every token ends anyway
    return np.where(fires.any(axis=1), fires.argmax(axis=1) + 1, L)


def entropy_exit_from_0(entropy, threshold):  # lets the embeddings (layer 0) exit
    fires = np.asarray(entropy)[:, :-1] <= threshold
    return np.where(fires.any(axis=1), fires.argmax(axis=1), entropy.shape[1] - 1)


def entropy_exit_reversed(entropy, threshold):  # exits where the entropy is HIGH: confidence read backwards
    return entropy_exit(-np.asarray(entropy), -threshold)


def entropy_exit_never_is_minus_one(entropy, threshold):  # argmax of an all-False row is 0: this gives layer 1
    fires = np.asarray(entropy)[:, 1:-1] <= threshold
    return fires.argmax(axis=1) + 1


def entropy_exit_last(entropy, threshold):  # the LAST layer where the rule holds, not the first
    fires = np.asarray(entropy)[:, 1:-1] <= threshold
    L = entropy.shape[1] - 1
    last = L - 1 - fires[:, ::-1].argmax(axis=1)
    return np.where(fires.any(axis=1), last, L)


def best_threshold():
    """The grid's lowest max_prob threshold whose agreement loss is within 5 %: found by trying the grid."""
    r = _readout()
    for t in THRESHOLDS:  # skip ratio falls as the threshold rises, so the first admissible one skips most
        res = exits.evaluate(r, exits.simulate(r, exits.ExitRule("max_prob", t)))
        if 1 - res["agreement"] <= 0.05:
            return t
    raise AssertionError("no threshold of the grid is within budget")


CASES = {
    "02.entropy_rule": Case(
        context=lambda: {"readout": _readout()},
        solution=entropy_exit,
        wrong=((entropy_exit_from_0, "layer 0"), (entropy_exit_reversed, "low entropy means confident"),
               (entropy_exit_never_is_minus_one, "never fires"), (entropy_exit_last, "FIRST layer"),
               (lambda entropy, threshold: entropy.argmin(axis=1), "layer 0")),
    ),
    # stricter rule: fewer tokens exit early, so fewer layers are skipped and more predictions stay final
    "02.threshold_direction": Case(
        context=lambda: {"readout": _readout()},
        solution={"skip_ratio": "lower", "agreement": "higher"},
        wrong=(({"skip_ratio": "higher", "agreement": "lower"}, "skip_ratio: think"),
               ({"skip_ratio": "lower", "agreement": "lower"}, "agreement: think"),
               ({"skip_ratio": "down", "agreement": "up"}, "should be one of"), ("lower", "dict")),
    ),
    "02.budget_threshold": Case(
        context=lambda: {"readout": _readout(), "thresholds": THRESHOLDS, "budget": 0.05},
        solution=0.5,  # what best_threshold() finds on this context's readout
        wrong=((0.4, "more predictions change than the budget"), (0.9, "a lower threshold"),
               (0.42, "grid"), ("high", "one threshold")),
    ),
}
