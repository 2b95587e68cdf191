"""Hand-made Readout objects for tests: give the statistics a test is about, defaults fill the rest.

Every statistic argument accepts a scalar (broadcast to [n_tokens, L + 1]) or an array of that
shape. Defaults describe a confident model whose layers resemble the final one: cosines 1,
KL 0, max_prob 0.5, margin 0, entropy 1, hidden_cos_prev 1, ce 1. rank_of_final is 0 where
top1 equals the final top1, else 1. top-k ids default to [top1, 10_000, 10_001, ...] per layer,
and topk_overlap to the overlap of those ids with the final layer's.
"""
from __future__ import annotations

import numpy as np

from eeutils.lens.result import Readout

_DEFAULTS = dict(max_prob=0.5, margin=0.0, entropy=1.0, kl_to_final=0.0, ce=1.0, logit_cos=1.0,
                 hidden_cos=1.0, hidden_cos_prev=1.0)


def _full(value, shape, dtype=np.float64):
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim == 0:
        return np.full(shape, arr, dtype=dtype)
    if arr.shape != shape:
        raise ValueError(f"expected shape {shape}, got {arr.shape}")
    return arr.copy()


def topk_overlap_from_ids(topk: np.ndarray) -> np.ndarray:
    """Reference |topk_l ∩ topk_L| / k by Python sets (slow, for tests only)."""
    n, n_lay, k = topk.shape
    out = np.zeros((n, n_lay))
    for i in range(n):
        final = set(topk[i, -1].tolist())
        for layer in range(n_lay):
            out[i, layer] = len(final & set(topk[i, layer].tolist())) / k
    return out


def make_readout(top1, *, doc=None, position=None, token=None, target=None, answer=None, topk=None, k=3,
                 model="toy", **stats) -> Readout:
    """A Readout from a [n_tokens, L + 1] top1 matrix plus any statistics given by name."""
    top1 = np.asarray(top1, dtype=np.int64)
    if top1.ndim != 2:
        raise ValueError("top1 must be [n_tokens, L + 1]")
    n, n_lay = top1.shape
    shape = (n, n_lay)
    unknown = set(stats) - set(_DEFAULTS) - {"rank_of_final", "topk_overlap"}
    if unknown:
        raise TypeError(f"unknown statistics {sorted(unknown)}")
    out = {"top1": top1}
    for name, default in _DEFAULTS.items():
        out[name] = _full(stats.get(name, default), shape)
    out["rank_of_final"] = _full(stats.get("rank_of_final", (top1 != top1[:, -1:]).astype(np.int64)), shape, np.int64)
    if topk is None:
        topk = np.empty((n, n_lay, k), dtype=np.int64)
        topk[:, :, 0] = top1
        topk[:, :, 1:] = 10_000 + np.arange(k - 1)
    topk = np.asarray(topk, dtype=np.int64)
    if topk.shape[:2] != shape:
        raise ValueError(f"topk must be [{n}, {n_lay}, k], got {topk.shape}")
    out["topk_overlap"] = _full(stats["topk_overlap"], shape) if "topk_overlap" in stats else topk_overlap_from_ids(topk)
    doc = np.zeros(n, dtype=np.int32) if doc is None else np.asarray(doc, dtype=np.int32)
    if position is None:
        position = np.zeros(n, dtype=np.int32)
        for d in np.unique(doc):
            position[doc == d] = np.arange((doc == d).sum())
    target = top1[:, -1].copy() if target is None else np.asarray(target, dtype=np.int64)
    return Readout(stats=out, topk=topk, doc=doc, position=np.asarray(position, dtype=np.int32),
                   token=np.zeros(n, dtype=np.int64) if token is None else np.asarray(token, dtype=np.int64),
                   target=target,
                   answer=np.zeros(n, dtype=bool) if answer is None else np.asarray(answer, dtype=bool),
                   meta={"model": model, "n_layers": n_lay - 1, "k": topk.shape[2]})


def identical_readout(n_tokens: int = 3, n_layers: int = 4, model="identical") -> Readout:
    """Every layer equals the final one: same top1, cosines 1, KL 0, full top-k overlap."""
    top1 = np.repeat(np.arange(n_tokens)[:, None] + 7, n_layers + 1, axis=1)
    return make_readout(top1, model=model)


def empty_readout(n_layers: int = 4) -> Readout:
    return make_readout(np.zeros((0, n_layers + 1), dtype=np.int64))


def synthetic_readout(n_docs: int = 12, tokens_per_doc: int = 20, n_layers: int = 6, seed: int = 0,
                      slope: float = 1.0, model="synthetic") -> Readout:
    """A random but plausible readout: similarity rises with depth, documents differ in difficulty."""
    rng = np.random.default_rng(seed)
    n = n_docs * tokens_per_doc
    doc = np.repeat(np.arange(n_docs), tokens_per_doc)
    depth = np.arange(n_layers + 1) / n_layers
    difficulty = rng.uniform(0.0, 0.4, n_docs)[doc]
    base = np.clip(depth[None, :] ** slope - difficulty[:, None] * (1 - depth[None, :])
                   + rng.normal(0, 0.05, (n, n_layers + 1)), -0.2, 1.0)
    base[:, -1] = 1.0
    final = rng.integers(0, 50, n)
    switch = rng.uniform(0, 1, (n, n_layers + 1)) > base
    top1 = np.where(switch, rng.integers(50, 100, (n, n_layers + 1)), final[:, None])
    top1[:, -1] = final
    kl = np.clip(3.0 * (1 - base), 0, None)
    kl[:, -1] = 0.0
    target = np.where(rng.uniform(0, 1, n) < 0.6, final, 99)
    return make_readout(top1, doc=doc, target=target, logit_cos=base, hidden_cos=np.sqrt(np.clip(base, 0, 1)),
                        kl_to_final=kl, max_prob=np.clip(base, 0, 1), model=model)
