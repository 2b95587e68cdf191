"""The chunk kernel against a plain float64 reference on random logits: several vocabulary and chunk sizes,
block and chunk boundaries, tied values, logits far from zero (the shifted-exp path)."""
import math

import numpy as np
import pytest
import torch

from eeutils.lens.kernel import ChunkReducer, hidden_cosines
from eeutils.lens.statistics import REGISTRY

K = 5


def reference(z, zf, h, h_prev, hf, target):
    """Every statistic as result.STATISTICS defines it, in float64, from whole rows."""
    z64, zf64 = z.double(), zf.double()
    logp, logpf = torch.log_softmax(z64, -1), torch.log_softmax(zf64, -1)
    p, pf = logp.exp(), logpf.exp()
    top = torch.sort(z, dim=-1, descending=True, stable=True)
    top_f = torch.sort(zf, dim=-1, descending=True, stable=True).indices[:, :K]
    vals = top.values[:, :K]
    p_top = p.gather(1, top.indices[:, :2])
    cos = torch.nn.functional.cosine_similarity
    return {
        "max_prob": p_top[:, 0], "margin": p_top[:, 0] - p_top[:, 1],
        "entropy": -(p * logp).sum(-1), "kl_to_final": (pf * (logpf - logp)).sum(-1),
        "ce": torch.where(target >= 0, -logp.gather(1, target.clamp_min(0)[:, None])[:, 0], float("nan")),
        "logit_cos": cos(z64, zf64, -1), "hidden_cos": cos(h.double(), hf.double(), -1),
        "hidden_cos_prev": cos(h.double(), h_prev.double(), -1),
        "topk_overlap": torch.tensor([len(set(a.tolist()) & set(b.tolist())) / K
                                      for a, b in zip(top.indices[:, :K], top_f)], dtype=torch.float64),
        # rank is defined on the fp32 logits themselves
        "rank_of_final": (z > z.gather(1, top_f[:, :1])).sum(-1), "topk_values": vals,
        "top1_f": top_f[:, 0],
    }


FLOATS = tuple(name for name, spec in REGISTRY.items() if spec.column == "float")


def run_kernel(reducer, z, zf, h, h_prev, hf, target):
    """Final layer zf, layers 0 and 1 both z (states h_prev, h): the statistics by name of layers 2, 1 and 0."""
    n = z.shape[0]
    reducer.slot(n, final=True).copy_(zf)
    reducer.final(target)
    for layer in range(2):
        reducer.slot(n).copy_(z)
        reducer.layer(layer)
    st = reducer.finish(hidden_cosines([h_prev, h, hf]))
    return tuple({name: v[:, layer] for name, v in st.items()} for layer in (2, 1, 0))


def logits(n, vocab, gen, scale=3.0, offset=0.0, ties=False):
    z = torch.randn(n, vocab, generator=gen) * scale + offset
    if ties:  # few distinct values: the top-k and rank boundaries fall inside runs of equal values
        z = torch.round(z)
    return z


