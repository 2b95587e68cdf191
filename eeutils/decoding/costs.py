"""The cost model of realised decoding, in block-equivalents of weight multiply-adds per token: one block (its
active parameters; routed experts weighted top_k / n_experts), the head (d_model x vocab), a K/V-only write
(the q/k/v projections), and one check of each `CHECK_KINDS` row. Batch-1 decoding is bound by reading these
weights, so the same ratios hold for bytes. Attention scores, norms, softmax and per-call overheads are not
counted. `cost_profile` reads a loaded model; `shape_cost` computes it from a published shape (`DecoderShape`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.rules import CHECK_KINDS
from ..arch.params import active_fraction, is_expert_param
from .inputs import as_loaded as _as_loaded

__all__ = ["cost_profile", "DecoderShape", "shape_cost", "modelled_speedup"]


# ---------------------------------------------------------------------------------------------------
def _active_params(module: torch.nn.Module, config, kv_names) -> tuple[float, float]:
    """(active parameters, q/k/v projection parameters) of one block."""
    frac = active_fraction(config)
    active = kv = 0.0
    for name, p in module.named_parameters():
        parts = name.split(".")
        n = p.numel() * (frac if is_expert_param(name) else 1.0)
        active += n
        if any(k in parts for k in kv_names):
            kv += n
    return active, kv


def cost_profile(model) -> dict:
    """Weight multiply-adds per token of one block (mean over blocks), of the head, and of a K/V-only write.

    Returns block_macs, head_macs (d_model x vocab), kv_macs (mean q/k/v projections over attention
    blocks), head_cost_blocks = head / block and kv_cost_blocks = kv / block. An estimate: attention
    scores, norms, softmax and per-call overheads are not counted.
    """
    lm = _as_loaded(model)
    sizes = [_active_params(b, lm.config, lm.resolved.spec.kv_names) for b in lm.blocks]
    block = float(np.mean([s[0] for s in sizes])) if sizes else float("nan")
    kv_blocks = [s[1] for s in sizes if s[1] > 0]
    kv = float(np.mean(kv_blocks)) if kv_blocks else 0.0
    head_w = getattr(lm.head, "weight", None)
    head = float(head_w.numel()) if isinstance(head_w, torch.Tensor) else float(
        sum(p.numel() for p in lm.head.parameters()))
    d = int(head_w.shape[1]) if isinstance(head_w, torch.Tensor) else int(lm.config.hidden_size)
    return _costs(block, head, kv, d, lm.vocab_size)


def _costs(block: float, head: float, kv: float, d: int, vocab: int, k: int = 16) -> dict:
    out = dict(block_macs=block, head_macs=head, kv_macs=kv, head_cost_blocks=head / block if block else float("nan"),
               kv_cost_blocks=kv / block if block else float("nan"), d_model=d, vocab=vocab)
    for name, row in CHECK_KINDS.items():
        out[f"{name}_check_blocks"] = row.macs(d, vocab, k) / block if block else float("nan")
    return out


@dataclass(frozen=True)
class DecoderShape:
    """A dense decoder's published shape: L blocks of width d_model, the vocabulary, the MLP width (gated: 3
    matrices, else 2), attention heads and K/V heads of head_dim (None: d_model // n_heads)."""

    n_layers: int
    d_model: int
    vocab: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int | None = None
    gated_mlp: bool = True


def shape_cost(shape: DecoderShape, candidates: int = 16) -> dict:
    """`cost_profile` from a dense decoder's published shape, without building the model (weight multiply-adds
    per token: q and o projections d x heads x head_dim, k and v d x kv_heads x head_dim, MLP 2 or 3 x d x
    intermediate; the head d x vocab). Adds ``<check kind>_check_blocks`` for every `CHECK_KINDS` row (the
    candidate set of `candidates` tokens) and ``full_model_blocks`` = L + head (a full token, in blocks)."""
    d = shape.d_model
    head_dim = shape.head_dim or d // shape.n_heads
    q = o = d * shape.n_heads * head_dim
    kv = 2 * d * shape.n_kv_heads * head_dim
    block = float(q + o + kv + (3 if shape.gated_mlp else 2) * d * shape.intermediate)
    out = _costs(block, float(d * shape.vocab), float(q + kv), d, shape.vocab, candidates)
    out["full_model_blocks"] = shape.n_layers + out["head_cost_blocks"]
    return out


def modelled_speedup(n_layers: int, head: float, kv_cost: float, blocks: float, kv_writes: float = 0.0,
                     check_blocks: float = 0.0, lens_calls: float = 1.0) -> dict:
    """The FLOP model of one configuration, per token, in blocks: full decoding costs L + head; early exit
    costs blocks run (deferred and SSM-state rows included) + K/V writes x kv_cost + cheap checks + full
    readouts x head (the prediction included). Returns model_cost, flop_speedup = (L + head) / model_cost and
    check_cost_share = (cheap checks + full readouts beyond the one prediction) x head / model_cost."""
    cost = blocks + kv_writes * kv_cost + check_blocks + lens_calls * head
    return dict(model_cost=cost, flop_speedup=(n_layers + head) / cost,
                check_cost_share=(check_blocks + max(lens_calls - 1.0, 0.0) * head) / cost)
