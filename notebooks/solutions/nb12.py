"""Solutions to notebook 12's exercises (training for early exit). Try them before reading on."""
from __future__ import annotations

import pandas as pd

from eeutils.course import Case


def _table(layerskip, plain):
    """A small EAS table in the notebook's layout: per model, EAS / ceiling (`normalised`) of one similarity."""
    scores = dict(zip(["ls-0", "ls-1"], layerskip)) | dict(zip(["plain-0", "plain-1"], plain))
    return pd.DataFrame({"model": list(scores), "similarity": "top1", "normalised": list(scores.values())})


def _context(layerskip, plain):
    return {"table": _table(layerskip, plain), "layerskip": ["ls-0", "ls-1"], "plain": ["plain-0", "plain-1"],
            "similarity": "top1"}


# The call, by hand: effect = mean(LayerSkip) - mean(plain); floor = the largest within-recipe seed gap; credited
# ("raises" / "lowers") only when |effect| > floor and every LayerSkip-minus-plain seed pair has the effect's sign.
CASES = {
    "12.layerskip_call": Case(  # effect +0.0725 against a floor of 0.02: raises
        context=lambda: _context([0.83, 0.85], [0.77, 0.765]),
        solution="raises",
        wrong=(("within seed noise", "exceeds the largest within-recipe"), ("lowers", "sign"),
               ("higher", "should be one of"))),
}


def layers_saved(kit):
    """Per row: an exit at layer l of an L-layer model leaves (L - l) / L unrun; averaged, 1 - mean exit layer / L."""
    return 1.0 - kit["mean_exit_layer"] / kit["n_layers"]


def _kit():
    """A small decoding table in the notebook's layout: two rules on a 6-layer model, one with deferred work."""
    mean_exit = pd.Series([3.0, 4.5])
    return pd.DataFrame({"rule": ["margin:1.0", "max_prob:0.4"], "n_layers": 6, "mean_exit_layer": mean_exit,
                         "skip_ratio": (6 - mean_exit) / 6, "layers_per_token": mean_exit + [0.5, 0.25],
                         "speed_ratio": [1.3, 0.9]})


CASES["12.layers_saved"] = Case(
    context=lambda: {"kit": _kit()},
    solution=layers_saved,
    wrong=((lambda kit: kit["mean_exit_layer"] / kit["n_layers"], "RUN"),
           (lambda kit: 1.0 - kit["layers_per_token"] / kit["n_layers"], "deferred work"),
           (lambda kit: kit["n_layers"] - kit["mean_exit_layer"], "averaged"),
           (lambda kit: float(layers_saved(kit).mean()), "one value per row")))
