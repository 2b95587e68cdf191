"""Per-chunk statistic kernels: reduce every layer's [chunk x vocab] logits to per-token numbers.

Everything here is fp32. The work splits in two so that the per-layer part touches the vocabulary as few times as
possible and everything of size [chunk] is done once per chunk for all layers together:

per layer (`ChunkReducer.final` / `.layer`): the passes over [chunk x vocab] and nothing else. They leave, per
    token, a handful of named reductions (`RECORD`, terms of `eeutils.lens.statistics.TERMS`) in a
    [layers + 1, len(RECORD), chunk] record: logsumexp, S = sum exp(z - shift), z . exp(z - shift), z . p_f, z . z,
    z . z_f, z at the target, the top two values, the rank count; and the k top-k ids. Two ways to get them, same
    numbers up to fp32 summation order:
      fused (`eeutils.lens.fused`): one compiled pass per block of 256 columns, plus the exact top-k from the
        block maxima (the k largest values lie in the k blocks with the largest maxima);
      eager: block maxima / top-k, z > z[final top-1] counted, exp into a scratch row and summed, and one
        batched product z . [p_f, z_f, z, e].
per chunk (`ChunkReducer.finish`): every registered statistic of every layer from the record, by name, vectorised
    over layers (`statistics.compute_statistics`: e.g. KL = sum_v p_f log p_f - sum_v p_f z_l + logsumexp(z_l),
    H(p_l) = logsumexp(z_l) - (z . e) / S), with the hidden-state cosines (`hidden_cosines`, once per batch of
    documents).

No logsumexp pass and no normalised probabilities of the layers: logsumexp(z) = (shift +) log S.

`ChunkReducer` is the readout's workspace: one [chunk, 4, vocab] fp32 buffer (vocab rounded up to a multiple of 256;
the padding of the logit rows is a large negative number, that of p_f zero) holding p_f, z_f, the current layer's
logits and a scratch row side by side, so nothing of vocab size is allocated per layer.
`chunk_statistics` / `FinalRef.build` are the same arithmetic on ordinary tensors, one layer at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .fused import BLOCK as _BLOCK  # columns per block (block maxima, then the top-k in the k best blocks)
from .fused import EXP_FLOOR, PAD, FusedUnavailable, block_reduce, combine, gram_dot, gram_ref
from .statistics import cosine, compute_statistics

PF, ZF, Z, SCRATCH = range(4)  # rows of the ChunkReducer buffer: p_f, z_f, the current layer's z, scratch
# the per-layer record: these terms (eeutils.lens.statistics.TERMS) of every layer, one row each
RECORD = ("lse", "s", "ze", "zpf", "zz", "zzf", "z_t", "v1", "v2", "rank")
WORKSPACE_BYTES = 256 * 2**20  # target size of the ChunkReducer workspace (see `auto_chunk_tokens`)
_CHUNK_ROWS = (128, 256)  # fewest rows (the head matmul stays efficient), most rows (more buys no speed)
_EXP_SAFE = (-15.0, 60.0)  # exp(z) without a shift when every row max is within these: no overflow (V * e^60 <<
#                            3e38), and the floor e^-69 (`fused.EXP_FLOOR`) is at least 54 nats below every row's top


def auto_chunk_tokens(vocab: int) -> int:
    """Tokens per chunk for this vocabulary: as many rows of the [rows x 4 x vocab] fp32 workspace as fit in
    WORKSPACE_BYTES, within _CHUNK_ROWS (256 up to ~65k vocabularies, 128 from ~128k: 512 MiB at 262k
    instead of 1 GiB). Measured with benchmarks/profile_kernel.py: per token, the head matmul and every
    statistic pass cost the same at 128 and 256 rows, so the smaller workspace is free."""
    padded = -(-vocab // _BLOCK) * _BLOCK
    rows = WORKSPACE_BYTES // (4 * 4 * padded) // 64 * 64
    return int(min(max(rows, _CHUNK_ROWS[0]), _CHUNK_ROWS[1]))


def workspace_bytes(rows: int, vocab: int) -> int:
    """Bytes of a `ChunkReducer` workspace of `rows` rows."""
    return rows * 4 * (-(-vocab // _BLOCK) * _BLOCK) * 4


def exp_sum(z: torch.Tensor, m: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out = exp(max(z - shift, EXP_FLOOR)) with shift 0 when the row maxima m allow it (one pass fewer).

    Returns (sum of out per row, logsumexp of z per row)."""
    lo, hi = torch.aminmax(m)
    if _EXP_SAFE[0] <= float(lo) and float(hi) <= _EXP_SAFE[1]:
        torch.clamp(z, min=EXP_FLOOR, out=out).exp_()
        s = out.sum(-1)
        return s, s.log()
    torch.sub(z, m[:, None], out=out).clamp_(min=EXP_FLOOR).exp_()
    s = out.sum(-1)
    return s, m + s.log()


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_v a[c, v] * b[c, v] without allocating the product (a batched matmul)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def hidden_cosines(states, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos(h_l, h_L), cos(h_l, h_{l-1})) for the residual states of layers 0..L (a sequence of [n, d] tensors, any
    float dtype, any devices); each [L + 1, n] fp32 on `device` (default: the last state's), the second 1 at
    layer 0 by convention. One layer at a time, so nothing bigger than one [n, d] product is allocated."""
    last = states[-1].float()
    device = last.device if device is None else device
    n_last = torch.linalg.vecdot(last, last)
    to_last = torch.empty((len(states), last.shape[0]), dtype=torch.float32, device=device)
    to_prev = torch.ones_like(to_last)
    prev, n_prev = None, None
    for i, s in enumerate(states):
        h = s.to(last.device).float()
        sq = torch.linalg.vecdot(h, h)
        to_last[i] = torch.linalg.vecdot(h, last) / (sq * n_last).sqrt().clamp_min(1e-30)
        if prev is not None:
            to_prev[i] = torch.linalg.vecdot(h, prev) / (sq * n_prev).sqrt().clamp_min(1e-30)
        prev, n_prev = h, sq
    return to_last, to_prev


@dataclass
class FinalRef:
    """What every layer is compared against, for one chunk of tokens."""

    logits: torch.Tensor  # [C, V] fp32
    probs: torch.Tensor  # [C, V]
    neg_entropy: torch.Tensor  # [C] sum p log p
    norm: torch.Tensor  # [C] ||z_f||
    top1: torch.Tensor  # [C]
    topk: torch.Tensor  # [C, k]
    hidden: torch.Tensor | None = None  # [C, d] last layer's residual stream (for `chunk_statistics`)

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

    def terms(self, target: torch.Tensor, k: int) -> dict:
        """The chunk-wide terms (eeutils.lens.statistics.TERMS) every layer's statistics read."""
        return {"final_neg_entropy": self.neg_entropy, "final_norm": self.norm, "final_topk": self.topk,
                "target": target, "k": k}


class NonFiniteLogits(FloatingPointError):
    """NaN or inf in a layer's logits; args: (row,) or (layer, row) of the first one."""


def chunk_statistics(z: torch.Tensor, h: torch.Tensor, h_prev: torch.Tensor | None, ref: FinalRef,
                     target: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """All registered statistics of one layer for one chunk (the reference arithmetic on ordinary tensors).

    z: [C, V] fp32 logits of this layer (after the model's logit transforms); h, h_prev: [C, d] residual
    stream at this and the previous layer (None at layer 0), compared with ref.hidden; target: [C] next-token ids, -1 where
    there is none. Returns tensors of shape [C] by name plus "topk" [C, k].
    """
    z = z.float()
    vals, ids = torch.topk(z, k, dim=-1)
    e = torch.empty_like(z)
    s, lse = exp_sum(z, vals[:, 0], e)
    bad = ~torch.isfinite(lse)
    if bool(bad.any()):
        raise NonFiniteLogits(int(bad.nonzero()[0, 0]))
    hf = h.float()
    terms = {"lse": lse, "s": s, "ze": _rowdot(z, e), "zpf": _rowdot(z, ref.probs), "zz": _rowdot(z, z),
             "zzf": _rowdot(z, ref.logits), "z_t": z.gather(1, target.clamp_min(0)[:, None]).squeeze(1),
             "v1": vals[:, 0], "v2": vals[:, 1], "rank": (z > z.gather(1, ref.top1[:, None])).sum(-1), "ids": ids,
             "hidden_cos": cosine(hf, ref.hidden),
             "hidden_cos_prev": torch.ones_like(lse) if h_prev is None else cosine(hf, h_prev.float()),
             **ref.terms(target, k)}
    return dict(compute_statistics(terms), topk=ids)


def to_host(stats: dict[str, torch.Tensor], stacked: bool | None = None) -> dict[str, np.ndarray]:
    """`ChunkReducer.finish`'s tensors as NumPy arrays, by name: views on the CPU, else (or with stacked=True) one
    device-to-host copy per dtype and shape, not one per statistic."""
    if stacked is None:
        stacked = any(v.device.type != "cpu" for v in stats.values())
    if not stacked:
        return {name: v.numpy() for name, v in stats.items()}
    groups: dict = {}
    for name, v in stats.items():
        groups.setdefault((v.dtype, v.shape), []).append(name)
    out = {}
    for names in groups.values():
        out.update(zip(names, torch.stack([stats[n] for n in names]).cpu().numpy()))
    return {name: out[name] for name in stats}


class ChunkReducer:
    """A reusable fp32 workspace reducing every layer of one chunk of tokens to statistics.

    Per chunk: write the final layer's logits into `slot(n, final=True)` and call `final(target)`; for each other
    layer i write its logits into `slot(n)` and call `layer(i)`; then `finish(hidden)` returns every registered
    statistic by name ([n, layers + 1] each) and "topk" ([n, layers + 1, k] ids).
    Memory: 4 x rows x vocab fp32 (vocab rounded up to a multiple of _BLOCK) plus the small per-layer record.
    fused: reduce each layer in one compiled pass (`eeutils.lens.fused`) instead of the eager passes; falls back
    to the eager passes (for good, with a warning) if compilation fails. gram: the lens' Gram matrix
    (`fused.lens_gram`, linear lenses only): with it and the lens inputs x passed to `final`/`layer`, z . z_f
    costs d + 1 multiply-adds per token and layer (after d^2 per token and chunk) instead of a read of z_f in the
    fused pass.
    """

    def __init__(self, rows: int, vocab: int, k: int, layers: int, device=None, fused: bool = False, gram=None):
        self.k, self.vocab, self.layers, self.fused, self.gram = k, vocab, layers, fused, gram
        self.u_ref = None
        self.n_blocks = -(-vocab // _BLOCK)
        padded = self.n_blocks * _BLOCK
        self.buf = torch.empty((rows, 4, padded), dtype=torch.float32, device=device)
        if padded > vocab:  # see `fused.block_reduce`: the fused pass runs over whole blocks, padding included
            self.buf[:, :, vocab:] = PAD
            self.buf[:, PF, vocab:] = 0.0
        self.rec = torch.empty((layers + 1, len(RECORD), rows), dtype=torch.float32, device=device)
        self.ids = torch.empty((layers + 1, rows, k), dtype=torch.int64, device=device)
        self.ref: FinalRef | None = None
        self.target = None

    def slot(self, n: int, final: bool = False) -> torch.Tensor:
        """The [n, vocab] buffer (rows contiguous, row stride 4 x padded vocab) where a layer's logits go."""
        return self.buf[:n, ZF if final else Z, :self.vocab]

    def final(self, target: torch.Tensor, x: torch.Tensor | None = None) -> None:
        """Build the chunk's FinalRef from the logits in slot(final=True) and record the final layer.
        x: the lens input (normed state, fp32) that produced the logits; used with `gram`.
        Raises NonFiniteLogits(row) if some token's final logits are not all finite."""
        n = target.shape[0]
        self.target = target
        self.u_ref = gram_ref(self.gram, x) if self.gram is not None and x is not None else None
        buf = self.buf[:n, :, :self.vocab]
        z, e = buf[:, ZF], buf[:, PF]
        if self.fused:  # the fused pass with z itself in p_f's place (its "z . p_f" is z . z) and no count
            try:
                zp = self.buf[:n, ZF]
                red = combine(block_reduce(zp, zp, None, torch.full_like(z[:, :1], float("inf")), self.vocab))
            except FusedUnavailable:
                self.fused = False
            else:
                red["zz"] = red["zpf"]
                vals, ids = self.blocked_topk(n, ZF, red["block_max"])
                exp_in_e = False
        if not self.fused:
            vals, ids = self.blocked_topk(n, ZF)
            s, lse = exp_sum(z, vals[:, 0], e)
            ze, zz = torch.bmm(z.unsqueeze(1), buf[:, :2].transpose(1, 2)).view(n, 2).unbind(1)  # z . e, z . z
            red, exp_in_e = {"s": s, "lse": lse, "ze": ze, "zz": zz}, True
        s, lse, ze, zz = red["s"], red["lse"], red["ze"], red["zz"]
        bad = ~(torch.isfinite(lse) & torch.isfinite(zz))  # ||z_f|| is finite iff every logit is
        if bool(bad.any()):
            raise NonFiniteLogits(int(bad.nonzero()[0, 0]))
        if exp_in_e:  # e holds exp(z - shift)
            e.div_(s[:, None])
        else:
            torch.sub(z, lse[:, None], out=e).clamp_(min=EXP_FLOOR).exp_()  # p_f, never denormal
        self.ref = FinalRef(z, e, ze / s - lse, zz.sqrt(), ids[:, 0], ids)
        # this layer against itself: z . p_f = ze / s, z . z_f = z . z, rank 0
        self._record(self.layers, {"lse": lse, "s": s, "ze": ze, "zpf": ze / s, "zz": zz, "zzf": zz,
                                   "rank": torch.zeros_like(lse)}, vals, ids)

    def layer(self, i: int, x: torch.Tensor | None = None) -> None:
        """Record layer i (< layers), whose logits are in slot(n), against the chunk's FinalRef.
        x: the lens input that produced the logits (used with `gram`)."""
        n, ref = self.target.shape[0], self.ref
        buf = self.buf[:n, :, :self.vocab]
        z, e = buf[:, Z], buf[:, SCRATCH]
        thr = z.gather(1, ref.top1[:, None])
        if self.fused:
            linear = self.u_ref is not None and x is not None
            try:
                whole = self.buf[:n]
                parts = block_reduce(whole[:, Z], whole[:, PF], None if linear else whole[:, ZF], thr, self.vocab)
            except FusedUnavailable:
                self.fused = False
            else:
                red = combine(parts)
                if linear:
                    red["zzf"] = gram_dot(x, self.u_ref)
                self._record(i, red, *self.blocked_topk(n, Z, red["block_max"]))
                return
        vals, ids = self.blocked_topk(n, Z)
        rank = torch.gt(z, thr, out=e).sum(-1)
        s, lse = exp_sum(z, vals[:, 0], e)
        zpf, zzf, zz, ze = torch.bmm(z.unsqueeze(1), buf.transpose(1, 2)).view(n, 4).unbind(1)  # z . [p_f, z_f, z, e]
        self._record(i, {"lse": lse, "s": s, "ze": ze, "zpf": zpf, "zz": zz, "zzf": zzf, "rank": rank}, vals, ids)

    def _record(self, i: int, red: dict, vals: torch.Tensor, ids: torch.Tensor) -> None:
        """Store layer i's reductions `red` (by RECORD name; z_t, v1 and v2 are taken here) and its top-k ids."""
        n = ids.shape[0]
        z = self.buf[:n, ZF if i == self.layers else Z]
        red = dict(red, z_t=z.gather(1, self.target.clamp_min(0)[:, None]).squeeze(1), v1=vals[:, 0], v2=vals[:, 1])
        self.rec[i, :, :n] = torch.stack([red[name] for name in RECORD])
        self.ids[i, :n] = ids

    def finish(self, hidden: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every registered statistic of every layer of this chunk from the record, by name: [n, layers + 1] each
        in its registry dtype, and "topk" [n, layers + 1, k] int32. hidden: this chunk's columns of
        `hidden_cosines` ([layers + 1, n] each). Raises NonFiniteLogits(layer, row) for the
        first layer and token whose logits were not all finite."""
        n = self.target.shape[0]
        terms = dict(zip(RECORD, self.rec[:, :, :n].unbind(1)))  # each [L + 1, n]
        # lse is finite unless a logit is NaN or +inf; z . z is finite unless one is +-inf or NaN (a -inf logit leaves
        # lse finite, but then no sum with z in it is)
        bad = ~(torch.isfinite(terms["lse"]) & torch.isfinite(terms["zz"]))
        if bool(bad.any()):
            layer, row = (int(v) for v in bad.nonzero()[0])
            raise NonFiniteLogits(layer, row)
        ids = self.ids[:, :n]
        terms.update(self.ref.terms(self.target, self.k), ids=ids, hidden_cos=hidden[0], hidden_cos_prev=hidden[1])
        stats = {name: v.transpose(0, 1) for name, v in compute_statistics(terms).items()}
        stats["topk"] = ids.to(torch.int32).transpose(0, 1)
        return stats

    def blocked_topk(self, n: int, row: int, block_max: torch.Tensor | None = None):
        """Top-k of the logits in buffer row `row` without sorting or scanning rows element by element:
        the k largest values lie in the k blocks (of _BLOCK columns) with the largest maxima, so one
        vectorised max per block, a top-k over the block maxima and a top-k over those k blocks is exact.
        Tied values may come in another order than torch.topk over the whole row would give them.
        block_max: the [n, n_blocks] block maxima when already known (the fused kernel computes them)."""
        k, nb = self.k, self.n_blocks
        z = self.buf[:n, row]  # padded with PAD
        if nb < 4 * k:  # small vocabularies: the whole row
            return torch.topk(z[:, :self.vocab], k, dim=-1)
        if block_max is None:
            block_max = z.unflatten(1, (nb, _BLOCK)).amax(-1)
        blk = torch.topk(block_max, k, dim=-1).indices  # [n, k]
        # the k blocks as rows of the whole workspace seen as [rows x 4 x nb, _BLOCK] (a row copy each)
        rows = torch.arange(n, device=z.device)[:, None] * (4 * nb) + row * nb + blk
        cand = self.buf.view(-1, _BLOCK).index_select(0, rows.view(-1)).view(n, k, _BLOCK)
        vals, pos = torch.topk(cand.view(n, k * _BLOCK), k, dim=-1)
        return vals, blk.gather(1, pos // _BLOCK) * _BLOCK + pos % _BLOCK
