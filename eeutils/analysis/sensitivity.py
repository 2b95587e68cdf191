"""How much a ranking of models by EAS moves when the metric's open choices change."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..lens.result import Readout
from .eas import (DEFAULT_AGGREGATE, DEFAULT_ALPHA, DEFAULT_INCLUDE_EMBEDDING, DEFAULT_INDEX_BASE, DEFAULT_SIMILARITY,
                  _eas_from_setup, _setup)
from .similarity import _check_readout, similarity

__all__ = ["sensitivity", "kendall_tau", "rank_stability"]


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
