"""Solutions to notebook 8's exercises (generations). Try them before reading on."""
from __future__ import annotations

import numpy as np

from eeutils import metrics
from eeutils.course import Case


def range_position(value, reported):
    """(reported values strictly below `value`, reported values strictly above it)."""
    v = reported.eas.to_numpy(dtype=float)
    return int((v < value).sum()), int((v > value).sum())


def ceiling(n_layers, alpha):
    """EAS of a model whose every layer equals its final one: mean over l = 1..L of ((L - l) / L)^(1 - alpha)."""
    layers = np.arange(1, n_layers + 1)
    return float(np.mean(((n_layers - layers) / n_layers) ** (1 - alpha)))


def _reported_context():
    rep = metrics.reported_eas()
    return {"value": float(rep.eas.iloc[0]), "reported": rep}  # a value equal to a reported one: ties count


def _ties_counted(ctx):
    v = ctx["reported"].eas.to_numpy(dtype=float)
    return int((v <= ctx["value"]).sum()), int((v > ctx["value"]).sum())


_CTX8 = _reported_context()
_RIGHT = range_position(**_CTX8)
_CEIL = {"shallow": 6, "deep": 32, "alpha": 0.5}
_LAYER0 = [np.mean(((n - np.arange(0, n + 1)) / n) ** 0.5) for n in (32, 6)]
_RISING = [np.mean((np.arange(1, n + 1) / n) ** 0.5) for n in (32, 6)]

CASES = {
    "08.range_position": Case(
        context=lambda: _CTX8,
        solution=_RIGHT,
        wrong=((_RIGHT[::-1], "swapped"), (_ties_counted(_CTX8), "neither below nor above"),
               ("0.5", "pair of counts"))),
    "08.ceiling_ratio": Case(
        context=lambda: _CEIL,
        solution=ceiling(32, 0.5) / ceiling(6, 0.5),
        wrong=((ceiling(6, 0.5) / ceiling(32, 0.5), "upside down"), (_LAYER0[0] / _LAYER0[1], "layer 0"),
               (_RISING[0] / _RISING[1], "skips"), (1.0, "every layer equals its final one"))),
}
