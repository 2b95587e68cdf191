"""How much a ranking of models by EAS moves when the metric's open choices change.

The open choices (see `eeutils.analysis.eas.eas`): alpha, the similarity, K of top-K overlap, the
averaging order (mean of S before or after the power), the layer indexing of w_l (0- or 1-based),
whether the embedding layer counts, and the score ranked (raw EAS or EAS / ceiling). `sensitivity`
computes every model's EAS over a grid of them; `rank_stability` compares each grid point's ranking
with a reference one; `choice_stability` varies one choice at a time from the reference and
`stability_summary` condenses that into one row per choice.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..core.checks import check_frame
from ..lens.result import Readout
from .eas import (DEFAULT_AGGREGATE, DEFAULT_ALPHA, DEFAULT_INCLUDE_EMBEDDING, DEFAULT_INDEX_BASE, DEFAULT_SIMILARITY,
                  eas_from_setup, eas_setup)
from .similarity import check_readout, similarity

__all__ = ["sensitivity", "kendall_tau", "rank_stability", "choice_stability", "stability_summary", "CONFIG_KEYS",
           "CHOICES"]

# the columns that identify one configuration of the metric (k = 0: not top-K overlap)
CONFIG_KEYS = ("alpha", "similarity", "k", "aggregate", "include_embedding", "index_base")
# what `choice_stability` varies one at a time: a config column, or "score" (raw EAS vs normalised)
CHOICES = ("alpha", "similarity", "k", "aggregate", "index_base", "include_embedding", "score")
_SCORES = {"normalised": "rank_normalised", "eas": "rank_eas"}
_SOURCE = "eeutils.metrics.sensitivity"


def _as_tuple(x) -> tuple:
    """A sequence of values as a tuple; one value (a str, a number, None) as a tuple of one."""
    return tuple(x) if isinstance(x, (list, tuple, range, np.ndarray, pd.Series)) else (x,)


def sensitivity(readouts: dict[str, Readout], alphas=(0.25, 0.5, 0.75),
                similarities=("logit_cos", "hidden_cos", "topk_overlap", "kl", "top1"),
                aggregates=(DEFAULT_AGGREGATE,), include_embedding=DEFAULT_INCLUDE_EMBEDDING,
                index_base=DEFAULT_INDEX_BASE, k=None, rank_by: str = "normalised") -> pd.DataFrame:
    """EAS of every model under every combination of the metric's choices, with the models' rank in each.

    alphas, similarities, aggregates: values to sweep. include_embedding, index_base, k: one value or
    a sequence of values (k: K values for "topk_overlap" only; None = the readout's k). The
    combination include_embedding=True with index_base=0 is undefined (w > 1) and left out.
    Returns one row per (model, configuration): the CONFIG_KEYS (k = the K used for topk_overlap,
    0 for other similarities), eas, ceiling, normalised, n_layers, rank_eas / rank_normalised
    (1 = most suitable, ties share the lowest rank, among the models of that configuration) and
    rank = the rank by `rank_by` ("normalised", default: models of different depth have different
    ceilings, so raw EAS favours some depths by construction; or "eas", the paper's raw score).
    Each readout's similarity matrix is computed once per (similarity, K).
    """
    if not isinstance(rank_by, str) or rank_by not in _SCORES:
        raise ValueError(f"rank_by must be 'normalised' or 'eas', got {rank_by!r}")
    if readouts is not None and not isinstance(readouts, dict):
        raise TypeError(f"readouts must be a dict {{model name: Readout}}, got {type(readouts).__name__}")
    if not readouts:
        raise ValueError("sensitivity needs at least one readout")
    alphas, similarities, aggregates = _as_tuple(alphas), _as_tuple(similarities), _as_tuple(aggregates)
    layouts = [(e, b) for e in _as_tuple(include_embedding) for b in _as_tuple(index_base) if not (e and b == 0)]
    if not layouts:
        raise ValueError("include_embedding=True needs index_base=1; no valid (include_embedding, index_base) pair")
    rows = []
    for model, ro in readouts.items():
        check_readout(ro)
        for sim in similarities:
            for kk in (_as_tuple(k) if sim == "topk_overlap" else (None,)):
                S_full = similarity(ro, sim, k=kk)
                for agg in aggregates:
                    for emb, base in layouts:
                        for a in alphas:
                            st = eas_setup(ro, a, sim, emb, base, agg, kk, S_full=S_full)
                            r = eas_from_setup(st)
                            rows.append(dict(model=model, alpha=st.alpha, similarity=sim, k=int(st.params["k"] or 0),
                                             aggregate=agg, include_embedding=bool(emb), index_base=int(base),
                                             eas=r.value, ceiling=r.ceiling, normalised=r.normalised,
                                             n_layers=ro.n_layers))
    frame = pd.DataFrame(rows)
    groups = frame.groupby(list(CONFIG_KEYS))
    frame["rank_eas"] = groups["eas"].rank(ascending=False, method="min").astype(int)
    frame["rank_normalised"] = groups["normalised"].rank(ascending=False, method="min").astype(int)
    frame["rank"] = frame[_SCORES[rank_by]]
    return frame


def kendall_tau(x, y) -> float:
    """Kendall's tau-b between two paired sequences (ties handled); NaN with < 2 pairs or no variation.

    tau_b = (C - D) / sqrt((P - T_x) (P - T_y)), P = n(n-1)/2 pairs, C/D concordant/discordant
    pairs, T_x/T_y pairs tied in x/y.
    """
    try:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"kendall_tau needs two sequences of numbers, got x={x!r:.40} and y={y!r:.40}") from None
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


def _with_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Frames from before the layout / K columns existed get their defaults."""
    fill = dict(aggregate=DEFAULT_AGGREGATE, include_embedding=DEFAULT_INCLUDE_EMBEDDING,
                index_base=DEFAULT_INDEX_BASE, k=0)
    return frame.assign(**{c: v for c, v in fill.items() if c not in frame})


def _reference(frame: pd.DataFrame, reference: dict | None) -> dict:
    """The reference configuration: the EAS defaults, overridden by `reference`; k defaults to the K the
    frame used for topk_overlap when the reference similarity is topk_overlap."""
    ref = dict(alpha=DEFAULT_ALPHA, similarity=DEFAULT_SIMILARITY, aggregate=DEFAULT_AGGREGATE,
               include_embedding=DEFAULT_INCLUDE_EMBEDDING, index_base=DEFAULT_INDEX_BASE, k=None)
    if reference is not None and not isinstance(reference, dict):
        raise TypeError(f"reference must be a dict of configuration choices {list(CONFIG_KEYS)}, got "
                        f"{type(reference).__name__}")
    unknown = sorted(set(reference or {}) - set(CONFIG_KEYS), key=str)
    if unknown:
        raise ValueError(f"reference has unknown choice(s) {unknown}; its keys are {list(CONFIG_KEYS)}")
    ref.update(reference or {})
    if ref["k"] is None:
        ref["k"] = _default_k(frame) if ref["similarity"] == "topk_overlap" else 0
    return ref


def _default_k(frame: pd.DataFrame) -> int:
    """The K taken as topk_overlap's default: the largest in the frame (the readout's k unless told)."""
    ks = frame.loc[frame.similarity == "topk_overlap", "k"]
    return int(ks.max()) if len(ks) else 0


def _select(frame: pd.DataFrame, cfg: dict) -> pd.DataFrame:
    sel = np.ones(len(frame), dtype=bool)
    for key in CONFIG_KEYS:
        sel &= np.isclose(frame[key], cfg[key]) if key == "alpha" else (frame[key] == cfg[key]).to_numpy()
    return frame[sel]


def _compare(rows: pd.DataFrame, ref_rank: pd.Series, rank_col: str) -> dict:
    r = rows.set_index("model")[rank_col]
    common = r.index.intersection(ref_rank.index)
    top = r.idxmin()
    return dict(kendall_tau=kendall_tau(r[common].to_numpy(), ref_rank[common].to_numpy()),
                same_top=bool(top == ref_rank.idxmin()), top_model=top, n_models=len(common))


def rank_stability(frame: pd.DataFrame, reference: dict | None = None) -> pd.DataFrame:
    """How much each configuration's ranking of models agrees with a reference configuration.

    frame: output of `sensitivity`. reference: the configuration to compare with, default the EAS
    defaults (alpha 0.5, logit_cos, power_of_mean, no embedding layer, 1-based w_l). Returns one row
    per configuration in the frame: its CONFIG_KEYS, kendall_tau (tau-b between its ranks and the
    reference's, over the models both have), same_top (the same model ranked first), top_model,
    n_models. tau = 1: identical order; -1: reversed.
    """
    frame = _with_defaults(check_frame("frame", frame, ("model", "alpha", "similarity", "rank"), _SOURCE))
    ref = _reference(frame, reference)
    ref_rows = _select(frame, ref)
    if ref_rows.empty:
        raise ValueError(f"the reference configuration {ref} is not in the frame")
    ref_rank = ref_rows.set_index("model")["rank"]
    out = []
    for cfg, g in frame.groupby(list(CONFIG_KEYS), sort=True):
        out.append(dict(zip(CONFIG_KEYS, cfg), **_compare(g, ref_rank, "rank")))
    return pd.DataFrame(out)


def choice_stability(frame: pd.DataFrame, reference: dict | None = None) -> pd.DataFrame:
    """Vary one choice at a time from the reference configuration and compare the model ranking.

    For each of CHOICES and each value of it in the frame: the configuration equal to the reference
    except for that choice (for "k", the reference with similarity topk_overlap; for "score", the
    reference configuration ranked by raw EAS vs by EAS / ceiling) is compared with the reference
    ranking (by normalised EAS; for "k", topk_overlap at the reference K, by default the largest K in
    the frame; topk_overlap as a "similarity" value also uses that K). Returns one row per
    (choice, value): choice, value (as text), kendall_tau, same_top, top_model, n_models. Values the
    frame lacks for the reference's other choices are left out.
    """
    frame = _with_defaults(check_frame("frame", frame, ("model", "alpha", "similarity"), _SOURCE))
    if "rank_normalised" not in frame:
        raise ValueError("choice_stability needs a frame from `sensitivity` (with rank_eas / rank_normalised)")
    ref = _reference(frame, reference)
    out = []
    for choice in CHOICES:
        base = dict(ref)
        if choice == "k":
            base["similarity"] = "topk_overlap"
            ks = frame.loc[frame.similarity == "topk_overlap", "k"]
            if ks.empty:
                continue
            base["k"] = _default_k(frame) if ref["similarity"] != "topk_overlap" else ref["k"]
        ref_rows = _select(frame, base)
        if ref_rows.empty:
            continue
        ref_rank = ref_rows.set_index("model")["rank_normalised"]
        if choice == "score":
            for score, col in _SCORES.items():
                out.append(dict(choice="score", value=score, **_compare(ref_rows, ref_rank, col)))
            continue
        values = frame.loc[frame.similarity == "topk_overlap", "k"] if choice == "k" else frame[choice]
        for v in sorted(values.unique(), key=str):
            cfg = {**base, choice: v}
            if choice == "similarity":  # topk_overlap at its default K, every other similarity without K
                cfg["k"] = _default_k(frame) if v == "topk_overlap" else 0
            rows = _select(frame, cfg)
            if rows.empty:
                continue
            value = f"{v:g}" if isinstance(v, float) else str(v)
            out.append(dict(choice=choice, value=value, **_compare(rows, ref_rank, "rank_normalised")))
    return pd.DataFrame(out, columns=["choice", "value", "kendall_tau", "same_top", "top_model", "n_models"])


def stability_summary(choices: pd.DataFrame) -> pd.DataFrame:
    """One row per choice from `choice_stability`: n_values, min_tau (the worst agreement with the
    reference ranking), n_reordered (values whose ranking differs: tau < 1), top_changes (values that
    put another model first)."""
    check_frame("choices", choices, ("choice", "kendall_tau", "same_top"), "eeutils.metrics.choice_stability")
    rows = []
    for choice, g in choices.groupby("choice", sort=False):
        tau = g.kendall_tau.to_numpy(dtype=float)
        rows.append(dict(choice=choice, n_values=len(g), min_tau=float(np.nanmin(tau)) if np.isfinite(tau).any()
                         else float("nan"), n_reordered=int((tau < 1 - 1e-9).sum()),
                         top_changes=int((~g.same_top).sum())))
    return pd.DataFrame(rows, columns=["choice", "n_values", "min_tau", "n_reordered", "top_changes"])
