"""One-pass statistics of a layer's logits: every per-element reduction in one compiled loop.

The eager kernel (`kernel.ChunkReducer.layer`) makes about five passes over [chunk x vocab] logits (block maxima,
rank count, exp, sum, a batched dot product); each pass is a separate, compute- or memory-bound sweep, and
at 49k-262k vocabularies together they cost ~0.4x the head matmul that produced the logits. Here the same
reductions run per block of `BLOCK` columns in one loop that `torch.compile` fuses:

    block max b_j, s_j = sum exp(z - b_j), sum z * exp(z - b_j), count(z > t), sum z * p_f, sum z * z
    (and sum z * z_f where the lens has no Gram matrix)

and `combine` merges the blocks: M = max_j b_j, S = sum_j s_j exp(b_j - M), lse = M + log S. Every exp is of a
non-positive number, so there is no overflow and no shift to choose, and of at least EXP_FLOOR, so none makes a
denormal number (see EXP_FLOOR). The block maxima also give the exact top-k
(the k largest values lie in the k blocks with the largest maxima). Measured (`benchmarks/profile_kernel.py
--vocab 262144 --chunk 128`, 2 threads, CPU seconds): a layer's statistics cost 0.12x the head matmul that
produced its logits with the Gram shortcut for z . z_f, 0.17x reading z_f, against 0.41x for the eager passes;
the final layer's 0.23x against 0.30x. The pass is then bound by memory traffic (it reads z and p_f: at 50k,
dropping the p_f term takes 35% off it) and by exp.

The results equal the eager kernel's up to fp32 summation order (a test checks 1e-5 relative; top-1, top-k ids
and rank identical). Compilation takes seconds once per process; inductor keeps the compiled code on disk in
the kit's cache (`compile_cache`), so a later process only traces and loads it. Where `torch.compile` cannot run
(no C++ compiler, an unsupported device) `block_reduce` raises `FusedUnavailable` once and the caller falls back
to the eager kernel.
"""
from __future__ import annotations

import os
import warnings

import torch

from ..core.env import eeutils_cache_dir

BLOCK = 256  # columns per block (the same blocks as the eager blocked top-k)
MIN_VOCAB = 16384  # "auto" uses the fused kernel from this vocabulary up: below it a readout is short and the
#                    one-off compile (seconds) costs more than it saves
ENV = "EEUTILS_FUSED_KERNEL"  # "auto" (default), "1" (always, where compile works), "0" (never)
EXP_FLOOR = -69.0  # every exp in the statistics is of max(x, EXP_FLOOR): exp(-69) ~ 1e-30 is a normal fp32 number,
#   so no exp yields a denormal and no product with one becomes one (each costs a microcode assist on x86: on the
#   real Gemma-3-270M, whose layer-0 logits span 1,150 nats, the pass took 4.6x longer at layers 0-1). Wherever it
#   applies, x is relative to a max that contributes exp(0) = 1 (or, in `kernel.exp_sum`'s unshifted path, e^-15
#   or more), so the floor adds < V e^-69 / 1 to a sum: below fp32 resolution; the outputs were bitwise unchanged
#   on those layers


class FusedUnavailable(RuntimeError):
    """torch.compile could not build the fused kernel here; use the eager kernel."""


# The block size is a constant of the traced code, not an argument: as an argument torch.compile(dynamic=True)
# makes it a symbol, and the loop over a block of unknown length ran ~1.5x slower. The count is a float (exact:
# at most BLOCK per block). Inductor fuses these reductions into one loop over each block; variants that stack
# the outputs or merge the blocks in the same graph made it write exp(z - b) to memory and run 3x slower, and
# masking the padding out of z . z (a `where` per element) cost 12%: the pass runs over whole blocks only.
def _reduce_blocks(z, pf, thr, block: int = BLOCK):
    """Per block of `block` columns of z [C, n * block]: (max b, sum e, sum z e, count z > thr, sum z p_f, sum z z)
    with e = exp(max(z - b, EXP_FLOOR)); each [C, n]. thr: [C, 1]."""
    zb = z.unflatten(1, (-1, block))
    bm = zb.amax(-1, keepdim=True)
    e = torch.exp((zb - bm).clamp_min(EXP_FLOOR))
    return (bm.squeeze(-1), e.sum(-1), (zb * e).sum(-1), (zb > thr[:, :, None]).float().sum(-1),
            (zb * pf.unflatten(1, (-1, block))).sum(-1), (zb * zb).sum(-1))


