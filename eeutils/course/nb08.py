"""Checks for notebook 8 (generations): a measured EAS among the reported values, and the depth-dependent ceiling."""
from __future__ import annotations

import numpy as np

from ..analysis.eas import eas_ceiling
from ..notebook.real_models import reported_range_position
from .core import Hint, as_number, exercise


@exercise("08.range_position", "where a measured EAS sits among the reported values", kind="implement")
def range_position(answer, value, reported):
    """answer: (n_below, n_above): how many reported EAS values are below / above `value` (strictly)."""
    try:
        n_below, n_above = (int(x) for x in answer)
    except (TypeError, ValueError):
        raise Hint("answer with a pair of counts: (reported values below yours, reported values above yours).")
    pos = reported_range_position(value, reported)
    if (n_below, n_above) == (pos["n_below"], pos["n_above"]):
        return f"above {n_below} and below {n_above} of the {pos['n']} reported values (secondary source)."
    if (n_above, n_below) == (pos["n_below"], pos["n_above"]):
        raise Hint("the two counts are swapped: 'below' counts the reported values smaller than the measured one.")
    v = reported.eas.to_numpy(dtype=float)
    if n_below + n_above == len(v) and np.any(v == value):
        raise Hint("a reported value equal to the measured one is neither below nor above it: count strictly.")
    if n_below + n_above > len(v):
        raise Hint(f"the two counts add up to more than the {len(v)} reported values.")
    raise Hint("count the rows of the reported table's `eas` column that are smaller, and those that are larger.")


@exercise("08.ceiling_ratio", "how much higher a deeper model's EAS ceiling is", kind="explore")
def ceiling_ratio(answer, shallow, deep, alpha):
    """answer: ceiling(deep layers) / ceiling(shallow layers) at `alpha` (EAS defaults: layers 1..L, w = (L-l)/L)."""
    got = as_number(answer, "answer with one number: the deep model's ceiling divided by the shallow model's.")
    want = eas_ceiling(deep, alpha) / eas_ceiling(shallow, alpha)
    if np.isclose(got, want, rtol=1e-4):
        return (f"a {deep}-layer model's ceiling is {want:.3f}x a {shallow}-layer model's: equal raw EAS means the "
                "shallower model is closer to its own best. Compare EAS / ceiling across depths.")
    if np.isclose(got * want, 1.0, rtol=1e-4):
        raise Hint("the ratio is upside down: divide the deeper model's ceiling by the shallower one's.")

    def with_layers(first, last, w):  # the same ratio under a common slip in the layer set or the weights
        c = [np.mean(np.power(w(np.arange(first, last(n) + 1), n), 1.0 - alpha)) for n in (deep, shallow)]
        return c[0] / c[1]

    if np.isclose(got, with_layers(0, lambda n: n, lambda l, n: (n - l) / n), rtol=1e-4):
        raise Hint("EAS averages layers 1..L: layer 0 (the embeddings) is not a place to exit.")
    if np.isclose(got, with_layers(1, lambda n: n, lambda l, n: l / n), rtol=1e-4):
        raise Hint("w_l is the share of layers an exit at l SKIPS, (L - l) / L: it falls with depth.")
    raise Hint("the ceiling is the EAS of a model whose every layer equals its final one (S_l = 1): "
               "mean over l = 1..L of w_l^(1 - alpha).")
