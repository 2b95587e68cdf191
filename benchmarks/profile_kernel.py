#!/usr/bin/env python
"""Where one layer's statistics time goes: each pass over a [chunk x vocab] fp32 logits block timed on its
own, next to the unembedding matmul that produces the block (the floor's per-layer cost), interleaved
rounds, medians; CPU seconds of the process (time.process_time), steadier than wall time on a loaded machine.

    .venv/bin/python benchmarks/profile_kernel.py --vocab 262144 --chunk 256 --repeats 5

    .venv/bin/python benchmarks/profile_kernel.py --vocab 262144 --chunks 128,256 --repeats 8

Passes: whole-row torch.topk (what the kernel used before), block maxima + blocked top-k (what it uses
now), rank count (compare into a scratch row, sum), exp + sum, the batched four-row dot product, and
ChunkReducer.layer and .final as a whole, eager and fused (`eeutils.lens.fused`: the compiled one-pass block
reduction, alone and inside layer(), with z_f read in the pass or z . z_f from the Gram matrix). Random head weights
(d_model 640, std 0.05) and random states.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eeutils.lens import fused  # noqa: E402
from eeutils.lens.kernel import PF, SCRATCH, ZF, Z, ChunkReducer, exp_sum  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=262144)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--d-model", type=int, default=640)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunks", default="", help="instead: time the matmul and layer() per token at these chunk "
                    "sizes (e.g. 128,256), interleaved in one process")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.chunks:
        return compare_chunks(args, [int(c) for c in args.chunks.split(",")])
    passes, xs = _passes(args)
    times = {name: [] for name in passes}
    for rep in range(args.repeats):
        x = xs[rep % 2]
        names = list(passes)
        names = names[rep % len(names):] + names[:rep % len(names)]
        if "matmul (floor)" in names:  # every other pass reads the logits the matmul wrote
            names.remove("matmul (floor)")
            names.insert(0, "matmul (floor)")
        for name in names:
            t0 = time.process_time()
            passes[name](x)
            times[name].append(time.process_time() - t0)
    mm = statistics.median(times["matmul (floor)"])
    print(f"vocab {args.vocab}, chunk {args.chunk}, d {args.d_model}, {args.threads} threads; "
          f"medians of {args.repeats}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:20s} {med * 1e3:9.1f} ms  {med / mm:6.3f} x matmul   "
              + " ".join(f"{t * 1e3:.0f}" for t in ts))


def _passes(args):
    """({pass name: a function of the lens input x}, the two lens inputs), on random head weights and states;
    the fused reducers are compiled here (not timed)."""
    V, C, k = args.vocab, args.chunk, args.k
    g = torch.Generator().manual_seed(0)
    W = torch.randn(V, args.d_model, generator=g) * 0.05
    xs = [torch.randn(C, args.d_model, generator=g) for _ in range(2)]
    target = torch.randint(0, V, (C,), generator=g)
    r = ChunkReducer(C, V, k, 1)
    torch.mm(xs[0], W.t(), out=r.slot(C, final=True))
    r.final(target)
    buf = r.buf[:C, :, :V]
    whole = r.buf[:C]  # rows with their padding, as the fused pass reads them
    z, e = buf[:, Z], buf[:, SCRATCH]
    t = z.gather(1, r.ref.top1[:, None])
    b5 = torch.ones(C, 5, V)  # [pf, zf, z, e, 1]: z.[...] and e.[...] in one product (sum e = e . 1)
    rf = ChunkReducer(C, V, k, 1, fused=True)  # the fused kernel, z_f read in the pass
    rg = ChunkReducer(C, V, k, 1, fused=True, gram=fused.lens_gram(W, None, 1.0))  # ... z . z_f from the Gram matrix
    for red in (rf, rg):
        torch.mm(xs[0], W.t(), out=red.slot(C, final=True))
        red.final(target, xs[0])
        torch.mm(xs[1], W.t(), out=red.slot(C))
        red.layer(0, xs[1])  # compiles (not timed)
    thr = z.gather(1, rf.ref.top1[:, None])
    passes = {
        "matmul (floor)": lambda x: torch.mm(x, W.t(), out=r.slot(C)),
        "topk whole rows": lambda x: torch.topk(z, k, dim=-1),
        "blocked top-k": lambda x: r.blocked_topk(C, Z),
        "rank: gt + sum": lambda x: torch.gt(z, t, out=e).sum(-1),
        "rank: bool sum": lambda x: (z > t).sum(-1),
        "rank: count_nonzero": lambda x: torch.count_nonzero(z > t, -1),
        "exp + sum": lambda x: exp_sum(z, z.amax(-1), e),
        "exp only": lambda x: torch.exp(z, out=e),
        "sum only": lambda x: e.sum(-1),
        "dots z.[pf,zf,z,e]": lambda x: torch.bmm(z.unsqueeze(1), buf[:, PF:].transpose(1, 2)),
        "dots + sum (5 rows)": lambda x: torch.bmm(b5[:, 2:4], b5.transpose(1, 2)),
        "layer() total": lambda x: r.layer(0, x),
        "final() eager": lambda x: r.final(target),
        "fused pass (z_f read)": lambda x: fused.block_reduce(whole[:, Z], whole[:, PF], whole[:, ZF], thr, V),
        "fused pass (Gram)": lambda x: fused.block_reduce(whole[:, Z], whole[:, PF], None, thr, V),
        "layer() fused": lambda x: rf.layer(0, x),
        "layer() fused+Gram": lambda x: rg.layer(0, x),
        "final() fused": lambda x: rg.final(target, xs[0]),
    }
    return passes, xs


def compare_chunks(args, chunks):
    """Per token: the head matmul and ChunkReducer.layer at several chunk sizes, interleaved rounds."""
    V, k = args.vocab, args.k
    g = torch.Generator().manual_seed(0)
    W = torch.randn(V, args.d_model, generator=g) * 0.05
    setups = {}
    for C in chunks:
        x = torch.randn(C, args.d_model, generator=g)
        target = torch.randint(0, V, (C,), generator=g)
        r = ChunkReducer(C, V, k, 1)
        torch.mm(x, W.t(), out=r.slot(C, final=True))
        r.final(target)
        setups[C] = (x, target, r)
    times = {(C, what): [] for C in chunks for what in ("matmul", "layer")}
    for rep in range(args.repeats):
        for C in chunks[rep % len(chunks):] + chunks[:rep % len(chunks)]:
            x, target, r = setups[C]
            t0 = time.process_time()
            torch.mm(x, W.t(), out=r.slot(C))
            t1 = time.process_time()
            r.layer(0, x)
            t2 = time.process_time()
            times[(C, "matmul")].append((t1 - t0) / C)
            times[(C, "layer")].append((t2 - t1) / C)
    print(f"vocab {V}, d {args.d_model}, {args.threads} threads; per token, medians of {args.repeats}")
    for C in chunks:
        mm, ly = statistics.median(times[(C, "matmul")]), statistics.median(times[(C, "layer")])
        ratios = [b / a for a, b in zip(times[(C, "matmul")], times[(C, "layer")])]
        print(f"  chunk {C:5d}: matmul {mm * 1e3:7.2f} ms/token, layer() {ly * 1e3:7.2f} ms/token, layer/matmul "
              f"{statistics.median(ratios):.3f} (per round: {' '.join(f'{q:.3f}' for q in ratios)})")


if __name__ == "__main__":
    main()