def _reduce_blocks_zf(z, pf, zf, thr, block: int = BLOCK):
    """`_reduce_blocks` plus sum z z_f per block (for a lens without a Gram matrix: z_f read in the pass)."""
    zb = z.unflatten(1, (-1, block))
    bm = zb.amax(-1, keepdim=True)
    e = torch.exp((zb - bm).clamp_min(EXP_FLOOR))
    return (bm.squeeze(-1), e.sum(-1), (zb * e).sum(-1), (zb > thr[:, :, None]).float().sum(-1),
            (zb * pf.unflatten(1, (-1, block))).sum(-1), (zb * zb).sum(-1), (zb * zf.unflatten(1, (-1, block))).sum(-1))


# the names of the per-block reductions `_reduce_blocks` / `_reduce_blocks_zf` return, in their order
BLOCK_TERMS = ("block_max", "s", "ze", "rank", "zpf", "zz", "zzf")
_compiled: dict = {}  # the compiled functions see `block` as the constant BLOCK
INDUCTOR_CACHE = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache() -> str:
    """Where inductor keeps the compiled kernel: $TORCHINDUCTOR_CACHE_DIR when set, else the kit's cache folder
    (EEUTILS_CACHE/inductor), so the compile is paid once per machine and cache, not in every notebook's process
    (measured in docs/BUDGET.md: ~18 CPU s cold, ~5 warm, on 2 cores). Set before the first compile."""
    return os.environ.setdefault(INDUCTOR_CACHE, str(eeutils_cache_dir() / "inductor"))


def _full(fn):
    if fn not in _compiled:
        compile_cache()
        _compiled[fn] = torch.compile(lambda *rows: fn(*rows, block=BLOCK), dynamic=True)
    return _compiled[fn]


_broken: str | None = None


def mode() -> str:
    """The EEUTILS_FUSED_KERNEL setting, checked."""
    value = os.environ.get(ENV, "auto").strip().lower()
    if value not in ("auto", "1", "0"):
        raise ValueError(f"{ENV} must be 'auto', '1' or '0', got {value!r}")
    return value


KERNELS = ("auto", "fused", "eager")  # the readout's `kernel` setting


def check_kernel(kernel: str) -> str:
    """`kernel` if it is one of KERNELS, else a ValueError."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be 'auto', 'fused' or 'eager', got {kernel!r}")
    return kernel


def requested(vocab: int, kernel: str = "auto") -> bool:
    """Whether a readout over this vocabulary asks for the fused kernel, whether or not it compiles here.
    kernel: "auto", "fused" or "eager" (the readout's setting); the environment variable overrides "auto"."""
    if check_kernel(kernel) != "auto":
        return kernel == "fused"
    env = mode()
    return env == "1" or (env == "auto" and vocab >= MIN_VOCAB)


def wanted(vocab: int, kernel: str = "auto") -> bool:
    """Whether a readout over this vocabulary uses the fused kernel: `requested` and not `unavailable`."""
    return requested(vocab, kernel) and _broken is None


def unavailable() -> str | None:
    """Why the fused kernel cannot run in this process (its compile failed: the error), None while it can."""
    return _broken


PAD = torch.finfo(torch.float32).min  # what the logit rows hold past the vocabulary (`block_reduce`)


def block_reduce(z, pf, zf, thr, vocab: int) -> dict:
    """`_reduce_blocks_zf` (`_reduce_blocks` when zf is None) over every block of z, compiled, the last partial block
    included; returns the [C, n_blocks] reductions by name (BLOCK_TERMS; "zzf" only with zf).

    z, pf, zf: [C, n_blocks x BLOCK] rows whose columns from `vocab` on are padding: PAD in z (and zf), 0 in pf
    (or PAD where pf is a logit row itself). PAD = -FLT_MAX is no larger than any logit and finite, so the block
    maxima and the count z > thr are right over whole blocks, and z p_f = 0 in the padding when p_f's padding is 0.
    The sums that multiply z by something nonzero in the padding (z exp(max(z - b, EXP_FLOOR)), z z, z z_f, z p_f
    with pf a logit row) are wrong in the last block only, and are recomputed here, with its sum of exps, over its
    real columns alone (a few [C, < BLOCK] operations). No ragged tail is reduced apart and nothing is
    concatenated: that took ~5% of a layer's statistic time at 50k."""
    global _broken
    if _broken is not None:
        raise FusedUnavailable(_broken)
    fn = _reduce_blocks if zf is None else _reduce_blocks_zf
    rows = (z, pf) if zf is None else (z, pf, zf)
    try:
        parts = dict(zip(BLOCK_TERMS, _full(fn)(*rows, thr)))
    except Exception as exc:  # noqa: BLE001  (any compile failure: the eager kernel gives the same numbers)
        _broken = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"the fused readout kernel is unavailable here ({_broken}); using the eager kernel "
                      f"(slower at large vocabularies; set {ENV}=0 to skip this attempt)", stacklevel=3)
        raise FusedUnavailable(_broken) from exc
    last = (z.shape[1] - 1) // BLOCK * BLOCK
    if vocab < z.shape[1]:  # the last block's sums, without the padding
        zt = z[:, last:vocab]
        e = torch.sub(zt, parts["block_max"][:, -1:]).clamp_min_(EXP_FLOOR).exp_()
        parts["s"][:, -1] = e.sum(-1)
        others = (("ze", e), ("zpf", pf[:, last:vocab]), ("zz", zt))
        for name, other in others + ((("zzf", zf[:, last:vocab]),) if zf is not None else ()):
            parts[name][:, -1] = torch.linalg.vecdot(zt, other)
    return parts


