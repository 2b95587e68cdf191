"""Per-chunk statistic kernels: reduce one layer's [chunk x vocab] logits to per-token numbers.

Everything here is fp32. The final layer's distribution is computed once per
chunk (`FinalRef`) and reused for every layer, and each layer costs a small,
fixed number of passes over [chunk x vocab]:

    block maxima (read z: one vectorised max per 256 columns) -> the row max m, and the exact top-k from a
        top-k over the block maxima and then over the k best blocks (torch.topk over whole 262k-wide rows was
        the largest single cost: a scalar partial sort, ~6x a vectorised max)
    z > z[final top-1], counted (read z, write a scratch row, sum it)
    e = exp(z) into the same scratch (one pass; exp(z - m), two passes, when some row max m is outside
        [-60, 60] where exp(z) could overflow or lose the top of the distribution), S = sum e
    one batched product z . [p_f, z_f, z, e]  (reads z once, gives four row dot products)

No logsumexp pass and no normalised probabilities: logsumexp(z) = (m +) log S, sum_v p_l z_l = (e . z) / S.
KL(p_f || p_l) is taken from reductions rather than a materialised difference:
    KL = sum_v p_f log p_f - sum_v p_f z_l + logsumexp(z_l)
entropy from H(p_l) = logsumexp(z_l) - sum_v p_l z_l.

`ChunkReducer` is the readout's workspace: one [chunk, 4, vocab] fp32 buffer (vocab rounded up to a
multiple of 256, the padding -inf) holding p_f, z_f, the
current layer's logits and the scratch row side by side, so nothing of vocab size is allocated per layer.
`chunk_statistics` / `FinalRef.build` are the same arithmetic on ordinary tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# order of the columns of the float and int blocks that `ChunkReducer` returns: the statistic registry's
from .fused import BLOCK as _BLOCK  # columns per block for the blocked top-k (block maxima, then top-k in k blocks)
from .fused import FusedUnavailable, block_reduce, combine, gram_products
from .statistics import FLOAT_STATS, INT_STATS  # noqa: F401  (INT_STATS is followed by the k top-k ids)

_PF, _ZF, _Z, _E = 0, 1, 2, 3  # rows of the ChunkReducer buffer
WORKSPACE_BYTES = 256 * 2**20  # target size of the ChunkReducer workspace (see `auto_chunk_tokens`)
_CHUNK_ROWS = (128, 256)  # fewest rows (the head matmul stays efficient), most rows (more buys no speed)
_EXP_SAFE = 60.0  # exp(z) without a shift when every row max is within +-this: no overflow (V * e^60 << 3e38),
#                   and everything within e^-27 of the top stays a normal fp32 number


def auto_chunk_tokens(vocab: int) -> int:
    """Tokens per chunk for this vocabulary: as many rows of the [rows x 4 x vocab] fp32 workspace as fit in
    WORKSPACE_BYTES, within _CHUNK_ROWS (256 up to ~65k vocabularies, 128 from ~128k: 512 MiB at 262k
    instead of 1 GiB). Measured with benchmarks/profile_kernel.py: per token, the head matmul and every
    statistic pass cost the same at 128 and 256 rows, so the smaller workspace is free."""
    padded = -(-vocab // _BLOCK) * _BLOCK
    rows = WORKSPACE_BYTES // (4 * 4 * padded) // 64 * 64
    return int(min(max(rows, _CHUNK_ROWS[0]), _CHUNK_ROWS[1]))


def _exp_sum(z: torch.Tensor, m: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out = exp(z - shift) with shift 0 when the row maxima m allow it (one pass instead of two).

    Returns (sum of out per row, logsumexp of z per row)."""
    lo, hi = torch.aminmax(m)
    if -_EXP_SAFE <= float(lo) and float(hi) <= _EXP_SAFE:
        torch.exp(z, out=out)
        s = out.sum(-1)
        return s, s.log()
    torch.sub(z, m[:, None], out=out).exp_()
    s = out.sum(-1)
    return s, m + s.log()


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
        logits = logits.float()
        vals, ids = torch.topk(logits, k, dim=-1)
        probs = torch.sub(logits, vals[:, :1]).exp_()
        s = probs.sum(-1)
        lse = vals[:, 0] + s.log()
        neg_entropy = _rowdot(probs, logits) / s - lse
        probs.div_(s[:, None])
        return cls(logits, probs, neg_entropy, _rowdot(logits, logits).sqrt(), ids[:, 0], ids, hidden.float())


class NonFiniteLogits(FloatingPointError):
    """NaN or inf in a layer's logits; says which layer and token."""


