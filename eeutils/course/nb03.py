"""Checks for notebook 3 (the EAS metric): its ceiling, how the ceiling moves with depth, a top-k overlap
similarity and the EAS under top-1 similarity, written by hand. References: `eeutils.metrics` (eas,
eas_ceiling, similarity) under the package's default choices."""
from __future__ import annotations

import numpy as np

from ..analysis.eas import eas, eas_ceiling
from ..analysis.similarity import similarity
from .core import Hint, exercise, expect_choice, expect_close

CEILING_GRID = [(L, a) for L in (1, 4, 6, 12, 32) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]


def _ceiling_mistake(f) -> str | None:
    """Which typical ceiling mistake `f(L, alpha)` reproduces on the whole grid, if any."""
    variants = {
        "the embedding layer counts here, but by default it is not one of the summed layers (no exit before "
        "the first block).": lambda L, a: eas_ceiling(L, a, include_embedding=True),
        "off by one in w_l: with the default 1-based index, exiting after block l skips L - l blocks, so the last "
        "block's weight is 0.": lambda L, a: eas_ceiling(L, a, index_base=0),
        "the exponents are swapped: alpha weighs the similarity and 1 - alpha the savings w_l.":
            lambda L, a: eas_ceiling(L, 1 - a),
    }
    for hint, ref in variants.items():
        if all(np.isclose(float(f(L, a)), ref(L, a), rtol=1e-9, atol=1e-12) for L, a in CEILING_GRID):
            return hint
    return None


@exercise("03.eas_ceiling", "the EAS ceiling: EAS of a model whose every layer is final")
def ceiling(answer, grid=None):
    """answer(n_layers, alpha) -> the ceiling, as metrics.eas_ceiling under the default choices."""
    grid = CEILING_GRID if grid is None else grid
    got = [float(answer(L, a)) for L, a in grid]
    want = [eas_ceiling(L, a) for L, a in grid]
    if np.allclose(got, want, rtol=1e-9, atol=1e-12):
        return "equal to metrics.eas_ceiling for every depth and alpha tried."
    hint = _ceiling_mistake(answer)
    if hint:
        raise Hint(hint)
    bad = [(L, a) for (L, a), g, w in zip(grid, got, want) if not np.isclose(g, w, rtol=1e-9, atol=1e-12)]
    raise Hint(f"wrong at (L, alpha) = {bad[0]}: the ceiling is EAS with S_l = 1 at every summed layer.")


@exercise("03.ceiling_depth", "predict: how the ceiling changes with depth", kind="predict")
def ceiling_depth(answer, shallow: int = 6, deep: int = 32, alpha: float = 0.5):
    """answer: "rises", "falls" or "stays": the ceiling of a `deep` model compared with a `shallow` one."""
    expect_choice(answer, ("rises", "falls", "stays"), "your prediction")
    low, high = eas_ceiling(shallow, alpha), eas_ceiling(deep, alpha)
    truth = "stays" if np.isclose(low, high) else ("rises" if high > low else "falls")
    if answer != truth:
        raise Hint("write the ceiling out for L = 2 and L = 4 by hand: which terms does the mean average, "
                   "and what share of them is the last layer's w = 0?")
    return f"ceiling {low:.3f} at L = {shallow}, {high:.3f} at L = {deep} (alpha = {alpha:g})."


def _diagnose_overlap(got: np.ndarray, topk: np.ndarray, k: int) -> None:
    """Name the typical mistake in a top-k overlap matrix (raises Hint)."""
    if not np.allclose(got[:, -1], 1.0):
        raise Hint("the final layer must overlap fully with itself: compare each layer with the LAST layer's ids.")
    ids, final = topk[:, :, :k], topk[:, -1:, :k]
    if np.allclose(got, (ids == final).mean(axis=2)):
        raise Hint("you compared ids position by position: the overlap is a set intersection, order does not count.")
    raise Hint("count the ids the two top-k lists share and divide by k (a share of k, not of the union).")


@exercise("03.topk_overlap", "top-k overlap similarity from the stored ids")
def topk_overlap(answer, readout, ks=None):
    """answer(topk [n, L+1, K], k) -> [n, L+1] overlap of each layer's top-k ids with the final layer's, / k."""
    topk = np.asarray(readout.topk)
    for k in (range(1, readout.k + 1) if ks is None else ks):
        got = np.asarray(answer(readout.topk, k), dtype=np.float64)
        want = similarity(readout, "topk_overlap", k=k)
        if got.shape != want.shape:
            raise Hint(f"return one value per token and layer: shape {want.shape}, got {got.shape}.")
        if not np.allclose(got, want, atol=1e-12):
            _diagnose_overlap(got, topk, k)
    return "equal to metrics.similarity(readout, 'topk_overlap', k=k) for every k tried."


@exercise("03.eas_top1", "EAS under top-1 similarity, by hand")
def eas_top1(answer, readout, alpha: float = 0.5):
    """answer(top1 [n, L+1], alpha) -> EAS with S = top-1 agreement, the other choices at their defaults."""
    ref = eas(readout, alpha=alpha, similarity="top1")
    got = float(answer(readout["top1"], alpha))
    if np.isclose(got, ref.value, rtol=1e-9, atol=1e-12):
        return f"EAS = {ref.value:.4f} (ceiling {ref.ceiling:.4f}), as metrics.eas(similarity='top1')."
    variants = {
        "the embedding layer (readout layer 0) is not summed by default.": dict(include_embedding=True),
        "off by one in w_l: exiting after block l skips L - l of the L blocks.": dict(index_base=0),
        "the exponents are swapped: S_l gets alpha, w_l gets 1 - alpha.": dict(alpha=1 - alpha),
        "averaging order: by default S_l is the token mean of the similarity, raised to alpha afterwards.":
            dict(aggregate="mean_of_power"),
    }
    for hint, choice in variants.items():
        if np.isclose(got, eas(readout, **{"alpha": alpha, "similarity": "top1", **choice}).value, rtol=1e-9):
            raise Hint(hint)
    expect_close(got, ref.value, "your EAS", rtol=1e-9, atol=1e-12)
