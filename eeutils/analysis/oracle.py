"""The budget oracle: per-token exit layers that maximise the skip ratio subject to an accuracy budget.

No exit rule (nor any other per-token choice of exit layers in min_layer..L) skips more under the
same budget, because the choice below is optimal over every per-token assignment:

Accuracy is counted in *units*: scored tokens (token accuracy: tokens with a target), or answer
documents (exact match: a document counts iff every answer token is right). A unit is right or
wrong whatever its other units do, and the skip ratio is a sum over tokens, so units are
independent. Within a unit, exiting every token at ``min_layer`` saves the most; the cheapest way
to make the unit right is to exit each of its tokens at the earliest layer >= min_layer whose top-1
equals the reference label (if every token has one), which costs (that layer - min_layer) layers
of skip per token. The accuracy budget is a *count*: at least K units must be right, K the
smallest count whose relative loss (F - K) / F is within the budget, F = units the full model gets
right (the definition of `evaluate`'s rel_acc_loss, so newly right units count: the loss is net).
Every unit weighs 1 in that count, so the K right units that cost least are the cheapest choice
(sort by cost; a free unit is always taken). All other units, and tokens outside any unit (prompts),
exit at min_layer.

reference "target" judges against the target token (answer tokens on answer-scored workloads),
as the accuracy budget does; "final" judges against the full model's top-1 token by token (the
agreement budget: loss = 1 - agreement over the skip tokens).
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import check_integer, check_real
from ..lens.result import Readout
from .similarity import check_readout

__all__ = ["budget_oracle_exits", "required_units", "scored_units"]


def required_units(n_full: int, budget: float) -> int:
    """Smallest K with (n_full - K) / n_full <= budget (+1e-12, the tolerance of `max_skip_under_budget`)."""
    if n_full <= 0:
        return 0
    k = max(0, math.ceil(n_full * (1.0 - budget) - 1e-9))
    while k > 0 and (n_full - (k - 1)) / n_full <= budget + 1e-12:
        k -= 1
    while (n_full - k) / n_full > budget + 1e-12:
        k += 1
    return k


def scored_units(readout: Readout, reference: str = "target"):
    """(unit [n] int, -1 = not scored; label [n]; kind): the accuracy units `evaluate` uses.

    reference "target": answer documents (exact match) if the readout has answer positions with a
    target, else tokens with a target (token accuracy). reference "final": the skip tokens
    (answer tokens if any, else all tokens), each its own unit, labelled by the final top-1.
    Unit ids are dense: every id in 0..max(unit) has at least one token.
    """
    n = readout.n_tokens
    target = np.asarray(readout.target)
    ans = np.asarray(readout.answer, dtype=bool) & (target >= 0)
    if reference == "final":
        mask = ans if ans.any() else np.ones(n, dtype=bool)
        return _dense(mask), np.asarray(readout.stats["top1"])[:, -1], "agreement"
    if reference != "target":
        raise ValueError(f"reference must be 'target' or 'final', got {reference!r}")
    if ans.any():
        _, inv = np.unique(np.asarray(readout.doc)[ans], return_inverse=True)
        unit = np.full(n, -1, dtype=np.int64)
        unit[ans] = inv.reshape(-1)
        return unit, target, "exact_match"
    return _dense(target >= 0), target, "token_accuracy"


def _dense(mask: np.ndarray) -> np.ndarray:
    """Unit ids 0..m-1 for the tokens in mask (one unit each), -1 elsewhere."""
    unit = np.full(mask.shape[0], -1, dtype=np.int64)
    unit[mask] = np.arange(int(mask.sum()))
    return unit


def budget_oracle_exits(readout: Readout, budget: float, min_layer: int = 1, reference: str = "target") -> np.ndarray:
    """Exit layer per token (min_layer..L) with the largest skip ratio whose relative accuracy loss
    against the full model is at most `budget` (see the module docstring for why this is optimal)."""
    check_readout(readout, "simulate")
    budget = check_real("budget", budget, 0, 1, hint=" (a relative accuracy loss, e.g. 0.05)")
    min_layer = check_integer("min_layer", min_layer, 0)
    if min_layer > readout.n_layers:
        raise ValueError(f"min_layer must be in 0..{readout.n_layers}, got {min_layer}")
    L = readout.n_layers
    top1 = np.asarray(readout.stats["top1"])
    unit, label, _ = scored_units(readout, reference)
    exits = np.full(readout.n_tokens, min_layer, dtype=np.int64)
    scored = unit >= 0
    if not scored.any():
        return exits
    right = (top1[:, min_layer:] == label[:, None]) & (label[:, None] >= 0)
    has_right = right.any(axis=1)
    first_right = min_layer + right.argmax(axis=1)  # earliest right layer (meaningless where none)
    n_units = int(unit.max()) + 1
    u = unit[scored]
    # a unit can be right iff every token of it has a right layer; its cost is the layers given up
    feasible = np.bincount(u, weights=(~has_right[scored]).astype(np.float64), minlength=n_units) == 0
    cost = np.bincount(u, weights=np.where(has_right, first_right - min_layer, 0)[scored].astype(np.float64),
                       minlength=n_units)
    full_right = np.bincount(u, weights=(top1[scored, -1] != label[scored]).astype(np.float64),
                             minlength=n_units) == 0
    k = required_units(int(full_right.sum()), float(budget))
    order = np.lexsort((np.arange(n_units), cost))  # cheapest first, ties by unit id
    order = order[feasible[order]]  # full-model-right units are feasible, so len(order) >= k
    take = np.zeros(n_units, dtype=bool)
    take[order[:k]] = True
    take |= feasible & (cost == 0)  # right for free
    chosen = scored.copy()
    chosen[scored] = take[u]
    exits[chosen] = first_right[chosen]
    return exits