def _finish(vals, ids, s, lse, dots, rank, z_t, h, h_prev, ref: FinalRef, target, k):
    """Per-token statistics from the reductions of one layer.

    vals/ids: top-k of z; e = exp(z - shift) for some per-row shift, s = sum e, lse = logsumexp(z);
    dots: [C, 4] = z . [p_f, z_f, z, e]; rank: [C] count of z > z[final top-1]; z_t: z at the target (any value
    where target < 0). Returns (float [C, 9], top1, rank).
    """
    bad = ~torch.isfinite(lse)
    if bool(bad.any()):
        raise NonFiniteLogits(int(bad.nonzero()[0, 0]))
    zpf, zzf, zz, ze = dots.unbind(1)
    top_p = torch.exp(vals[:, :2] - lse[:, None])
    entropy = (lse - ze / s).clamp_min(0.0)
    kl = (ref.neg_entropy - zpf + lse).clamp_min(0.0)
    ce = torch.where(target >= 0, lse - z_t, torch.full_like(lse, float("nan")))
    logit_cos = zzf / (zz.sqrt() * ref.norm).clamp_min(1e-30)
    hf = h.float()
    hidden_cos = _cos(hf, ref.hidden)
    hidden_prev = torch.ones_like(lse) if h_prev is None else _cos(hf, h_prev.float())
    overlap = (ids[:, :, None] == ref.topk[:, None, :]).any(-1).sum(-1).float() / k
    floats = torch.stack([top_p[:, 0], top_p[:, 0] - top_p[:, 1], entropy, kl, ce, logit_cos, hidden_cos,
                          hidden_prev, overlap], dim=1)
    return floats, ids[:, 0], rank