def combine(parts: dict) -> dict:
    """Merge the block reductions into per-row terms by name: block_max [C, n] (kept for the top-k), s, lse, ze,
    zpf, rank, zz and, when `parts` come from `_reduce_blocks_zf`, zzf (a linear lens gets z . z_f from the Gram
    matrix instead), with e = exp(max(z - M, EXP_FLOOR)), s = sum e, lse = logsumexp(z), rank = count(z > thr)
    (a float, exact)."""
    bm = parts["block_max"]
    m = bm.amax(-1)
    w = torch.exp((bm - m[:, None]).clamp_min(EXP_FLOOR))
    s = torch.linalg.vecdot(parts["s"], w)
    out = {"block_max": bm, "s": s, "lse": m + s.log(), "ze": torch.linalg.vecdot(parts["ze"], w)}
    out.update((name, parts[name].sum(-1)) for name in ("zpf", "rank", "zz", "zzf") if name in parts)
    return out


def lens_gram(weight: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """G = scale^2 [W, b]^T [W, b] ([d + 1, d + 1] fp32) for a linear lens z = scale (x W^T + b): then for
    x~ = [x, 1], z . z' = x~ G x~'^T, so z . z and z . z_f cost O(d^2) per token instead of a pass over the
    vocabulary. One [d x V] x [V x d] product per model (about five chunk-sized head products)."""
    w = weight.float()
    d = w.shape[1]
    g = torch.empty((d + 1, d + 1), dtype=torch.float32, device=w.device)
    torch.mm(w.t(), w, out=g[:d, :d])
    b = torch.zeros(w.shape[0], dtype=torch.float32, device=w.device) if bias is None else bias.float()
    g[:d, d] = g[d, :d] = b @ w
    g[d, d] = b @ b
    return g.mul_(scale * scale)


def gram_ref(gram: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
    """u = G x~_ref^T per row ([C, d + 1]) for the chunk's final-layer lens inputs x_ref [C, d]: then
    z . z_f = x~ . u for any layer's lens input x (`gram_dot`), d + 1 multiply-adds per token and layer."""
    d = x_ref.shape[1]
    return x_ref @ gram[:d] + gram[d]


def gram_dot(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """z . z_f per row from a layer's lens inputs x [C, d] and `gram_ref`'s u."""
    return torch.linalg.vecdot(x, u[:, :-1]) + u[:, -1]


def gram_products(x: torch.Tensor, gram: torch.Tensor, x_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z . z, z . z_ref) per row from the lens inputs x, x_ref ([C, d], the normed states) and `lens_gram`
    (the reference arithmetic of the shortcut; the readout takes z . z from the fused pass)."""
    gx = gram_ref(gram, x)  # G x~ for x~ = [x, 1]
    return gram_dot(x, gx), gram_dot(x_ref, gx)