CASES = [  # vocab, chunk rows, rows used, scale, offset, ties
    (300, 4, 4, 3.0, 0.0, False),  # fewer blocks than 4k: whole-row top-k
    (100, 3, 3, 3.0, 0.0, False),  # a vocabulary smaller than one block: the padded block is the only one
    (2048, 7, 7, 3.0, 0.0, False),
    (3001, 5, 3, 3.0, 0.0, False),  # ragged last block; a last chunk shorter than the workspace
    (50257, 3, 3, 5.0, 0.0, False),
    (8192, 1, 1, 1.0, 0.0, False),
    (4096, 6, 6, 30.0, -150.0, False),  # every row max far below -60: exp(z - shift)
    (4096, 4, 4, 20.0, 70.0, False),  # row maxima above +60
    (5000, 6, 6, 2.0, 0.0, True),
    (3001, 4, 4, 400.0, -1350.0, False),  # logits spanning ~3,000 nats below a top near 0: most exps under e^-69
]


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("vocab,rows,n,scale,offset,ties", CASES)
def test_kernel_matches_float64_reference(vocab, rows, n, scale, offset, ties, fused):
    gen = torch.Generator().manual_seed(vocab + n)
    z, zf = logits(n, vocab, gen, scale, offset, ties), logits(n, vocab, gen, scale, offset, ties)
    d = 16
    h, h_prev, hf = (torch.randn(n, d, generator=gen) for _ in range(3))
    target = torch.randint(0, vocab, (n,), generator=gen)
    target[-1] = -1
    reducer = ChunkReducer(rows, vocab, K, 2, fused=fused)
    fin, st, st0 = run_kernel(reducer, z, zf, h, h_prev, hf, target)
    assert reducer.fused == fused  # the compiled kernel ran (no silent fallback)
    ref = reference(z, zf, h, h_prev, hf, target)

    ids = st["topk"].long()
    # top-k: the k largest values in order, distinct ids pointing at them
    assert torch.equal(z.gather(1, ids), ref["topk_values"])
    assert all(len(set(r.tolist())) == K for r in ids)
    assert torch.equal(st["top1"].long(), ids[:, 0])
    if not ties:
        assert torch.equal(ids[:, 0], torch.argmax(z, -1))
        assert torch.equal(fin["top1"].long(), torch.argmax(zf, -1))
    # rank of the final top-1 (whichever tied id the kernel picked: the count is the same)
    assert torch.equal(zf.gather(1, fin["top1"][:, None].long()), zf.max(-1, keepdim=True).values)
    t = z.gather(1, fin["top1"][:, None].long())
    assert torch.equal(st["rank_of_final"].long(), (z > t).sum(-1))
    assert torch.equal(fin["rank_of_final"], torch.zeros_like(fin["rank_of_final"]))

    for name in FLOATS:
        got, want = st[name].double(), ref[name]
        if name == "topk_overlap" and ties:
            continue  # which of the tied ids are in the set is implementation-defined
        nan = torch.isnan(want)
        assert torch.equal(torch.isnan(got), nan), name
        # fp32 sums over the vocabulary: the error scales with the size of the logits being summed
        scale = 1 + torch.maximum(z.abs().amax(-1), zf.abs().amax(-1)).double()
        tol = 2e-5 * scale + 2e-5 * want.abs() if name in ("entropy", "kl_to_final", "ce") else 2e-5
        err = (got - want).abs()[~nan]
        assert bool((err <= tol[~nan] if torch.is_tensor(tol) else err <= tol).all()), (name, float(err.max()))
    # layer 0 read the same logits as layer 1: the same record, and the convention for hidden_cos_prev
    for name in set(st) - {"hidden_cos", "hidden_cos_prev"}:
        assert torch.allclose(st0[name].double(), st[name].double(), rtol=0, atol=0, equal_nan=True), name
    assert torch.equal(st0["hidden_cos_prev"], torch.ones(n))
    # the final layer against itself
    assert np.allclose(fin["kl_to_final"].numpy(), 0.0, atol=1e-5)
    assert np.allclose(fin["logit_cos"].numpy(), 1.0, atol=1e-6)


def test_to_host_gives_every_statistic_by_name_either_way():
    """The stacked copy (one per dtype and shape, used off the CPU) gives the same arrays as per-name views."""
    from eeutils.lens.kernel import to_host
    gen = torch.Generator().manual_seed(9)
    n, vocab, layers = 5, 600, 2
    r = ChunkReducer(n, vocab, K, layers)
    r.slot(n, final=True).copy_(logits(n, vocab, gen))
    r.final(torch.randint(0, vocab, (n,), generator=gen))
    for layer in range(layers):
        r.slot(n).copy_(logits(n, vocab, gen))
        r.layer(layer)
    st = r.finish(hidden_cosines([torch.randn(n, 4, generator=gen) for _ in range(layers + 1)]))
    views, stacked = to_host(st), to_host(st, stacked=True)
    assert list(views) == list(stacked) == [*REGISTRY, "topk"]
    for name, a in views.items():
        assert a.dtype == stacked[name].dtype and np.array_equal(a, stacked[name], equal_nan=True), name
        assert a.shape == ((n, layers + 1, K) if name == "topk" else (n, layers + 1))


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_no_subnormal_numbers_from_wide_logits(fused):
    """Logits spanning thousands of nats (a real model's first layers) make no subnormal exp: p_f, which every layer
    multiplies, holds none, and the eager kernel's exp scratch none either (each would cost a microcode assist)."""
    from eeutils.lens.fused import EXP_FLOOR
    from eeutils.lens.kernel import exp_sum
    gen = torch.Generator().manual_seed(3)
    n, vocab = 4, 3001
    zf, z = torch.randn(n, vocab, generator=gen) * 400, torch.randn(n, vocab, generator=gen) * 400
    r = ChunkReducer(n, vocab, K, 1, fused=fused)
    r.slot(n, final=True).copy_(zf)
    r.final(torch.full((n,), -1))
    tiny = torch.finfo(torch.float32).tiny
    pf = r.buf[:n, 0, :vocab]
    assert bool((pf >= tiny).all()) and float(pf.min()) < 1e-25  # the floor reached, not crossed
    out = torch.empty_like(z)
    for top in (z.amax(-1), torch.full((n,), -5.0)):  # maxima far out (the shifted path), and in range (unshifted)
        logits = z - z.amax(-1, keepdim=True) + top[:, None]
        exp_sum(logits, top, out)
        assert bool((out >= tiny).all()) and float(out.min()) == pytest.approx(math.exp(EXP_FLOOR), rel=1e-5)


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("bad", [float("-inf"), float("inf"), float("nan")])
def test_a_non_finite_logit_in_a_middle_layer_is_reported(fused, bad):
    """-inf leaves logsumexp finite but every sum with z in it not: it is reported like NaN and +inf."""
    from eeutils.lens.kernel import NonFiniteLogits
    gen = torch.Generator().manual_seed(5)
    n, vocab = 3, 3001
    r = ChunkReducer(n, vocab, K, 2, fused=fused)
    r.slot(n, final=True).copy_(torch.randn(n, vocab, generator=gen))
    r.final(torch.full((n,), -1))
    for layer in range(2):
        z = torch.randn(n, vocab, generator=gen)
        if layer == 1:
            z[2, 17] = bad
        r.slot(n).copy_(z)
        r.layer(layer)
    h = torch.randn(n, 4, generator=gen)
    with pytest.raises(NonFiniteLogits) as err:
        r.finish(hidden_cosines([h, h, h]))
    assert err.value.args == (1, 2)


