"""The readout under lens="tuned": the translator is applied where a layer's state enters the kernel, the last
layer still reproduces the model's own logits, the statistics equal a direct computation with the translated
logits, and metadata and cache keys record the lens and the translators' digest."""
from __future__ import annotations

import numpy as np
import pytest
import tiny_models as tm
import torch
import torch.nn.functional as F

import eeutils
from eeutils.lens.capture import capture_forward
from eeutils.lens.tuned import TunedLens, resolve_lens

DOCS = [[5, 9, 17, 3, 44, 12, 60, 8, 2, 31], [7, 70, 11, 4, 19, 90]]


def _random_lens(lm, seed=0, scale=0.3) -> TunedLens:
    lens = TunedLens(lm.n_layers, lm.config.hidden_size if hasattr(lm.config, "hidden_size") else lm.config.n_embd)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in lens.translators:
            t.weight.copy_(scale * torch.randn(t.weight.shape, generator=g))
            t.bias.copy_(scale * torch.randn(t.bias.shape, generator=g))
    return lens.eval()


@pytest.fixture(params=["llama", "gpt2", "mamba2"])
def lm(request):
    return eeutils.wrap_model(tm.make_model(request.param), name=f"tiny-{request.param}")


def test_identity_translators_give_the_logit_lens_readout(lm):
    lens = TunedLens(lm.n_layers, _random_lens(lm).d_model)
    a = eeutils.readout(lm, DOCS, progress=False)
    b = eeutils.readout(lm, DOCS, progress=False, lens=lens)
    for name in a.stats:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
    assert a.meta["lens"] == "logit" and a.meta["lens_digest"] == ""
    assert b.meta["lens"] == "tuned" and b.meta["lens_digest"] == lens.digest()


