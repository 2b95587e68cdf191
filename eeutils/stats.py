"""Per-chunk statistic kernels: reduce one layer's [chunk x vocab] logits to per-token numbers.

Everything here is fp32. The final layer's distribution is computed once per
chunk (`FinalRef`) and reused for every layer, and each layer costs a small,
fixed number of passes over [chunk x vocab]: one top-k, one logsumexp, one exp,
a few row dot products (no materialised products) and one comparison.

KL(p_f || p_l) is taken from reductions rather than a materialised difference:
    KL = sum_v p_f log p_f - sum_v p_f z_l + logsumexp(z_l)
entropy from H(p_l) = logsumexp(z_l) - sum_v p_l z_l.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a[c, v] * b[c, v] without allocating the product (a batched matmul)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _cos(a: torch.Tensor, b: torch.Tensor, b_norm: torch.Tensor | None = None) -> torch.Tensor:
    a_norm = _rowdot(a, a).sqrt()
    b_norm = _rowdot(b, b).sqrt() if b_norm is None else b_norm
    return _rowdot(a, b) / (a_norm * b_norm).clamp_min(1e-30)


@dataclass
class FinalRef:
    """What every layer is compared against, for one chunk of tokens."""

    logits: torch.Tensor  # [C, V] fp32
    probs: torch.Tensor  # [C, V]
    neg_entropy: torch.Tensor  # [C] sum p log p
    norm: torch.Tensor  # [C] ||z_f||
    top1: torch.Tensor  # [C]
    topk: torch.Tensor  # [C, k]
    hidden: torch.Tensor  # [C, d] fp32, last block's output

    @classmethod
    def build(cls, logits: torch.Tensor, hidden: torch.Tensor, k: int) -> "FinalRef":
        lse = torch.logsumexp(logits, dim=-1)
        probs = torch.exp(logits - lse[:, None])
        neg_entropy = _rowdot(probs, logits) - lse
        topk = torch.topk(logits, k, dim=-1).indices
        return cls(logits, probs, neg_entropy, _rowdot(logits, logits).sqrt(), topk[:, 0], topk, hidden.float())


class NonFiniteLogits(FloatingPointError):
    """NaN or inf in a layer's logits; says which layer and token."""


def chunk_statistics(z: torch.Tensor, h: torch.Tensor, h_prev: torch.Tensor | None, ref: FinalRef,
                     target: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """All statistics of one layer for one chunk.

    z: [C, V] fp32 logits of this layer (after the model's logit transforms);
    h, h_prev: [C, d] residual stream at this and the previous layer (h_prev None at layer 0);
    target: [C] next-token ids, -1 where there is none.
    Returns tensors of shape [C] plus "topk" [C, k].
    """
    lse = torch.logsumexp(z, dim=-1)
    bad = ~torch.isfinite(lse)
    if bool(bad.any()):
        raise NonFiniteLogits(int(bad.nonzero()[0, 0]))
    vals, ids = torch.topk(z, k, dim=-1)
    top_p = torch.exp(vals[:, :2] - lse[:, None])
    p = torch.exp(z - lse[:, None])
    entropy = lse - _rowdot(p, z)
    kl = (ref.neg_entropy - _rowdot(ref.probs, z) + lse).clamp_min(0.0)
    has_t = target >= 0
    ce = torch.full_like(lse, float("nan"))
    if bool(has_t.any()):
        t = target.clamp_min(0)
        ce = torch.where(has_t, lse - z.gather(1, t[:, None]).squeeze(1), ce)
    z_at_final = z.gather(1, ref.top1[:, None])
    rank = (z > z_at_final).sum(-1)
    hf = h.float()
    hidden_cos = _cos(hf, ref.hidden)
    hidden_prev = torch.ones_like(lse) if h_prev is None else _cos(hf, h_prev.float())
    overlap = (ids[:, :, None] == ref.topk[:, None, :]).any(-1).sum(-1).float() / k
    return {
        "top1": ids[:, 0],
        "max_prob": top_p[:, 0],
        "margin": top_p[:, 0] - (top_p[:, 1] if k > 1 else torch.zeros_like(lse)),
        "entropy": entropy.clamp_min(0.0),
        "kl_to_final": kl,
        "ce": ce,
        "rank_of_final": rank,
        "logit_cos": _cos(z, ref.logits, ref.norm),
        "hidden_cos": hidden_cos,
        "hidden_cos_prev": hidden_prev,
        "topk_overlap": overlap,
        "topk": ids,
    }
