"""Paired shift of one model's readout when only its weights' precision changes (a quantised copy beside the
original): both are read on the same tokens, so the difference of EAS / ceiling, and of each layer's
similarity to the final layer, gets a paired document bootstrap (one document draw for both readouts).

`eas_shift(base, other)` -> other - base of EAS / ceiling (or raw EAS) with its percentile interval;
`layer_shift(base, other)` -> per layer, both token means and their difference with its interval.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..lens.result import Readout
from .bootstrap import check_boot, doc_groups, doc_sums, draw_counts, draw_docs, percentile_interval, eas_replicates
from .eas import eas
from .paired import PAIRED_INTERVAL_KIND
from .similarity import similarity as _similarity

__all__ = ["eas_shift", "layer_shift", "PAIRED_INTERVAL_KIND"]


def check_same_tokens(base: Readout, other: Readout) -> int:
    """Number of documents; ValueError unless both readouts hold the same tokens (documents, positions, ids)
    and the same number of layers, which a paired comparison needs."""
    for field in ("doc", "position", "token"):
        if not np.array_equal(np.asarray(getattr(base, field)), np.asarray(getattr(other, field))):
            raise ValueError(f"a paired shift needs both readouts on the same tokens; their {field!r} differ "
                             "(read both with the same workload, documents, tokenizer and max_tokens)")
    if base.n_layers != other.n_layers:
        raise ValueError(f"a paired shift needs the same depth, got {base.n_layers} and {other.n_layers} layers")
    return len(np.unique(base.doc))


def eas_shift(base: Readout, other: Readout, *, value: str = "normalised", n_boot: int = 1000, ci: float = 0.95,
              seed: int = 0, **eas_kwargs) -> dict:
    """EAS / ceiling (value="normalised") or raw EAS of `other` minus that of `base`, with the percentile interval
    of a paired document bootstrap (widened to include the point estimate, as `bootstrap_eas` does).
    eas_kwargs: similarity, alpha, ... as in `eas`.

    Returns base, other, shift, lo, hi, ci, n_boot, boot_seed, n_docs, interval_kind."""
    if value not in ("normalised", "eas"):
        raise ValueError(f"value must be 'normalised' or 'eas', got {value!r}")
    n_boot, ci, seed = check_boot(n_boot, ci, seed)
    n_docs = check_same_tokens(base, other)
    points = [getattr(eas(r, **eas_kwargs), "normalised" if value == "normalised" else "value") for r in (base, other)]
    draws = draw_docs(seed, n_docs, n_boot)
    reps = eas_replicates(other, draws, value=value, **eas_kwargs) - eas_replicates(base, draws, value=value,
                                                                                     **eas_kwargs)
    lo, hi = percentile_interval(reps, ci)
    shift = float(points[1] - points[0])
    return dict(base=float(points[0]), other=float(points[1]), shift=shift, lo=float(min(lo, shift)),
                hi=float(max(hi, shift)), ci=ci, n_boot=n_boot, boot_seed=seed, n_docs=n_docs,
                interval_kind=PAIRED_INTERVAL_KIND)


def layer_shift(base: Readout, other: Readout, *, similarity: str = "top1", n_boot: int = 1000, ci: float = 0.95,
                seed: int = 0) -> pd.DataFrame:
    """Per layer 0..L: token-mean similarity to the final layer of `base` and `other` (S_base, S_other), the
    shift S_other - S_base and its paired document-bootstrap percentile interval (lo, hi)."""
    n_boot, ci, seed = check_boot(n_boot, ci, seed)
    check_same_tokens(base, other)
    n_docs, order, starts = doc_groups(base)
    counts = draw_counts(seed, n_docs, n_boot)
    means, reps = [], []
    for r in (base, other):
        sums, cnt = doc_sums(_similarity(r, similarity), order, starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(sums.sum(0) / cnt.sum(0))
            reps.append((counts @ sums) / (counts @ cnt))
    lo, hi = percentile_interval(reps[1] - reps[0], ci)
    layers = np.arange(base.n_layers + 1)
    return pd.DataFrame({"layer": layers, "rel_depth": layers / base.n_layers, "similarity": similarity,
                         "S_base": means[0], "S_other": means[1], "shift": means[1] - means[0], "lo": lo, "hi": hi})
