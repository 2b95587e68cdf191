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

Layer numbering follows `eeutils.lens.result`: readout layer 0 = embeddings (input of block 1),
readout layer r = output of block r, readout layer L = output of the last block (the final layer).

EAS has a ceiling below 1 (a model whose every layer equals the final one scores
mean_l w_l^(1-alpha), which depends on L and alpha), so `EASResult` reports the value, that
ceiling and value / ceiling. Compare models of different depth with the normalised value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core.checks import check_integer, check_real, is_real
from ..lens.result import Readout
from .similarity import DEFAULT_SIMILARITY, SIMILARITY_KINDS, check_readout, similarity

__all__ = ["AGGREGATES", "EASResult", "eas", "eas_ceiling", "DEFAULT_ALPHA", "DEFAULT_SIMILARITY",
           "DEFAULT_AGGREGATE", "DEFAULT_INDEX_BASE", "DEFAULT_INCLUDE_EMBEDDING"]

AGGREGATES = ("power_of_mean", "mean_of_power")

# Defaults of the open choices (see `eas` for the reasons).
DEFAULT_ALPHA = 0.5
DEFAULT_AGGREGATE = "power_of_mean"
DEFAULT_INDEX_BASE = 1
DEFAULT_INCLUDE_EMBEDDING = False


def _check_alpha(alpha) -> float:
    return check_real("alpha", alpha, 0, 1, hint=" (weight of similarity vs savings)")


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
    if not is_real(index_base) or index_base not in (0, 1):
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
    n_layers = check_integer("n_layers", n_layers, 1)
    _, _, w = _layer_selection(n_layers, include_embedding, index_base)
    return float(np.mean(np.power(w, 1.0 - alpha)))


def eas_setup(readout: Readout, alpha, similarity_kind, include_embedding, index_base, aggregate, k,
              S_full: np.ndarray | None = None) -> _Setup:
    """The checked inputs of one EAS (the [tokens, layers] similarities and layer weights), which
    `eas_from_setup` turns into the value; the bootstrap and the sensitivity grid reuse one setup."""
    check_readout(readout)
    alpha = _check_alpha(alpha)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not isinstance(similarity_kind, str) or similarity_kind not in SIMILARITY_KINDS:
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


def eas_from_setup(st: _Setup) -> EASResult:
    """The EAS (value, ceiling, per-layer curve) of a setup from `eas_setup`."""
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
    st = eas_setup(readout, alpha, similarity, include_embedding, index_base, aggregate, k)
    return eas_from_setup(st)
