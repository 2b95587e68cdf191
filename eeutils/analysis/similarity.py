"""Similarity S_tl of layer l's readout to the final layer's, per token, in [0, 1] (the EAS's S)."""
from __future__ import annotations

import numpy as np

from ..core.checks import is_real
from ..lens.result import Readout

__all__ = ["SIMILARITY_KINDS", "similarity"]

# kind -> formula of the per-token similarity S_tl in [0, 1]
SIMILARITY_KINDS = {
    "logit_cos": "clip(cos(z_l, z_L), 0, 1): cosine of the readout logits; negative cosines count as 0",
    "hidden_cos": "clip(cos(h_l, h_L), 0, 1): cosine of residual-stream states (before the final norm)",
    "topk_overlap": "|topK(z_l) ∩ topK(z_L)| / K  (K = the readout's k, or a smaller k recomputed from readout.topk)",
    "kl": "exp(-KL(p_L || p_l)): 1 iff identical distributions, in (0, 1]; 0.69 nats -> 0.5",
    "top1": "1.0 if argmax z_l == argmax z_L else 0.0",
}
DEFAULT_SIMILARITY = "logit_cos"


def check_readout(readout: Readout, action: str = "measure") -> None:
    """The checks every analysis of a readout needs (a Readout, some tokens, at least one block)."""
    if not isinstance(readout, Readout):
        raise TypeError(f"readout: expected an eeutils.lens.result.Readout (from eeutils.readout or Readout.load), "
                        f"got {type(readout).__name__}")
    if readout.n_tokens == 0:
        raise ValueError(f"the readout has 0 tokens: nothing to {action} (check the workload and any token selection)")
    if "top1" not in readout.stats:
        raise ValueError("the readout has no 'top1' statistic, which defines its layers")
    if readout.n_layers < 1:
        raise ValueError(f"the readout has no block layers (only layer 0): nothing to {action} (L must be >= 1)")


def readout_stat(readout: Readout, name: str, for_what: str) -> np.ndarray:
    """The readout's statistic `name`, or ValueError saying that `for_what` needs it."""
    if not isinstance(name, str) or name not in readout.stats:
        raise ValueError(f"{for_what} needs the statistic {name!r}, which this readout lacks "
                         f"(it has: {sorted(readout.stats)})")
    return np.asarray(readout.stats[name])




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
    check_readout(readout)
    if not isinstance(kind, str) or kind not in SIMILARITY_KINDS:
        raise ValueError(f"unknown similarity kind {kind!r}; choose one of {sorted(SIMILARITY_KINDS)}")
    if k is not None and kind != "topk_overlap":
        raise ValueError(f"k only applies to similarity='topk_overlap', not {kind!r}")
    if kind in ("logit_cos", "hidden_cos"):
        s = readout_stat(readout, kind, f"similarity {kind!r}").astype(np.float64)
        return np.clip(s, 0.0, 1.0)
    if kind == "kl":
        kl = readout_stat(readout, "kl_to_final", "similarity 'kl'").astype(np.float64)
        return np.exp(-np.clip(kl, 0.0, None))
    if kind == "top1":
        top1 = readout_stat(readout, "top1", "similarity 'top1'")
        return (top1 == top1[:, -1:]).astype(np.float64)
    # topk_overlap
    k_stored = readout.k
    if k is None:
        if "topk_overlap" in readout.stats:
            return np.clip(readout.stats["topk_overlap"].astype(np.float64), 0.0, 1.0)
        k = k_stored
    if not is_real(k) or not np.isfinite(k) or int(k) != k or not (1 <= int(k) <= k_stored):
        raise ValueError(f"k must be an integer in 1..{k_stored} (the readout stored top-{k_stored} ids), got {k!r}")
    k = int(k)
    if k == k_stored and "topk_overlap" in readout.stats:
        return np.clip(readout.stats["topk_overlap"].astype(np.float64), 0.0, 1.0)
    return _topk_overlap_from_ids(np.asarray(readout.topk), k)


_similarity = similarity  # for functions whose `similarity` parameter shadows the name