def chunk_statistics(z: torch.Tensor, h: torch.Tensor, h_prev: torch.Tensor | None, ref: FinalRef,
                     target: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """All statistics of one layer for one chunk.

    z: [C, V] fp32 logits of this layer (after the model's logit transforms);
    h, h_prev: [C, d] residual stream at this and the previous layer (h_prev None at layer 0);
    target: [C] next-token ids, -1 where there is none.
    Returns tensors of shape [C] plus "topk" [C, k].
    """
    z = z.float()
    vals, ids = torch.topk(z, k, dim=-1)
    rank = (z > z.gather(1, ref.top1[:, None])).sum(-1)
    e = torch.empty_like(z)
    s, lse = _exp_sum(z, vals[:, 0], e)
    dots = torch.stack([_rowdot(z, ref.probs), _rowdot(z, ref.logits), _rowdot(z, z), _rowdot(z, e)], 1)
    z_t = z.gather(1, target.clamp_min(0)[:, None]).squeeze(1)
    floats, top1, rank = _finish(vals, ids, s, lse, dots, rank, z_t, h, h_prev, ref, target, k)
    st = {name: floats[:, i] for i, name in enumerate(FLOAT_STATS)}
    st.update(top1=top1, rank_of_final=rank, topk=ids)
    return st


class ChunkReducer:
    """A reusable fp32 workspace reducing every layer of one chunk of tokens to statistics.

    Use per chunk: write the final layer's logits into `slot(C, final=True)` and call `final(...)`,
    then for each other layer write its logits into `slot(C)` and call `layer(...)`. Each call returns
    (floats [C, len(FLOAT_STATS)], ints [C, 2 + k]: top1, rank_of_final, top-k ids).
    Memory: 4 x rows x vocab fp32 (vocab rounded up to a multiple of _BLOCK).
    fused: reduce each layer in one compiled pass (`eeutils.lens.fused`) instead of the eager passes; falls back
    to the eager passes (for good, with a warning) if compilation fails. gram: the lens' Gram matrix
    (`fused.lens_gram`, linear lenses only): with it and the lens inputs x passed to `final`/`layer`, the fused
    pass gets z . z and z . z_f from O(d^2) products instead of reading z_f.
    """

    def __init__(self, rows: int, vocab: int, k: int, device=None, fused: bool = False, gram=None):
        self.k, self.vocab, self.fused, self.gram = k, vocab, fused, gram
        self.x_ref = None
        self.n_blocks = -(-vocab // _BLOCK)
        padded = self.n_blocks * _BLOCK
        self.buf = torch.empty((rows, 4, padded), dtype=torch.float32, device=device)
        if padded > vocab:  # only the block maxima read the padding of the logits rows
            self.buf[:, :, vocab:] = float("-inf")
        self.ref: FinalRef | None = None

    def slot(self, n: int, final: bool = False) -> torch.Tensor:
        """The [n, vocab] buffer (rows contiguous, row stride 4 x padded vocab) where a layer's logits go."""
        return self.buf[:n, _ZF if final else _Z, :self.vocab]

    def final(self, h_last: torch.Tensor, target: torch.Tensor, x: torch.Tensor | None = None):
        """Build the chunk's FinalRef from the logits in slot(final=True); statistics of the final layer.
        x: the lens input (normed state, fp32) that produced the logits; used with `gram`."""
        n, k = target.shape[0], self.k
        self.x_ref = x
        buf = self.buf[:n, :, :self.vocab]
        z, e = buf[:, _ZF], buf[:, _PF]
        vals, ids = self._topk(n, _ZF)
        s, lse = _exp_sum(z, vals[:, 0], e)
        dots = torch.bmm(z.unsqueeze(1), buf[:, :2].transpose(1, 2)).view(n, 2)  # z . e, z . z
        ze, zz = dots.unbind(1)
        e.div_(s[:, None])  # now p_f
        norm = zz.sqrt()
        self.ref = FinalRef(z, e, ze / s - lse, norm, ids[:, 0], ids, h_last.float())
        # this layer against itself: z . p_f = ze / s, z . z_f = zz
        all_dots = torch.stack([ze / s, zz, zz, ze], 1)
        z_t = z.gather(1, target.clamp_min(0)[:, None]).squeeze(1)
        floats, top1, _ = _finish(vals, ids, s, lse, all_dots, None, z_t, h_last, None, self.ref, target, k)
        return floats, self._ints(top1, torch.zeros_like(top1), ids)

    def layer(self, h: torch.Tensor, h_prev: torch.Tensor | None, target: torch.Tensor,
              x: torch.Tensor | None = None):
        """Statistics of the layer whose logits are in slot(n), against the chunk's FinalRef.
        x: the lens input that produced the logits (used with `gram`)."""
        n, k, ref = target.shape[0], self.k, self.ref
        buf = self.buf[:n, :, :self.vocab]
        z, e = buf[:, _Z], buf[:, _E]
        if self.fused:
            linear = self.gram is not None and x is not None and self.x_ref is not None
            try:
                parts = block_reduce(z, buf[:, _PF], None if linear else buf[:, _ZF], z.gather(1, ref.top1[:, None]))
            except FusedUnavailable:
                self.fused = False
            else:
                bm, s, lse, dots, rank = combine(parts, gram_products(x, self.gram, self.x_ref) if linear else None)
                vals, ids = self._topk(n, _Z, bm)
                z_t = z.gather(1, target.clamp_min(0)[:, None]).squeeze(1)
                floats, top1, rank = _finish(vals, ids, s, lse, dots, rank, z_t, h, h_prev, ref, target, k)
                return floats, self._ints(top1, rank, ids)
        vals, ids = self._topk(n, _Z)
        rank = torch.gt(z, z.gather(1, ref.top1[:, None]), out=e).sum(-1)
        s, lse = _exp_sum(z, vals[:, 0], e)
        dots = torch.bmm(z.unsqueeze(1), buf.transpose(1, 2)).view(n, 4)  # z . [p_f, z_f, z, e]
        z_t = z.gather(1, target.clamp_min(0)[:, None]).squeeze(1)
        floats, top1, rank = _finish(vals, ids, s, lse, dots, rank, z_t, h, h_prev, ref, target, k)
        return floats, self._ints(top1, rank, ids)

    def _topk(self, n: int, row: int, block_max: torch.Tensor | None = None):
        """Top-k of the logits in buffer row `row` without sorting or scanning rows element by element:
        the k largest values lie in the k blocks (of _BLOCK columns) with the largest maxima, so one
        vectorised max per block, a top-k over the block maxima and a top-k over those k blocks is exact.
        Tied values may come in another order than torch.topk over the whole row would give them.
        block_max: the [n, n_blocks] block maxima when already known (the fused kernel computes them)."""
        k, nb = self.k, self.n_blocks
        z = self.buf[:n, row]  # padded with -inf
        if nb < 4 * k:  # small vocabularies: the whole row
            return torch.topk(z[:, :self.vocab], k, dim=-1)
        blocks = z.unflatten(1, (nb, _BLOCK))
        blk = torch.topk(blocks.amax(-1) if block_max is None else block_max, k, dim=-1).indices  # [n, k]
        cand = blocks[torch.arange(n, device=z.device)[:, None], blk]  # [n, k, _BLOCK]
        vals, pos = torch.topk(cand.view(n, k * _BLOCK), k, dim=-1)
        return vals, blk.gather(1, pos // _BLOCK) * _BLOCK + pos % _BLOCK

    @staticmethod
    def _ints(top1, rank, ids):
        return torch.cat([top1[:, None], rank.to(ids.dtype)[:, None], ids], 1)
