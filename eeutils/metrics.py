"""Early-exit suitability from a Readout: similarity curves S_l, the EAS metric, its bootstrap,
sensitivity of model rankings to the metric's open choices, and effective-depth markers.

The Early-exit Adaptability Score (EAS), as third-party notes on arXiv 2603.23701 give it::

    EAS = (1/L') * sum_{l in layers} A_l,    A_l = S_l^alpha * w_l^(1 - alpha),    w_l = (L - l) / L

S_l is how much layer l's readout resembles the final layer's, w_l the fraction of the L blocks
skipped when exiting at layer l, L' the number of layers summed. The notes leave open: alpha, the
similarity, K for top-K overlap, whether S is averaged over tokens before or after the power,
whether layer indices start at 0 or 1, and whether the embedding layer counts. Every one of
these is a parameter of `eas` with a documented default; `sensitivity` shows how much a ranking
of models moves when they change.

Layer numbering follows `eeutils.result`: readout layer 0 = embeddings (input of block 1),
readout layer r = output of block r, readout layer L = output of the last block (the final layer).

EAS has a ceiling below 1 (a model whose every layer equals the final one scores
mean_l w_l^(1-alpha), which depends on L and alpha), so `EASResult` reports the value, that
ceiling and value / ceiling. Compare models of different depth with the normalised value.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .result import Readout

__all__ = [
    "SIMILARITY_KINDS", "AGGREGATES", "EASResult", "EASBootstrap",
    "similarity", "eas", "eas_ceiling", "bootstrap_eas", "layer_curve",
    "sensitivity", "rank_stability", "kendall_tau",
    "settle_layer", "kl_settle_layer", "saturated_matrix", "saturation_layer",
    "depth_summary", "saturation_summary", "reported_eas",
]

# kind -> (statistic read, formula of the per-token similarity S_tl in [0, 1])
SIMILARITY_KINDS = {
    "logit_cos": "clip(cos(z_l, z_L), 0, 1): cosine of the readout logits; negative cosines count as 0",
    "hidden_cos": "clip(cos(h_l, h_L), 0, 1): cosine of residual-stream states (before the final norm)",
    "topk_overlap": "|topK(z_l) ∩ topK(z_L)| / K  (K = the readout's k, or a smaller k recomputed from readout.topk)",
    "kl": "exp(-KL(p_L || p_l)): 1 iff identical distributions, in (0, 1]; 0.69 nats -> 0.5",
    "top1": "1.0 if argmax z_l == argmax z_L else 0.0",
}
AGGREGATES = ("power_of_mean", "mean_of_power")

# Defaults of the open choices (see `eas` for the reasons).
DEFAULT_ALPHA = 0.5
DEFAULT_SIMILARITY = "logit_cos"
DEFAULT_AGGREGATE = "power_of_mean"
DEFAULT_INDEX_BASE = 1
DEFAULT_INCLUDE_EMBEDDING = False

REPORTED_CSV = Path(__file__).resolve().parents[1] / "data" / "paper_reported.csv"


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------
def _check_readout(readout: Readout) -> None:
    if not isinstance(readout, Readout):
        raise TypeError(f"expected an eeutils.result.Readout, got {type(readout).__name__}")
    if readout.n_tokens == 0:
        raise ValueError("the readout has 0 tokens: nothing to measure (check the workload and any token selection)")
    if "top1" not in readout.stats:
        raise ValueError("the readout has no 'top1' statistic, which defines its layers")
    if readout.n_layers < 1:
        raise ValueError("the readout has no block layers (only layer 0): EAS needs L >= 1")


def _check_alpha(alpha) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
    if not (0.0 <= a <= 1.0):  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1] (weight of similarity vs savings), got {alpha!r}")
    return a


def _stat(readout: Readout, name: str, for_what: str) -> np.ndarray:
    if name not in readout.stats:
        raise ValueError(f"{for_what} needs the statistic {name!r}, which this readout lacks "
                         f"(it has: {sorted(readout.stats)})")
    return np.asarray(readout.stats[name])


# ---------------------------------------------------------------------------
# similarity S_tl
# ---------------------------------------------------------------------------
def _topk_overlap_from_ids(topk: np.ndarray, k: int) -> np.ndarray:
    """|topk_l[:k] ∩ topk_L[:k]| / k per token and layer, from the stored ids (unique within a row).

    Sort-based: concatenate the two id lists, sort, count equal neighbours. Memory O(n * 2k) per layer.
    """
    n, n_lay, _ = topk.shape
    final = topk[:, -1, :k]
    out = np.empty((n, n_lay), dtype=np.float64)
    for layer in range(n_lay):
        both = np.sort(np.concatenate([topk[:, layer, :k], final], axis=1), axis=1)
        out[:, layer] = (both[:, 1:] == both[:, :-1]).sum(axis=1) / k
    return out


def similarity(readout: Readout, kind: str = DEFAULT_SIMILARITY, k: int | None = None) -> np.ndarray:
    """Per-token similarity S_tl of layer l's readout to the final layer's, shape [n_tokens, L + 1], float64.

    Kinds (all mapped into [0, 1]; NaN stays NaN and is skipped by the token means downstream):

    - ``"logit_cos"``: statistic ``logit_cos`` = cos(z_l, z_L), clipped to [0, 1]. A negative
      cosine (layer pointing away from the final logits) counts as 0 similarity, so that
      S^alpha is defined for every alpha.
    - ``"hidden_cos"``: statistic ``hidden_cos`` = cos(h_l, h_L), clipped to [0, 1] likewise.
    - ``"topk_overlap"``: |topK(z_l) ∩ topK(z_L)| / K. With ``k=None`` (or k equal to the
      readout's k) the stored statistic is used; a smaller k is recomputed from ``readout.topk``
      (ids are sorted by decreasing logit, so the first k are the top k). k above the readout's k
      is an error: those ids were never stored.
    - ``"kl"``: exp(-KL(p_L || p_l)) from ``kl_to_final``. Bounded in (0, 1], equal to 1 iff the
      two distributions coincide, and equal to the p_L-weighted geometric mean of p_l(v)/p_L(v).
      Chosen over 1 - KL/max because the max depends on the sample (adding one document would
      change every S) and is not comparable across models; over 1/(1+KL) for that interpretation.
      Tiny negative KLs from rounding are clipped to 0 (S = 1).
    - ``"top1"``: 1.0 where top1_l == top1_L else 0.0.
    """
    _check_readout(readout)
    if kind not in SIMILARITY_KINDS:
        raise ValueError(f"unknown similarity kind {kind!r}; choose one of {sorted(SIMILARITY_KINDS)}")
    if k is not None and kind != "topk_overlap":
        raise ValueError(f"k only applies to similarity='topk_overlap', not {kind!r}")
    if kind in ("logit_cos", "hidden_cos"):
        s = _stat(readout, kind, f"similarity {kind!r}").astype(np.float64)
        return np.clip(s, 0.0, 1.0)
    if kind == "kl":
        kl = _stat(readout, "kl_to_final", "similarity 'kl'").astype(np.float64)
        return np.exp(-np.clip(kl, 0.0, None))
    if kind == "top1":
        top1 = _stat(readout, "top1", "similarity 'top1'")
        return (top1 == top1[:, -1:]).astype(np.float64)
    # topk_overlap
    k_stored = readout.k
    if k is None:
        if "topk_overlap" in readout.stats:
            return np.clip(readout.stats["topk_overlap"].astype(np.float64), 0.0, 1.0)
        k = k_stored
    if isinstance(k, bool) or int(k) != k or not (1 <= int(k) <= k_stored):
        raise ValueError(f"k must be an integer in 1..{k_stored} (the readout stored top-{k_stored} ids), got {k!r}")
    k = int(k)
    if k == k_stored and "topk_overlap" in readout.stats:
        return np.clip(readout.stats["topk_overlap"].astype(np.float64), 0.0, 1.0)
    return _topk_overlap_from_ids(np.asarray(readout.topk), k)


_similarity = similarity  # for functions whose `similarity` parameter shadows the name


# ---------------------------------------------------------------------------
# EAS
# ---------------------------------------------------------------------------
@dataclass
class EASResult:
    """EAS of one readout under one set of choices.

    value: the EAS. ceiling: EAS of a model whose every layer equals its final one (S = 1),
    mean_l w_l^(1-alpha) under the same choices. normalised: value / ceiling, in [0, 1].
    params: every choice made (alpha, similarity, k, include_embedding, index_base, aggregate)
    plus n_layers, n_terms (= L'), n_tokens, n_docs, model.
    curve: one row per layer summed: layer (readout layer), index (l used in w_l), rel_depth
    (layer / L), S (token-mean similarity), S_alpha (the powered term: mean(S)^alpha or
    mean(S^alpha)), w, A = S_alpha * w^(1-alpha). EAS = curve.A.mean().
    """

    value: float
    ceiling: float
    normalised: float
    params: dict
    curve: pd.DataFrame = field(repr=False)

    def __float__(self) -> float:
        return float(self.value)

    def as_row(self) -> dict:
        return {"model": self.params.get("model", ""), "eas": self.value, "ceiling": self.ceiling,
                "normalised": self.normalised, **{k: v for k, v in self.params.items() if k != "model"}}


@dataclass
class _Setup:
    S: np.ndarray  # [n_tokens, m] similarity at the layers summed
    layers: np.ndarray  # [m] readout layers summed
    index: np.ndarray  # [m] index l used in w_l
    w: np.ndarray  # [m]
    alpha: float
    aggregate: str
    params: dict


def _layer_selection(n_layers: int, include_embedding: bool, index_base: int):
    if index_base not in (0, 1) or isinstance(index_base, bool):
        raise ValueError(f"index_base must be 0 or 1, got {index_base!r}")
    if not isinstance(include_embedding, (bool, np.bool_)):
        raise ValueError(f"include_embedding must be True or False, got {include_embedding!r}")
    if include_embedding and index_base == 0:
        raise ValueError("include_embedding=True with index_base=0 would give the embedding layer index -1 "
                         "and w = (L + 1) / L > 1; use index_base=1 (embedding = layer 0) to include it")
    layers = np.arange(0 if include_embedding else 1, n_layers + 1)
    index = layers - (1 - index_base)
    w = (n_layers - index) / n_layers
    return layers, index, w


def eas_ceiling(n_layers: int, alpha: float = DEFAULT_ALPHA, include_embedding: bool = DEFAULT_INCLUDE_EMBEDDING,
                index_base: int = DEFAULT_INDEX_BASE) -> float:
    """EAS of a model whose every layer equals the final one: mean over the summed layers of w_l^(1-alpha)."""
    alpha = _check_alpha(alpha)
    if int(n_layers) != n_layers or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    _, _, w = _layer_selection(int(n_layers), include_embedding, index_base)
    return float(np.mean(np.power(w, 1.0 - alpha)))


def _setup(readout: Readout, alpha, similarity_kind, include_embedding, index_base, aggregate, k,
           S_full: np.ndarray | None = None) -> _Setup:
    _check_readout(readout)
    alpha = _check_alpha(alpha)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if similarity_kind not in SIMILARITY_KINDS:
        raise ValueError(f"unknown similarity kind {similarity_kind!r}; choose one of {sorted(SIMILARITY_KINDS)}")
    L = readout.n_layers
    layers, index, w = _layer_selection(L, include_embedding, index_base)
    if S_full is None:
        S_full = similarity(readout, similarity_kind, k=k)
    S = S_full[:, layers]
    n_finite = np.isfinite(S).sum(axis=0)
    if (n_finite == 0).any():
        bad = layers[n_finite == 0].tolist()
        raise ValueError(f"similarity {similarity_kind!r} is NaN for every token at layer(s) {bad}; "
                         "exclude them (e.g. include_embedding=False) or fix the readout")
    k_eff = (k if k is not None else readout.k) if similarity_kind == "topk_overlap" else None
    params = dict(alpha=alpha, similarity=similarity_kind, k=k_eff, include_embedding=bool(include_embedding),
                  index_base=int(index_base), aggregate=aggregate, n_layers=L, n_terms=len(layers),
                  n_tokens=readout.n_tokens, n_docs=readout.n_docs, model=readout.meta.get("model", ""))
    return _Setup(S=S, layers=layers, index=index, w=w, alpha=alpha, aggregate=aggregate, params=params)


def _powered(mean_S: np.ndarray, mean_S_alpha: np.ndarray | None, alpha: float, aggregate: str) -> np.ndarray:
    if aggregate == "power_of_mean":
        return np.power(mean_S, alpha)
    return mean_S_alpha


def _eas_from_setup(st: _Setup) -> EASResult:
    S = st.S
    mean_S = np.nanmean(S, axis=0)
    mean_S_alpha = np.nanmean(np.power(S, st.alpha), axis=0) if st.aggregate == "mean_of_power" else None
    P = _powered(mean_S, mean_S_alpha, st.alpha, st.aggregate)
    w_pow = np.power(st.w, 1.0 - st.alpha)  # numpy: 0 ** 0 == 1, so with alpha = 1 the last layer counts fully
    A = P * w_pow
    value = float(A.mean())
    ceiling = float(w_pow.mean())
    L = st.params["n_layers"]
    curve = pd.DataFrame({"layer": st.layers, "index": st.index, "rel_depth": st.layers / L,
                          "S": mean_S, "S_alpha": P, "w": st.w, "A": A})
    return EASResult(value=value, ceiling=ceiling, normalised=value / ceiling if ceiling > 0 else float("nan"),
                     params=dict(st.params), curve=curve)


def eas(readout: Readout, alpha: float = DEFAULT_ALPHA, similarity: str = DEFAULT_SIMILARITY,
        include_embedding: bool = DEFAULT_INCLUDE_EMBEDDING, index_base: int = DEFAULT_INDEX_BASE,
        aggregate: str = DEFAULT_AGGREGATE, k: int | None = None) -> EASResult:
    """Early-exit Adaptability Score: EAS = (1/L') * sum_l S_l^alpha * w_l^(1-alpha), w_l = (L - l)/L.

    Every choice the paper's notes leave open is a parameter:

    alpha (default 0.5)
        Weight of similarity against savings in the weighted geometric mean A_l. 0.5 weighs them
        equally; the notes give no value. Must lie in [0, 1]. Edge cases follow numpy's 0**0 = 1:
        alpha = 1 gives the mean similarity over the summed layers (the final layer counts with
        w^0 = 1); alpha = 0 gives the mean w whatever S is (normalised = 1).
    similarity (default "logit_cos")
        Which S (see `similarity` and `SIMILARITY_KINDS`). The notes mostly say "layer-to-final
        logit similarity" and one says cosine, hence logit cosine. It saturates early on small
        models: compare with "top1" and "kl" (see `sensitivity`).
    k (default None = the readout's k)
        K for "topk_overlap"; a smaller K is recomputed from the stored top-k ids.
    aggregate (default "power_of_mean")
        "power_of_mean": S_l = mean over tokens of S_tl, then A_l = S_l^alpha w_l^(1-alpha): the
        formula is written with one S per layer, so the token mean is taken first.
        "mean_of_power": A_l = mean_t(S_tl^alpha) w_l^(1-alpha). For 0 < alpha < 1 this is never
        larger (Jensen: x^alpha is concave); for a 0/1 similarity like "top1" it equals the mean S.
    include_embedding (default False)
        Whether readout layer 0 (the embeddings) is one of the summed layers. Excluded by default:
        no exit can happen before any block has run, and with tied embeddings layer 0 just predicts
        the input token back, so its similarity is an artefact. Included, it gets w_0 = 1 and L' = L + 1.
    index_base (default 1)
        How block b (readout layer b, 1..L) is numbered in w_l. 1: l = b, w = (L - b)/L, exactly
        the fraction of blocks skipped when exiting after block b, so the last block has w_L = 0
        and A_L = 0. 0: l = b - 1 (0-based block lists), w = (L - b + 1)/L, which credits one more
        skipped block than is skipped (first block w = 1, last w = 1/L). Default 1 because w_l is
        defined as the fraction of layers skipped.

    The sum runs over readout layers 1..L (0..L with the embedding) and L' is the number of
    layers summed, which equals the paper's L under the defaults. Tokens: all tokens of the
    readout (similarity to the final layer needs no target); NaN similarities are skipped in each
    layer's token mean; cosines are clipped to [0, 1] (negative -> 0).
    """
    st = _setup(readout, alpha, similarity, include_embedding, index_base, aggregate, k)
    return _eas_from_setup(st)


# ---------------------------------------------------------------------------
# bootstrap over documents
# ---------------------------------------------------------------------------
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


def _doc_groups(readout: Readout):
    """(n_docs, order, starts): tokens sorted by document, start row of each document."""
    _, inv = np.unique(readout.doc, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(inv, kind="stable")
    n_docs = int(inv.max()) + 1
    starts = np.searchsorted(inv[order], np.arange(n_docs), side="left")
    return n_docs, order, starts


def _doc_sums(X: np.ndarray, order: np.ndarray, starts: np.ndarray):
    """Per-document sums of the finite entries of X [n, m] and their counts: ([d, m], [d, m])."""
    finite = np.isfinite(X)
    Xs = np.where(finite, X, 0.0)[order]
    return np.add.reduceat(Xs, starts, axis=0), np.add.reduceat(finite[order].astype(np.float64), starts, axis=0)


def _draw_docs(seed: int, n_docs: int, n_boot: int) -> np.ndarray:
    """Bootstrap draws of document positions, [n_boot, n_docs] (the same draws select_docs would use)."""
    return np.random.default_rng(seed).integers(0, n_docs, size=(n_boot, n_docs))


def _draw_counts(seed: int, n_docs: int, n_boot: int) -> np.ndarray:
    idx = _draw_docs(seed, n_docs, n_boot)
    flat = (idx + np.arange(n_boot)[:, None] * n_docs).reshape(-1)
    return np.bincount(flat, minlength=n_boot * n_docs).reshape(n_boot, n_docs).astype(np.float64)


def _check_boot(n_boot, ci):
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not (0.0 < float(ci) < 1.0):
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")


def _quantiles(x: np.ndarray, ci: float, axis=0):
    q = [(1.0 - ci) / 2.0, 1.0 - (1.0 - ci) / 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(x, q, axis=axis)
    return lo, hi


def bootstrap_eas(readout: Readout, n_boot: int = 200, ci: float = 0.95, seed: int = 0, **eas_kwargs) -> EASBootstrap:
    """EAS with a percentile bootstrap interval, resampling whole DOCUMENTS with replacement.

    Tokens within a document are correlated, so documents are the sampling unit. Vectorised: the
    per-document, per-layer sums of S (and of S^alpha) and counts of finite values are computed
    once; each bootstrap replicate is a vector of document multiplicities, so per-layer means are
    (counts @ sums) / (counts @ n). Replicate b equals `eas(readout.select_docs(draw_b))` for the
    document draws of `np.random.default_rng(seed).integers(0, n_docs, (n_boot, n_docs))`.
    Deterministic given seed. With a single document the interval has zero width (a warning says so).
    eas_kwargs: alpha, similarity, include_embedding, index_base, aggregate, k (as in `eas`).
    """
    _check_boot(n_boot, ci)
    allowed = {"alpha", "similarity", "include_embedding", "index_base", "aggregate", "k"}
    unknown = set(eas_kwargs) - allowed
    if unknown:
        raise TypeError(f"unknown EAS option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    opts = dict(alpha=DEFAULT_ALPHA, similarity=DEFAULT_SIMILARITY, include_embedding=DEFAULT_INCLUDE_EMBEDDING,
                index_base=DEFAULT_INDEX_BASE, aggregate=DEFAULT_AGGREGATE, k=None)
    opts.update(eas_kwargs)
    st = _setup(readout, opts["alpha"], opts["similarity"], opts["include_embedding"], opts["index_base"],
                opts["aggregate"], opts["k"])
    point = _eas_from_setup(st)
    n_docs, order, starts = _doc_groups(readout)
    if n_docs < 2:
        warnings.warn("bootstrap over a single document: the interval has zero width", RuntimeWarning, stacklevel=2)
    sum_S, cnt = _doc_sums(st.S, order, starts)
    counts = _draw_counts(int(seed), n_docs, int(n_boot))
    den = counts @ cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_S = (counts @ sum_S) / den
        if st.aggregate == "mean_of_power":
            sum_Sa, _ = _doc_sums(np.power(st.S, st.alpha), order, starts)
            P = (counts @ sum_Sa) / den
        else:
            P = np.power(mean_S, st.alpha)
    A = P * np.power(st.w, 1.0 - st.alpha)
    samples = A.mean(axis=1)
    lo, hi = _quantiles(samples, ci)
    S_lo, S_hi = _quantiles(mean_S, ci)
    A_lo, A_hi = _quantiles(A, ci)
    curve = point.curve.copy()
    curve["S_lo"], curve["S_hi"], curve["A_lo"], curve["A_hi"] = S_lo, S_hi, A_lo, A_hi
    c = point.ceiling
    params = dict(point.params, n_boot=int(n_boot), ci=float(ci), seed=int(seed), unit="document")
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
        _check_boot(n_boot, ci)
        n_docs, order, starts = _doc_groups(readout)
        sums, cnt = _doc_sums(S, order, starts)
        counts = _draw_counts(int(seed), n_docs, int(n_boot))
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (counts @ sums) / (counts @ cnt)
        lo, hi = _quantiles(boot, ci)
    layers = np.arange(L + 1)
    return pd.DataFrame({"model": readout.meta.get("model", ""), "similarity": similarity, "layer": layers,
                         "rel_depth": layers / L, "S": mean, "S_std": std, "n_tokens": n, "S_lo": lo, "S_hi": hi})


# ---------------------------------------------------------------------------
# sensitivity of rankings to the open choices
# ---------------------------------------------------------------------------
def sensitivity(readouts: dict[str, Readout], alphas=(0.25, 0.5, 0.75),
                similarities=("logit_cos", "hidden_cos", "topk_overlap", "kl", "top1"),
                aggregates=(DEFAULT_AGGREGATE,), include_embedding: bool = DEFAULT_INCLUDE_EMBEDDING,
                index_base: int = DEFAULT_INDEX_BASE, k: int | None = None, rank_by: str = "normalised") -> pd.DataFrame:
    """EAS of every model under every (alpha, similarity, aggregate), with the models' rank in each.

    Returns one row per (model, alpha, similarity, aggregate): eas, ceiling, normalised, n_layers
    and rank (1 = most suitable, ties share the lowest rank) among the models of that
    configuration. rank_by: "normalised" (default: models of different depth have different
    ceilings, so raw EAS favours shallower or deeper models by construction) or "eas" (the
    paper's raw score). Each readout's similarity matrix is computed once per similarity.
    """
    if rank_by not in ("normalised", "eas"):
        raise ValueError(f"rank_by must be 'normalised' or 'eas', got {rank_by!r}")
    if not readouts:
        raise ValueError("sensitivity needs at least one readout")
    rows = []
    for model, ro in readouts.items():
        _check_readout(ro)
        for sim in similarities:
            S_full = similarity(ro, sim, k=k if sim == "topk_overlap" else None)
            for agg in aggregates:
                for a in alphas:
                    st = _setup(ro, a, sim, include_embedding, index_base, agg,
                                k if sim == "topk_overlap" else None, S_full=S_full)
                    r = _eas_from_setup(st)
                    rows.append(dict(model=model, alpha=st.alpha, similarity=sim, aggregate=agg, eas=r.value,
                                     ceiling=r.ceiling, normalised=r.normalised, n_layers=ro.n_layers))
    frame = pd.DataFrame(rows)
    frame["rank"] = (frame.groupby(["alpha", "similarity", "aggregate"])[rank_by]
                     .rank(ascending=False, method="min").astype(int))
    return frame


def kendall_tau(x, y) -> float:
    """Kendall's tau-b between two paired sequences (ties handled); NaN with < 2 pairs or no variation.

    tau_b = (C - D) / sqrt((P - T_x) (P - T_y)), P = n(n-1)/2 pairs, C/D concordant/discordant
    pairs, T_x/T_y pairs tied in x/y.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("kendall_tau needs two 1-D sequences of the same length")
    n = len(x)
    if n < 2:
        return float("nan")
    iu = np.triu_indices(n, 1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    s = float((dx * dy).sum())
    pairs = n * (n - 1) / 2
    tx = float((dx == 0).sum())
    ty = float((dy == 0).sum())
    den = math.sqrt((pairs - tx) * (pairs - ty))
    return s / den if den > 0 else float("nan")


def rank_stability(frame: pd.DataFrame, reference: dict | None = None) -> pd.DataFrame:
    """How much each configuration's ranking of models agrees with a reference configuration.

    frame: output of `sensitivity`. reference: the configuration to compare with, default the EAS
    defaults {alpha: 0.5, similarity: "logit_cos", aggregate: "power_of_mean"}. Returns one row
    per configuration: alpha, similarity, aggregate, kendall_tau (tau-b between its ranks and the
    reference's, over the models both have), same_top (the same model ranked first), top_model,
    n_models. tau = 1: identical order; -1: reversed.
    """
    ref = dict(alpha=DEFAULT_ALPHA, similarity=DEFAULT_SIMILARITY, aggregate=DEFAULT_AGGREGATE)
    ref.update(reference or {})
    keys = ["alpha", "similarity", "aggregate"]
    if "aggregate" not in frame:
        frame = frame.assign(aggregate=DEFAULT_AGGREGATE)
    sel = np.ones(len(frame), dtype=bool)
    for key in keys:
        sel &= np.isclose(frame[key], ref[key]) if key == "alpha" else (frame[key] == ref[key]).to_numpy()
    ref_rows = frame[sel]
    if ref_rows.empty:
        raise ValueError(f"the reference configuration {ref} is not in the frame")
    ref_rank = ref_rows.set_index("model")["rank"]
    ref_top = ref_rank.idxmin()
    out = []
    for cfg, g in frame.groupby(keys, sort=True):
        r = g.set_index("model")["rank"]
        common = r.index.intersection(ref_rank.index)
        top = r.idxmin()
        out.append(dict(zip(keys, cfg), kendall_tau=kendall_tau(r[common].to_numpy(), ref_rank[common].to_numpy()),
                        same_top=bool(top == ref_top), top_model=top, n_models=len(common)))
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------
# effective-depth markers
# ---------------------------------------------------------------------------
def _check_min_layer(min_layer, n_layers):
    if isinstance(min_layer, bool) or int(min_layer) != min_layer or not (0 <= min_layer <= n_layers):
        raise ValueError(f"min_layer must be an integer in 0..{n_layers}, got {min_layer!r}")
    return int(min_layer)


def _first_settled(ok: np.ndarray, min_layer: int) -> np.ndarray:
    """ok [..., L+1] bool with the last column True -> first index >= min_layer from which ok stays True."""
    stays = np.flip(np.logical_and.accumulate(np.flip(ok, -1), axis=-1), -1)
    stays[..., :min_layer] = False
    stays[..., -1] = True
    return np.argmax(stays, axis=-1)


def settle_layer(readout: Readout, statistic: str = "kl_to_final", threshold: float = 0.1, below: bool = True,
                 per_token: bool = False, min_layer: int = 1):
    """First layer from which a statistic stays past a threshold at every later layer.

    below=True: the statistic must be < threshold (e.g. KL to final); below=False: >= threshold
    (e.g. topk_overlap). per_token=False: applied to the token mean per layer (NaN skipped),
    returns an int; per_token=True: per token, returns an int array (NaN never counts as settled).
    The final layer L always counts as settled, so the answer is in min_layer..L. min_layer
    (default 1) leaves out the embedding layer, as EAS and the exit rules do.
    """
    _check_readout(readout)
    L = readout.n_layers
    min_layer = _check_min_layer(min_layer, L)
    x = _stat(readout, statistic, "settle_layer").astype(np.float64)
    if not per_token:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x = np.nanmean(x, axis=0)
    ok = (x < threshold) if below else (x >= threshold)
    ok[..., -1] = True
    res = _first_settled(ok, min_layer)
    return res.astype(np.int64) if per_token else int(res)


def kl_settle_layer(readout: Readout, threshold: float = 0.1, per_token: bool = False, min_layer: int = 1):
    """First layer where KL(p_L || p_l) falls below threshold (nats) and stays below at every later layer.

    per_token=False (default): on the token-mean KL per layer, returns an int; True: per token.
    Default threshold 0.1 nats: exp(-0.1) = 0.905, i.e. the p_L-weighted geometric mean of
    p_l/p_L is within ~10% of 1. It is a convention, not from the paper: sweep it.
    """
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number >= 0 (nats), got {threshold!r}") from None
    if not t >= 0:
        raise ValueError(f"threshold must be >= 0 (nats), got {threshold!r}")
    return settle_layer(readout, "kl_to_final", t, below=True, per_token=per_token, min_layer=min_layer)


def saturated_matrix(top1: np.ndarray) -> np.ndarray:
    """[n, L+1] bool: top1 at layer l and at every later layer equals the final top1."""
    top1 = np.asarray(top1)
    eq = top1 == top1[:, -1:]
    return np.flip(np.logical_and.accumulate(np.flip(eq, 1), axis=1), 1)


def saturation_layer(readout: Readout, min_layer: int = 1) -> np.ndarray:
    """Per token, the saturation event: the earliest layer l >= min_layer such that top1 equals the
    final top1 at l and every later layer. Always <= L (the final layer trivially agrees).

    min_layer default 1: layer 0 (embeddings) is not a place to stop; 0 includes it.
    """
    _check_readout(readout)
    L = readout.n_layers
    min_layer = _check_min_layer(min_layer, L)
    return _first_settled(saturated_matrix(readout.stats["top1"]), min_layer).astype(np.int64)


def depth_summary(layers, n_layers: int) -> dict:
    """Mean/median of per-token layers, also as depth fractions, and the share only settled at L."""
    layers = np.asarray(layers, dtype=np.float64)
    if layers.size == 0:
        raise ValueError("no tokens to summarise")
    return dict(mean=float(layers.mean()), median=float(np.median(layers)),
                mean_rel=float(layers.mean() / n_layers), median_rel=float(np.median(layers) / n_layers),
                frac_at_final=float((layers == n_layers).mean()), n_tokens=int(layers.size), n_layers=int(n_layers))


def saturation_summary(readout: Readout, min_layer: int = 1) -> dict:
    """`depth_summary` of `saturation_layer`: mean, median, mean_rel, median_rel, frac_at_final, n_tokens."""
    return depth_summary(saturation_layer(readout, min_layer), readout.n_layers)


# ---------------------------------------------------------------------------
# the paper's reported values
# ---------------------------------------------------------------------------
def reported_eas(path=None) -> pd.DataFrame:
    """The EAS values reported for arXiv 2603.23701 (secondary source: reading notes; unverified).

    Columns: model, family, eas, generation, notes, source. Reads data/paper_reported.csv.
    """
    p = Path(path) if path is not None else REPORTED_CSV
    if not p.exists():
        raise FileNotFoundError(f"reported EAS table not found at {p} (it ships in the repository's data/ folder)")
    return pd.read_csv(p)