def test_tuned_statistics_match_a_direct_computation_and_the_last_layer_is_the_model(lm):
    lens = _random_lens(lm)
    logit = eeutils.readout(lm, DOCS, progress=False, chunk_tokens=4)
    tuned = eeutils.readout(lm, DOCS, progress=False, chunk_tokens=4, lens=lens)
    L = lm.n_layers
    # the last layer has no translator: identical to the logit lens, which reproduces the model's logits
    for name in ("top1", "kl_to_final", "ce", "max_prob", "entropy"):
        np.testing.assert_array_equal(tuned[name][:, L], logit[name][:, L], err_msg=name)
    out, states = capture_forward(lm, torch.tensor(DOCS[0]))
    own = F.log_softmax(out.logits[0].float(), -1)
    n0 = len(DOCS[0])
    rows = np.flatnonzero(tuned.doc == tuned.doc[np.flatnonzero(tuned.position == 0)[0]])
    rows = rows if len(rows) == n0 else np.flatnonzero(tuned.doc == 1 - tuned.doc[rows[0]])
    assert len(rows) == n0
    np.testing.assert_array_equal(tuned["top1"][rows, L], own.argmax(-1).numpy())
    # layers below L: KL(final || translated lens), top-1 and cross-entropy from the translated logits directly
    moved = False
    for layer in range(L):
        with torch.no_grad():
            z = lens.logits(lm, layer, states[layer][0].clone())
        logp = F.log_softmax(z, -1)
        kl = (own.exp() * (own - logp)).sum(-1).numpy()
        np.testing.assert_allclose(tuned["kl_to_final"][rows, layer], kl, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(tuned["top1"][rows, layer], z.argmax(-1).numpy())
        ce = -logp[torch.arange(n0 - 1), torch.tensor(DOCS[0][1:])].numpy()
        np.testing.assert_allclose(tuned["ce"][rows[:-1], layer], ce, rtol=1e-4, atol=1e-5)
        moved |= not np.allclose(tuned["kl_to_final"][:, layer], logit["kl_to_final"][:, layer])
        # the hidden-state statistics read the untranslated stream under either lens
        np.testing.assert_allclose(tuned["hidden_cos"][:, layer], logit["hidden_cos"][:, layer], atol=1e-6)
    assert moved, "a non-identity translator must change the statistics below the last layer"


def test_bad_lens_arguments_are_refused():
    lm = eeutils.wrap_model(tm.make_model("llama"))
    with pytest.raises(ValueError, match="lens must be one of"):
        eeutils.readout(lm, DOCS, progress=False, lens="tunned")
    with pytest.raises(ValueError, match="translators"):
        eeutils.readout(lm, DOCS, progress=False, lens=TunedLens(lm.n_layers + 1, 32))
    with pytest.raises(ValueError, match="logit lens has no settings"):
        resolve_lens(lm, "logit", settings=object())


def test_readout_key_records_the_lens():
    from eeutils.lens.cache import readout_key
    from eeutils.workloads.types import Doc, Workload

    wl = Workload("w", [Doc(text="a b c")])
    base = dict(max_tokens=8, k=5, dtype="float32")
    logit = readout_key("zoo/none", None, wl, **base)
    assert logit == readout_key("zoo/none", None, wl, **base, lens="logit")
    t1 = readout_key("zoo/none", None, wl, **base, lens="tuned", lens_digest="aa")
    t2 = readout_key("zoo/none", None, wl, **base, lens="tuned", lens_digest="bb")
    assert len({logit, t1, t2}) == 3
    with pytest.raises(ValueError, match="digest"):
        readout_key("zoo/none", None, wl, **base, lens="tuned")


# ---------------------------------------------------------------------------------------------- decoding
def test_tuned_decoding_reads_the_translated_state_and_counts_it(lm):
    """A static exit at layer j under the tuned lens predicts the tuned readout's top-1 at j; identity translators
    decode exactly as the logit lens; every translation is counted as d x d + d multiply-adds."""
    from eeutils.decoding import generate_early_exit
    from eeutils.decoding.checks import LENS_EXTRA_MACS
    prompt, j = DOCS[0], 1
    lens = _random_lens(lm, scale=0.5)
    d = lens.d_model
    for tuned in (lens, TunedLens(lm.n_layers, d).eval()):
        g = generate_early_exit(lm, prompt, ("static", j), max_new_tokens=1, lens=tuned, return_trace=False)
        ro = eeutils.readout(lm, [prompt], progress=False, lens=tuned)
        assert g.tokens[0] == int(ro["top1"][len(prompt) - 1, j])
        assert g.check_macs["translator"] == LENS_EXTRA_MACS["tuned"](d) * len(g.tokens)
        assert g.meta["lens"] == "tuned" and g.meta["lens_digest"] == tuned.digest()
    plain = generate_early_exit(lm, prompt, ("margin", 0.0), max_new_tokens=4, return_trace=False)
    ident = generate_early_exit(lm, prompt, ("margin", 0.0), max_new_tokens=4, return_trace=False,
                                lens=TunedLens(lm.n_layers, d).eval())
    assert ident.tokens == plain.tokens and np.array_equal(ident.exit_layers, plain.exit_layers)
    assert "translator" not in plain.check_macs and plain.meta["lens"] == "logit"
    # hidden-state saturation reads raw states: no translation until the exit's prediction
    sat = generate_early_exit(lm, prompt, ("hidden_saturation", 1.0), max_new_tokens=2, lens=lens,
                              return_trace=False)
    assert "translator" not in sat.check_macs  # never fires: the last layer predicts, untranslated


def test_compare_decoding_under_the_tuned_lens(lm):
    from eeutils.decoding import evaluation as de
    lens = _random_lens(lm, scale=0.2)
    f = de.compare_decoding(lm, [DOCS[0]], ["margin:0.0", "static:50%"], strategies=["defer"], max_new_tokens=3,
                            repeats=1, hf_baseline=False, lens=lens)
    assert set(f.lens) == {"tuned"}
    ee = f[f.rule != "full"]
    assert (ee.check_blocks_per_token > 0).all()  # the translations are in the modelled check cost
