"""The statistic registry: every per-token, per-layer statistic the readout produces, one entry each.

A `Statistic` names the value, its formula (p_l = softmax(z_l), z_l = readout logits at layer l, f = final
layer), how to compute it from named per-token terms (`TERMS`: reductions of one layer's logits, the final
layer's reference values, the hidden-state cosines), its dtype, valid range, and whether the early-exit decoder
can compute it for the token being generated. Everything else reads the registry by name:

- the statistic kernel (`eeutils.lens.kernel`: `ChunkReducer.finish` behind both the fused and the eager passes,
  and the reference `chunk_statistics`) records the terms of every layer and calls `compute_statistics`;
- the readout allocates one column per entry (`Readout.stats`, eeutils.lens.result), and a loaded file's
  columns are checked against the entry's dtype and `bounds` (eeutils.lens.files);
- the decoder's per-token statistics (`token_statistics`, called by eeutils.decoding.checks) are the decodable
  entries, computed from one row of logits (or the hidden states) by the same `compute`;
- the statistics table of docs/DESIGN.md is `markdown_table()` (tests/test_registries.py compares them).

Adding a statistic computed from the existing terms is one entry here (`register_statistic` /
`temporary_statistic` do it at run time). One that needs a new reduction over the vocabulary also needs that
term in the kernel's passes (`kernel.RECORD`: the eager passes and `fused._reduce_blocks`) and, if decodable,
in `row_terms`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

# The terms a statistic's `compute` reads, name -> meaning. Per token and layer unless said otherwise; "shift" is
# any per-token constant (the kernel's choice: 0 or the row's max; the decoder's: logsumexp, so that s = 1).
TERMS: dict[str, str] = {
    "lse": "logsumexp_v z[v]",
    "s": "sum_v exp(z[v] - shift)",
    "ze": "sum_v z[v] exp(z[v] - shift)  (the same shift)",
    "zpf": "z . p_f",
    "zz": "z . z",
    "zzf": "z . z_f",
    "z_t": "z[target]",
    "v1": "the largest logit",
    "v2": "the second largest logit",
    "rank": "#{v : z[v] > z[argmax z_f]}",
    "ids": "the top-k ids, [..., k], by decreasing logit",
    "k": "k, the size of the top-k sets (a number)",
    "target": "the next token's id, -1 where there is none (per token)",
    "final_neg_entropy": "sum_v p_f[v] log p_f[v]  (per token)",
    "final_norm": "||z_f||  (per token)",
    "final_topk": "the final layer's top-k ids, [C, k]",
    "hidden_cos": "cos(h_l, h_L)",
    "hidden_cos_prev": "cos(h_l, h_{l-1}), 1 at layer 0",
}
# the terms `row_terms` gives for one generated token (what a decodable statistic may read)
ROW_TERMS: tuple[str, ...] = ("lse", "s", "ze", "v1", "v2", "ids", "hidden_cos_prev")
COLUMNS = {"float": (np.float32, torch.float32), "int": (np.int32, torch.int32)}


@dataclass(frozen=True)
class Statistic:
    name: str
    formula: str
    compute: Callable[[Mapping], torch.Tensor]  # the value from the terms it reads (any leading shape)
    reads: tuple[str, ...]  # the TERMS `compute` reads
    column: str = "float"  # "float" or "int": the dtype of its column
    kernel_pass: str = ""  # the kernel's pass (see eeutils.lens.kernel) that produces its terms
    decodable: bool = False  # the decoder computes it per generated token from that layer alone
    bounds: tuple = (None, None)  # valid range, checked when a readout file is loaded ("vocab": vocabulary size)
    averaged: bool = True  # Readout.layer_means averages it (False for token ids)

    def __post_init__(self):
        unknown = [t for t in self.reads if t not in TERMS]
        if unknown or self.column not in COLUMNS:
            raise ValueError(f"statistic {self.name!r}: unknown terms {unknown} (known: {sorted(TERMS)}) or column "
                             f"{self.column!r} (known: {sorted(COLUMNS)})")
        missing = sorted(set(self.reads) - set(ROW_TERMS))
        if self.decodable and missing:
            raise ValueError(f"statistic {self.name!r} is decodable but reads {missing}, which the decoder does not "
                             f"have for one token (it has {ROW_TERMS})")

    @property
    def dtype(self):
        return COLUMNS[self.column][0]

    @property
    def torch_dtype(self) -> torch.dtype:
        return COLUMNS[self.column][1]


def _ce(t):
    lse = t["lse"]
    return torch.where(t["target"] >= 0, lse - t["z_t"], torch.full_like(lse, float("nan")))


def _topk_overlap(t):
    ids = t["ids"]
    return (ids[..., :, None] == t["final_topk"][:, None, :]).any(-1).sum(-1).float() / t["k"]


SPECS: tuple[Statistic, ...] = (
    Statistic("top1", "argmax_v z_l[v]", lambda t: t["ids"][..., 0], ("ids",), "int", "top-k", decodable=True,
              bounds=(0, "vocab"), averaged=False),
    Statistic("max_prob", "max_v p_l[v]", lambda t: torch.exp(t["v1"] - t["lse"]), ("v1", "lse"), "float",
              "top-k + exp-sum", decodable=True, bounds=(0, 1)),
    Statistic("margin", "p_l[top1] - p_l[top2]  (CALM softmax response)",
              lambda t: torch.exp(t["v1"] - t["lse"]) - torch.exp(t["v2"] - t["lse"]), ("v1", "v2", "lse"), "float",
              "top-k + exp-sum", decodable=True, bounds=(0, 1)),
    Statistic("entropy", "-sum_v p_l[v] log p_l[v]  (nats)", lambda t: (t["lse"] - t["ze"] / t["s"]).clamp_min(0.0),
              ("lse", "ze", "s"), "float", "exp-sum + row dots", decodable=True, bounds=(0, None)),
    Statistic("kl_to_final", "KL(p_f || p_l) = sum_v p_f[v] (log p_f[v] - log p_l[v])  (nats)",
              lambda t: (t["final_neg_entropy"] - t["zpf"] + t["lse"]).clamp_min(0.0),
              ("final_neg_entropy", "zpf", "lse"), "float", "exp-sum + row dots", bounds=(0, None)),
    Statistic("ce", "-log p_l[next token]  (nats; NaN at a document's last position)", _ce,
              ("target", "lse", "z_t"), "float", "exp-sum + gather", bounds=(0, None)),
    Statistic("rank_of_final", "#{v : z_l[v] > z_l[argmax z_f]}  (0 = layer agrees with the final top-1)",
              lambda t: t["rank"], ("rank",), "int", "rank count", bounds=(0, "vocab")),
    Statistic("logit_cos", "cos(z_l, z_f)", lambda t: t["zzf"] / (t["zz"].sqrt() * t["final_norm"]).clamp_min(1e-30),
              ("zzf", "zz", "final_norm"), "float", "row dots", bounds=(-1, 1)),
    Statistic("hidden_cos", "cos(h_l, h_L)  (residual stream, before the final norm)", lambda t: t["hidden_cos"],
              ("hidden_cos",), "float", "hidden cosine", bounds=(-1, 1)),
    Statistic("hidden_cos_prev", "cos(h_l, h_{l-1})  (hidden-state saturation; 1 at layer 0 by convention)",
              lambda t: t["hidden_cos_prev"], ("hidden_cos_prev",), "float", "hidden cosine", decodable=True,
              bounds=(-1, 1)),
    Statistic("topk_overlap", "|topk(z_l) ∩ topk(z_f)| / k", _topk_overlap, ("ids", "final_topk", "k"), "float",
              "top-k", bounds=(0, 1)),
)
# the live registry, in column order (`register_statistic` adds to it)
REGISTRY: dict[str, Statistic] = {s.name: s for s in SPECS}
# Statistic name -> one-line formula (the readout's columns, in order; kept in step with REGISTRY)
STATISTICS: dict[str, str] = {s.name: s.formula for s in SPECS}


def register_statistic(stat: Statistic, replace: bool = False) -> Statistic:
    """Add a statistic to the registry (after the others): every readout from now on has its column, computed
    by both kernels, and the decoder reports it if it is decodable. ValueError if the name is taken."""
    if stat.name in REGISTRY and not replace:
        raise ValueError(f"a statistic named {stat.name!r} is already registered (pass replace=True)")
    if stat.name == "topk":
        raise ValueError("'topk' is the readout's top-k id array, not a statistic name")
    REGISTRY[stat.name] = stat
    STATISTICS[stat.name] = stat.formula
    return stat


@contextmanager
def temporary_statistic(stat: Statistic):
    """Register `stat` inside a `with` block, then restore the registry as it was (tests, experiments)."""
    saved, formulas = dict(REGISTRY), dict(STATISTICS)
    try:
        yield register_statistic(stat)
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)
        STATISTICS.clear()
        STATISTICS.update(formulas)


def compute_statistics(terms: Mapping) -> dict[str, torch.Tensor]:
    """Every registered statistic from the terms (`TERMS`), each in its column's dtype, by name."""
    return {s.name: s.compute(terms).to(s.torch_dtype) for s in REGISTRY.values()}


