"""The statistic registry: every per-token, per-layer statistic the readout produces, in one table.

A `Statistic` names the value, its formula (p_l = softmax(z_l), z_l = readout logits at layer l,
f = final layer), the column block of the fused kernel that produces it ("float" or "int", see
`eeutils.lens.kernel.ChunkReducer`), which of the kernel's passes over [chunk x vocab] yields it,
and whether the early-exit decoder can compute it for the token being generated (`token_statistics`).
The readout, the decoder and the readout benchmark read their names and column orders from here.

Adding a statistic: a row here, its value in the kernel's `_floats` (float block, in row order),
and, if the decoder should use it, in `token_statistics`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Statistic:
    name: str
    formula: str
    column: str  # "float" or "int": which output block of the kernel holds it
    kernel_pass: str  # the fused pass (see eeutils.lens.kernel) that produces it
    decodable: bool = False  # the decoder computes it per generated token from that layer's logits alone
    bounds: tuple = (None, None)  # valid range, checked when a readout file is loaded ("vocab": vocabulary size)

    @property
    def dtype(self):
        return np.int32 if self.column == "int" else np.float32


SPECS: tuple[Statistic, ...] = (
    Statistic("top1", "argmax_v z_l[v]", "int", "top-k", decodable=True, bounds=(0, "vocab")),
    Statistic("max_prob", "max_v p_l[v]", "float", "top-k + exp-sum", decodable=True, bounds=(0, 1)),
    Statistic("margin", "p_l[top1] - p_l[top2]  (CALM softmax response)", "float", "top-k + exp-sum", decodable=True,
              bounds=(0, 1)),
    Statistic("entropy", "-sum_v p_l[v] log p_l[v]  (nats)", "float", "exp-sum + row dots", decodable=True,
              bounds=(0, None)),
    Statistic("kl_to_final", "KL(p_f || p_l) = sum_v p_f[v] (log p_f[v] - log p_l[v])  (nats)", "float",
              "exp-sum + row dots", bounds=(0, None)),
    Statistic("ce", "-log p_l[next token]  (nats; NaN at a document's last position)", "float", "exp-sum + gather",
              bounds=(0, None)),
    Statistic("rank_of_final", "#{v : z_l[v] > z_l[argmax z_f]}  (0 = layer agrees with the final top-1)", "int",
              "rank count", bounds=(0, "vocab")),
    Statistic("logit_cos", "cos(z_l, z_f)", "float", "row dots", bounds=(-1, 1)),
    Statistic("hidden_cos", "cos(h_l, h_L)  (residual stream, before the final norm)", "float", "hidden cosine",
              bounds=(-1, 1)),
    Statistic("hidden_cos_prev", "cos(h_l, h_{l-1})  (hidden-state saturation; 1 at layer 0 by convention)", "float",
              "hidden cosine", decodable=True, bounds=(-1, 1)),
    Statistic("topk_overlap", "|topk(z_l) ∩ topk(z_f)| / k", "float", "top-k", bounds=(0, 1)),
)
REGISTRY: dict[str, Statistic] = {s.name: s for s in SPECS}

# Statistic name -> one-line formula (the readout's columns, in order)
STATISTICS: dict[str, str] = {s.name: s.formula for s in SPECS}
# column order of the float and int blocks the kernel returns (the int block is followed by the k top-k ids)
FLOAT_STATS: tuple[str, ...] = tuple(s.name for s in SPECS if s.column == "float")
INT_STATS: tuple[str, ...] = tuple(s.name for s in SPECS if s.column == "int")
INT_STATISTICS = INT_STATS
DECODABLE: tuple[str, ...] = tuple(s.name for s in SPECS if s.decodable)


def token_statistics(z: torch.Tensor, need=("max_prob", "margin", "entropy", "top1")) -> dict:
    """Statistics of one row of fp32 logits (the decoder's per-token readout), as `SPECS` define them;
    only those in `need` (top1, max_prob, margin, entropy) are computed, since each costs a pass over the vocabulary.
    The values reach the host in one transfer (one device sync per call)."""
    lse = torch.logsumexp(z, dim=-1)
    vals, ids = torch.topk(z, 2 if "margin" in need else 1, dim=-1)
    top_p = torch.exp(vals - lse[..., None])
    names, parts = ["lse", "top1"], [lse[0].double(), ids[0, 0].double()]
    if "max_prob" in need or "margin" in need:
        names.append("max_prob")
        parts.append(top_p[0, 0].double())
    if "margin" in need:
        names.append("margin")
        parts.append((top_p[0, 0] - top_p[0, 1]).double())
    if "entropy" in need:
        p = torch.exp(z - lse[..., None])
        names.append("entropy")
        parts.append((lse - (p * z).sum(-1)).clamp_min(0.0)[0].double())
    host = dict(zip(names, torch.stack(parts).tolist()))
    if not np.isfinite(host.pop("lse")):
        raise FloatingPointError("NaN or inf logits while decoding: load the model in float32 or bfloat16 "
                                 "(fp16 overflows), or check the weights")
    host["top1"] = int(host["top1"])
    return host