@pytest.mark.parametrize("vocab", [100, 3001, 4096])
def test_fused_linear_lens_matches_eager(vocab):
    """The fused kernel with the lens' Gram matrix (z . z_f from the lens inputs, padded last block recomputed)
    gives the eager kernel's numbers on logits that really are x W^T + b."""
    from eeutils.lens.fused import lens_gram
    gen = torch.Generator().manual_seed(vocab)
    d, n, layers = 24, 5, 3
    w, b = torch.randn(vocab, d, generator=gen), torch.randn(vocab, generator=gen)
    xs = [torch.randn(n, d, generator=gen) for _ in range(layers + 1)]
    target = torch.randint(0, vocab, (n,), generator=gen)
    h = [torch.randn(n, 8, generator=gen) for _ in range(layers + 1)]
    out = []
    for fused, gram in ((False, None), (True, lens_gram(w, b, 1.0))):
        r = ChunkReducer(n, vocab, K, layers, fused=fused, gram=gram)
        torch.addmm(b, xs[-1], w.t(), out=r.slot(n, final=True))
        r.final(target, xs[-1])
        for layer in range(layers):
            torch.addmm(b, xs[layer], w.t(), out=r.slot(n))
            r.layer(layer, xs[layer])
        assert r.fused == fused
        out.append(r.finish(hidden_cosines(h)))
    eager, fast = out
    assert list(eager) == list(fast) == [*REGISTRY, "topk"]
    for name, a in eager.items():
        if a.is_floating_point():
            assert torch.allclose(fast[name], a, rtol=1e-4, atol=1e-4), name
        else:
            assert torch.equal(fast[name], a), name


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_max_at_block_boundaries_and_in_padding_tail(fused):
    vocab, n = 10 * 256 + 10, 4  # enough blocks for the blocked top-k path
    z = torch.zeros(n, vocab)
    z[0, 255], z[1, 256], z[2, vocab - 1], z[3, 0] = 5.0, 5.0, 5.0, 5.0
    z[:, 511] = 4.0  # second everywhere
    zf = z.clone()
    h = torch.randn(n, 8)
    reducer = ChunkReducer(n, vocab, 2, 1, fused=fused)
    reducer.slot(n, final=True).copy_(zf)
    reducer.final(torch.full((n,), -1))
    reducer.slot(n).copy_(z)
    reducer.layer(0)
    st = reducer.finish(hidden_cosines([h, h]))
    assert st["top1"][:, 0].tolist() == [255, 256, vocab - 1, 0]
    assert st["topk"][:, 0, 1].tolist() == [511] * n
    assert st["rank_of_final"][:, 0].tolist() == [0] * n


def test_auto_chunk_tokens_keeps_the_workspace_in_budget():
    from eeutils.lens.kernel import WORKSPACE_BYTES, auto_chunk_tokens
    assert [auto_chunk_tokens(v) for v in (2048, 50257, 128256, 262144)] == [256, 256, 128, 128]
    for v in (2048, 50257, 65536, 128256):  # within budget wherever 128 rows fit in it
        assert auto_chunk_tokens(v) * 4 * 4 * v <= WORKSPACE_BYTES