def markdown_table() -> str:
    """The registry as the Markdown table docs/DESIGN.md shows."""
    rows = ["| statistic | formula | dtype | decoder | valid range |", "|---|---|---|---|---|"]
    for s in REGISTRY.values():
        lo = "-inf" if s.bounds[0] is None else s.bounds[0]
        hi = {None: "inf", "vocab": "vocab - 1"}.get(s.bounds[1], s.bounds[1])  # "vocab": an id, below the size
        formula = s.formula.replace("|", "\\|")  # a literal bar inside a table cell
        rows.append(f"| `{s.name}` | {formula} | {s.column} | "
                    f"{'yes' if s.decodable else ''} | [{lo}, {hi}] |")
    return "\n".join(rows)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of [..., d] tensors (an elementwise product and a sum: for rows of a few thousand numbers
    this is several times faster than a batched matmul of 1 x d by d x 1)."""
    dot = torch.linalg.vecdot(a, b)
    return dot / (torch.linalg.vecdot(a, a) * torch.linalg.vecdot(b, b)).sqrt().clamp_min(1e-30)


def row_terms(z: torch.Tensor | None, reads, hidden=None) -> dict:
    """The terms of one generated token that `reads` names, as far as the inputs allow: from its fp32 logits
    z [1, V] (always lse and the top-1 id: the decoder checks the one and predicts with the other), and from
    hidden = (h, h_prev), its states at this layer and the one before. Each term costs a pass over its input,
    so only those asked for are computed."""
    t: dict = {}
    if z is not None:
        t["lse"] = torch.logsumexp(z, dim=-1)
        vals, t["ids"] = torch.topk(z, 2 if "v2" in reads else 1, dim=-1)
        t.update({name: vals[..., i] for i, name in enumerate(("v1", "v2")) if name in reads})
        if "ze" in reads or "s" in reads:  # shift = lse: s = sum_v p[v] = 1
            p = torch.exp(z - t["lse"][..., None])
            t["ze"], t["s"] = (p * z).sum(-1), 1.0
    if hidden is not None and "hidden_cos_prev" in reads:
        t["hidden_cos_prev"] = cosine(hidden[0].float(), hidden[1].float())
    return t


DEFAULT_TOKEN_STATS = ("max_prob", "margin", "entropy", "top1")


def token_statistics(z: torch.Tensor | None, need=DEFAULT_TOKEN_STATS, hidden=None) -> dict:
    """The decodable statistics of one generated token (the decoder's per-token readout) as the registry defines
    them: those in `need` (names that are no decodable statistic are ignored) plus any other that the terms they
    need already give, and top1 whenever logits are given. z: one row of fp32 logits [1, V] or None; hidden:
    (h, h_prev) for the hidden-state statistics. The values reach the host in one transfer (one device sync)."""
    specs = [REGISTRY[n] for n in need if n in REGISTRY and REGISTRY[n].decodable]
    terms = row_terms(z, {t for s in specs for t in s.reads}, hidden)
    names = [s.name for s in REGISTRY.values() if s.decodable and set(s.reads) <= set(terms)]
    parts = [terms["lse"][0].double()] if z is not None else []
    parts += [REGISTRY[n].compute(terms)[0].double() for n in names]
    if not parts:
        return {}
    values = torch.stack(parts).tolist()
    if z is not None and not np.isfinite(values.pop(0)):
        raise FloatingPointError("NaN or inf logits while decoding: load the model in float32 or bfloat16 "
                                 "(fp16 overflows), or check the weights")
    return {n: int(v) if REGISTRY[n].column == "int" else v for n, v in zip(names, values)}
