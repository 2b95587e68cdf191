"""Document bootstrap of the EAS (vectorised: each replicate is a vector of document multiplicities)
and the per-layer similarity curve with its interval. The one bootstrap of the kit."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core.checks import check_int_array, check_integer, check_real
from ..lens.result import Readout
from .eas import (DEFAULT_AGGREGATE, DEFAULT_ALPHA, DEFAULT_INCLUDE_EMBEDDING, DEFAULT_INDEX_BASE, DEFAULT_SIMILARITY,
                  eas_from_setup, eas_setup)
from .similarity import similarity as _similarity

__all__ = ["EASBootstrap", "bootstrap_eas", "layer_curve", "eas_replicates"]


@dataclass
class EASBootstrap:
    """EAS with a percentile bootstrap interval over documents.

    value/ceiling/normalised: the point estimate (as `eas`). lo/hi, normalised_lo/normalised_hi:
    the ci interval. samples: the n_boot bootstrap EAS values. curve: the point curve with S_lo,
    S_hi, A_lo, A_hi per layer. This is sampling noise of the evaluation text only; variation
    between training seeds is usually far larger.
    """

    value: float
    lo: float
    hi: float
    ceiling: float
    normalised: float
    normalised_lo: float
    normalised_hi: float
    ci: float
    n_boot: int
    seed: int
    params: dict
    curve: pd.DataFrame = field(repr=False)
    samples: np.ndarray = field(repr=False)

    def __float__(self) -> float:
        return float(self.value)


def doc_groups(readout: Readout):
    """(n_docs, order, starts): tokens sorted by document, start row of each document."""
    _, inv = np.unique(readout.doc, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    n_docs = int(inv.max()) + 1
    starts = np.searchsorted(inv[order], np.arange(n_docs), side="left")
    return n_docs, order, starts


def doc_sums(X: np.ndarray, order: np.ndarray, starts: np.ndarray):
    """Per-document sums of the finite entries of X [n, m] and their counts: ([d, m], [d, m])."""
    finite = np.isfinite(X)
    Xs = np.where(finite, X, 0.0)[order]
    return np.add.reduceat(Xs, starts, axis=0), np.add.reduceat(finite[order].astype(np.float64), starts, axis=0)


def draw_docs(seed: int, n_docs: int, n_boot: int) -> np.ndarray:
    """Bootstrap draws of document positions, [n_boot, n_docs] (the same draws select_docs would use)."""
    return np.random.default_rng(seed).integers(0, n_docs, size=(n_boot, n_docs))


def draw_counts(seed: int, n_docs: int, n_boot: int) -> np.ndarray:
    """How often each document is drawn in each replicate, [n_boot, n_docs] (weights for sums over documents)."""
    idx = draw_docs(seed, n_docs, n_boot)
    flat = (idx + np.arange(n_boot)[:, None] * n_docs).reshape(-1)
    return np.bincount(flat, minlength=n_boot * n_docs).reshape(n_boot, n_docs).astype(np.float64)


def check_boot(n_boot, ci, seed=0) -> tuple[int, float, int]:
    """(n_boot, ci, seed) checked: n_boot >= 1, ci in (0, 1), seed >= 0 (TypeError / ValueError naming one)."""
    return (check_integer("n_boot", n_boot, 1), check_real("ci", ci, 0, 1, lo_open=True, hi_open=True),
            check_integer("seed", seed, 0))


def percentile_interval(x: np.ndarray, ci: float, axis=0):
    """The central `ci` percentile interval (lo, hi) of replicates along `axis`, NaNs ignored."""
    q = [(1.0 - ci) / 2.0, 1.0 - (1.0 - ci) / 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(x, q, axis=axis)
    return lo, hi


# pending: analysis/trend.py and analysis/verdicts.py (owned by another change of issue 26) import these two by
# their old private names; remove the aliases when they import check_boot and percentile_interval

_EAS_OPTIONS = ("alpha", "similarity", "include_embedding", "index_base", "aggregate", "k")


def _setup_with_defaults(readout: Readout, eas_kwargs: dict):
    unknown = set(eas_kwargs) - set(_EAS_OPTIONS)
    if unknown:
        raise TypeError(f"unknown EAS option(s) {sorted(unknown)}; allowed: {sorted(_EAS_OPTIONS)}")
    opts = dict(alpha=DEFAULT_ALPHA, similarity=DEFAULT_SIMILARITY, include_embedding=DEFAULT_INCLUDE_EMBEDDING,
                index_base=DEFAULT_INDEX_BASE, aggregate=DEFAULT_AGGREGATE, k=None)
    opts.update(eas_kwargs)
    return eas_setup(readout, opts["alpha"], opts["similarity"], opts["include_embedding"], opts["index_base"],
                     opts["aggregate"], opts["k"])


def _replicate_curves(st, counts: np.ndarray, order, starts):
    """Per-replicate token-mean S and A terms ([n_boot, m] each) for document multiplicities `counts`."""
    sum_S, cnt = doc_sums(st.S, order, starts)
    den = counts @ cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_S = (counts @ sum_S) / den
        if st.aggregate == "mean_of_power":
            sum_Sa, _ = doc_sums(np.power(st.S, st.alpha), order, starts)
            P = (counts @ sum_Sa) / den
        else:
            P = np.power(mean_S, st.alpha)
    return mean_S, P * np.power(st.w, 1.0 - st.alpha)


def eas_replicates(readout: Readout, draws, value: str = "eas", **eas_kwargs) -> np.ndarray:
    """EAS (value="eas") or EAS / ceiling (value="normalised") of each bootstrap replicate, [n_boot].

    draws: [n_boot, n_docs] document positions (into the readout's sorted unique documents), e.g. one
    shared draw for several models read on the same documents. Replicate b equals
    `eas(readout.select_docs(unique_docs[draws[b]]))` up to float rounding.
    """
    if not isinstance(value, str) or value not in ("eas", "normalised"):
        raise ValueError(f"value must be 'eas' or 'normalised', got {value!r}")
    st = _setup_with_defaults(readout, eas_kwargs)
    n_docs, order, starts = doc_groups(readout)
    draws = check_int_array("draws", draws)
    if draws.ndim != 2 or (draws.size and (draws.min() < 0 or draws.max() >= n_docs)):
        raise ValueError(f"draws must be [n_boot, n_docs] document positions in 0..{n_docs - 1}")
    n_boot = draws.shape[0]
    flat = (draws + np.arange(n_boot)[:, None] * n_docs).reshape(-1)
    counts = np.bincount(flat, minlength=n_boot * n_docs).reshape(n_boot, n_docs).astype(np.float64)
    _, A = _replicate_curves(st, counts, order, starts)
    samples = A.mean(axis=1)
    if value == "eas":
        return samples
    ceiling = float(np.power(st.w, 1.0 - st.alpha).mean())
    return samples / ceiling if ceiling > 0 else np.full(n_boot, np.nan)


def bootstrap_eas(readout: Readout, n_boot: int = 200, ci: float = 0.95, seed: int = 0, **eas_kwargs) -> EASBootstrap:
    """EAS with a percentile bootstrap interval, resampling whole DOCUMENTS with replacement.

    Tokens within a document are correlated, so documents are the sampling unit. Vectorised: the
    per-document, per-layer sums of S (and of S^alpha) and counts of finite values are computed
    once; each bootstrap replicate is a vector of document multiplicities, so per-layer means are
    (counts @ sums) / (counts @ n). Replicate b equals `eas(readout.select_docs(draw_b))` for the
    document draws of `np.random.default_rng(seed).integers(0, n_docs, (n_boot, n_docs))`.
    Deterministic given seed. With a single document the interval has zero width (a warning says so).
    The interval always contains the point estimate: a percentile interval that misses it is widened to
    it (params["widened"] is then True). n_boot, seed: integers; ci: a number in (0, 1).
    eas_kwargs: alpha, similarity, include_embedding, index_base, aggregate, k (as in `eas`).
    """
    n_boot, ci, seed = check_boot(n_boot, ci, seed)
    st = _setup_with_defaults(readout, eas_kwargs)
    point = eas_from_setup(st)
    n_docs, order, starts = doc_groups(readout)
    if n_docs < 2:
        warnings.warn("bootstrap over a single document: the interval has zero width", RuntimeWarning, stacklevel=2)
    counts = draw_counts(int(seed), n_docs, int(n_boot))
    mean_S, A = _replicate_curves(st, counts, order, starts)
    samples = A.mean(axis=1)
    lo, hi = percentile_interval(samples, ci)
    # the percentile interval can miss the point estimate (few replicates, a small ci, a skewed
    # statistic): widen it to include the estimate, and say so in params
    widened = not (lo <= point.value <= hi)
    lo, hi = min(lo, point.value), max(hi, point.value)
    S_lo, S_hi = percentile_interval(mean_S, ci)
    A_lo, A_hi = percentile_interval(A, ci)
    curve = point.curve.copy()
    curve["S_lo"], curve["S_hi"], curve["A_lo"], curve["A_hi"] = S_lo, S_hi, A_lo, A_hi
    c = point.ceiling
    params = dict(point.params, n_boot=int(n_boot), ci=float(ci), seed=int(seed), unit="document",
                  widened=bool(widened))
    return EASBootstrap(value=point.value, lo=float(lo), hi=float(hi), ceiling=c, normalised=point.normalised,
                        normalised_lo=float(lo) / c if c > 0 else float("nan"),
                        normalised_hi=float(hi) / c if c > 0 else float("nan"),
                        ci=float(ci), n_boot=int(n_boot), seed=int(seed), params=params, curve=curve,
                        samples=samples)


def layer_curve(readout: Readout, similarity: str = DEFAULT_SIMILARITY, n_boot: int = 0, ci: float = 0.95,
                seed: int = 0, k: int | None = None) -> pd.DataFrame:
    """Tidy per-layer frame of the token-mean similarity, for plotting: every readout layer 0..L.

    Columns: model, similarity, layer, rel_depth (layer / L), S (mean over tokens, NaN skipped),
    S_std (token standard deviation), n_tokens (finite values), S_lo, S_hi (document-bootstrap
    percentile interval when n_boot > 0, else NaN).
    """
    S = _similarity(readout, similarity, k=k)
    check_integer("n_boot", n_boot, 0)
    check_boot(1, ci, seed)  # ci and seed are checked even when n_boot=0 leaves them unused
    L = readout.n_layers
    finite = np.isfinite(S)
    n = finite.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(S, axis=0)
        std = np.nanstd(S, axis=0)
    lo = np.full(L + 1, np.nan)
    hi = np.full(L + 1, np.nan)
    if n_boot:
        n_boot, ci, seed = check_boot(n_boot, ci, seed)
        n_docs, order, starts = doc_groups(readout)
        sums, cnt = doc_sums(S, order, starts)
        counts = draw_counts(int(seed), n_docs, int(n_boot))
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (counts @ sums) / (counts @ cnt)
        lo, hi = percentile_interval(boot, ci)
    layers = np.arange(L + 1)
    return pd.DataFrame({"model": readout.meta.get("model", ""), "similarity": similarity, "layer": layers,
                         "rel_depth": layers / L, "S": mean, "S_std": std, "n_tokens": n, "S_lo": lo, "S_hi": hi})
