"""The fused statistic kernel (`eeutils.lens.fused`) inside the readout, against the eager kernel.

Models with a vocabulary of several blocks plus a ragged tail, over the head kinds the Gram shortcut must get
right or must refuse: a plain linear head (Gram), a biased head (Gram with the bias row), a scaled head (cohere:
mul, granite: div; Gram scaled), a soft-capped head (gemma2: no Gram, z_f read in the pass).
"""
import numpy as np
import pytest
import torch

import eeutils
from eeutils.lens import fused
from eeutils.lens.readout import _linear_gram
from eeutils.lens.statistics import REGISTRY

import tiny_models as tm

VOCAB = 3 * 256 + 37  # three whole blocks and a tail
EXACT = tuple(name for name, spec in REGISTRY.items() if spec.column == "int")
FLOATS = tuple(name for name, spec in REGISTRY.items() if spec.column == "float")


def _model(model_type, bias=False):
    cfg = tm.make_config(model_type)
    cfg.vocab_size = VOCAB
    torch.manual_seed(1)
    model = __import__("transformers").AutoModelForCausalLM.from_config(cfg)
    tm.perturb_norms(model, 1)
    if bias:  # a head with a bias (GPT-J style): the Gram matrix carries it in its last row and column
        head = model.get_output_embeddings()
        new = torch.nn.Linear(head.in_features, head.out_features, bias=True)
        with torch.no_grad():
            new.weight.copy_(head.weight)
            new.bias.normal_(0.0, 0.5)
        model.lm_head = new
    return eeutils.wrap_model(model.eval())


@pytest.mark.parametrize("model_type,bias,gram", [("llama", False, True), ("llama", True, True),
                                                  ("cohere", False, True), ("granite", False, True),
                                                  ("gemma2", False, False)])
def test_fused_readout_equals_eager(model_type, bias, gram):
    lm = _model(model_type, bias)
    assert (_linear_gram(lm) is not None) == gram
    if bias:
        assert lm.head.bias is not None
        assert eeutils.check_last_layer(lm, torch.randint(1, VOCAB, (1, 9))) <= 1e-4
    g = torch.Generator().manual_seed(3)
    ids = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in (23, 9, 31)]
    eager = eeutils.readout(lm, ids, k=4, kernel="eager", progress=False, chunk_tokens=16)
    fast = eeutils.readout(lm, ids, k=4, kernel="fused", progress=False, chunk_tokens=16)
    assert (eager.meta["kernel"], fast.meta["kernel"]) == ("eager", "fused")
    for name in EXACT:
        assert np.array_equal(eager[name], fast[name]), name
    assert np.array_equal(eager.topk, fast.topk)
    for name in FLOATS:
        a, b = eager[name], fast[name]
        assert np.array_equal(np.isnan(a), np.isnan(b)), name
        ok = ~np.isnan(a)
        assert np.allclose(a[ok], b[ok], rtol=1e-5, atol=2e-6), (name, float(np.abs(a[ok] - b[ok]).max()))


def test_gram_products_hand_values():
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # V = 3, d = 2
    b = torch.tensor([0.5, -1.0, 0.0])
    x, xr = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0]])
    # z = 3 (x W^T + b): x -> 3 * [1.5, 3, 3] = [4.5, 9, 9]; xr -> 3 * [0.5, 1, 1] = [1.5, 3, 3]
    zz, zr = fused.gram_products(x, fused.lens_gram(w, b, 3.0), xr)
    assert torch.allclose(zz, torch.tensor([4.5**2 + 81 + 81]))
    assert torch.allclose(zr, torch.tensor([4.5 * 1.5 + 27 + 27]))


def test_gram_follows_weight_changes():
    lm = _model("llama")
    g1 = _linear_gram(lm)
    assert _linear_gram(lm) is g1  # cached
    with torch.no_grad():
        lm.head.weight.mul_(2.0)  # in place: the version counter moves
    g2 = _linear_gram(lm)
    assert torch.allclose(g2, 4 * g1, rtol=1e-5)


def test_kernel_choice_and_setting(monkeypatch):
    assert fused.wanted(fused.MIN_VOCAB) and not fused.wanted(2048)
    assert fused.wanted(2048, "fused") and not fused.wanted(10**6, "eager")
    monkeypatch.setenv(fused.ENV, "0")
    assert not fused.wanted(10**6)
    monkeypatch.setenv(fused.ENV, "1")
    assert fused.wanted(100)
    monkeypatch.setenv(fused.ENV, "yes")
    with pytest.raises(ValueError, match=fused.ENV):
        fused.wanted(100)
    with pytest.raises(ValueError, match="kernel must be"):
        fused.wanted(100, "fast")


def test_compile_failure_falls_back_to_eager_with_a_warning(broken_fused_compile):
    lm = _model("llama")
    ids = [list(range(1, 20))]
    want = eeutils.readout(lm, ids, kernel="eager", progress=False)

    with pytest.warns(UserWarning, match="fused readout kernel is unavailable"):
        got = eeutils.readout(lm, ids, kernel="fused", progress=False)
    assert got.meta["kernel"] == "eager"
    assert np.array_equal(got["top1"], want["top1"]) and np.allclose(got["entropy"], want["entropy"])
    assert not fused.wanted(10**6)  # for the rest of the process
