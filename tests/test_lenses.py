"""Lens objects (`eeutils.lens.lenses`): a new lens is one class, passed to `readout` and `generate_early_exit` as
it is; the logit lens reproduces every family's own logits at the last layer; the string form resolves in one
place (`as_lens`); the many settings travel as a config or as keywords, unknown ones named."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
import tiny_models as tm
import torch
import torch.nn.functional as F

import eeutils
from eeutils.decoding import DecodeConfig, generate_early_exit
from eeutils.lens import Lens, LogitLens, ReadoutConfig, TunedLens, Unembed, as_lens, capture_forward, fused
from eeutils.lens.cache import readout_key
from eeutils.workloads.types import Doc, Workload

DOCS = [[5, 9, 17, 3, 44, 12, 60, 8, 2, 31], [7, 70, 11, 4, 19, 90]]


class ShiftedLens(LogitLens):
    """A toy lens: every layer below the last decoded after adding a fixed vector to its residual state."""

    name = "shifted"

    def __init__(self, unembed, shift: torch.Tensor, n_layers: int):
        super().__init__(unembed)
        self.shift, self.n_layers = shift, n_layers

    def transform_hidden(self, h, layer):
        return h if layer == self.n_layers else h + self.shift.to(h.device, h.dtype)

    def digest(self) -> str:
        return hashlib.sha256(self.shift.numpy().tobytes()).hexdigest()


def _shifted(lm, scale=3.0, seed=0) -> ShiftedLens:
    d = lm.head.weight.shape[1]
    return ShiftedLens(Unembed(lm), scale * torch.randn(d, generator=torch.Generator().manual_seed(seed)), lm.n_layers)


@pytest.fixture(scope="module")
def lm():
    return eeutils.wrap_model(tm.make_model("llama"), name="tiny-llama")


def test_a_new_lens_is_one_class_and_the_readout_decodes_through_it(lm):
    lens = _shifted(lm)
    assert isinstance(lens, Lens)
    logit = eeutils.readout(lm, DOCS, progress=False, k=3)
    got = eeutils.readout(lm, DOCS, progress=False, k=3, lens=lens)
    assert (got.meta["lens"], got.meta["lens_digest"]) == ("shifted", lens.digest())
    L = lm.n_layers
    for name in ("top1", "max_prob", "kl_to_final", "hidden_cos"):  # last layer and hidden states: untouched
        np.testing.assert_array_equal(got[name][:, L], logit[name][:, L], err_msg=name)
    np.testing.assert_array_equal(got["hidden_cos"], logit["hidden_cos"])
    # below the last layer: the statistics of the shifted state's logits, computed directly
    _, states = capture_forward(lm, torch.tensor(DOCS[0]))
    rows = np.flatnonzero(got.doc == 0)  # document 0's tokens, in order
    assert np.array_equal(got.position[rows], np.arange(len(DOCS[0])))
    final = F.log_softmax(lm.layer_logits(states[L][0]), -1)
    for layer in range(L):
        logp = F.log_softmax(lm.layer_logits(states[layer][0] + lens.shift), -1)
        np.testing.assert_array_equal(got["top1"][rows, layer], logp.argmax(-1).numpy())
        kl = (final.exp() * (final - logp)).sum(-1).numpy()
        np.testing.assert_allclose(got["kl_to_final"][rows, layer], kl, rtol=1e-4, atol=1e-5)
    assert not np.array_equal(got["top1"][:, :L], logit["top1"][:, :L])


def test_an_identity_lens_and_the_logit_lens_object_give_the_string_forms_numbers(lm):
    zero = ShiftedLens(Unembed(lm), torch.zeros(lm.head.weight.shape[1]), lm.n_layers)
    by_name = eeutils.readout(lm, DOCS, progress=False)
    for lens in (zero, LogitLens.of(lm), as_lens(lm, "logit")):
        got = eeutils.readout(lm, DOCS, progress=False, lens=lens)
        for name in by_name.stats:
            np.testing.assert_array_equal(got[name], by_name[name], err_msg=name)
        np.testing.assert_array_equal(got.topk, by_name.topk)


@pytest.mark.parametrize("model_type", sorted(tm.CONFIGS))
def test_the_logit_lens_reproduces_every_familys_logits_at_the_last_layer(model_type):
    lm = eeutils.wrap_model(tm.make_model(model_type))
    lens = LogitLens.of(lm)
    assert lens.unembed.ops == lm.logit_ops and not hasattr(lm.logit_fn, "ops")  # the transforms are data
    out, states = capture_forward(lm, torch.randint(1, tm.VOCAB, (1, 9), generator=torch.Generator().manual_seed(0)))
    own = out.logits[0].float()
    z = lens.forward(states[-1][0], lm.n_layers)
    assert float((z - own).abs().max()) <= 1e-4
    buf = torch.empty_like(z)
    with torch.inference_mode():  # the readout's in-place path (it runs in inference mode): the same numbers
        lens.unembed.into(states[-1][0], buf)
    assert torch.equal(buf, z)


def test_logit_ops_follow_the_adapter_row_and_a_custom_logit_fn_is_used_as_it_is(lm):
    gemma2 = eeutils.wrap_model(tm.make_model("gemma2"))
    assert [k for k, _ in gemma2.logit_ops] == ["softcap"] and lm.logit_ops == ()
    doubled = replace(lm, logit_fn=lambda z: 2.0 * z)
    assert doubled.logit_ops is None and Unembed(doubled).gram() is None
    r = eeutils.readout(doubled, DOCS, progress=False)
    _, states = capture_forward(lm, torch.tensor(DOCS[1]))
    p = torch.softmax(2.0 * lm.layer_logits(states[-1][0]), -1).max(-1).values.numpy()
    rows = np.flatnonzero(r.doc == 1)
    np.testing.assert_allclose(r["max_prob"][rows, -1], p, rtol=1e-5)


def test_the_string_form_resolves_in_as_lens(lm):
    assert isinstance(as_lens(lm, "logit"), LogitLens)
    t = TunedLens(lm.n_layers, lm.head.weight.shape[1])
    bound = as_lens(lm, t)
    assert bound is t and t.unembed.model is lm and t.record()["lens"] == "tuned"
    other = eeutils.wrap_model(tm.make_model("llama", seed=1), name="other")
    with pytest.raises(ValueError, match="head of"):
        as_lens(other, _shifted(lm))
    with pytest.raises(ValueError, match="lens must be one of"):
        as_lens(lm, 3)
    with pytest.raises(ValueError, match="not bound"):
        TunedLens(2, 4)(torch.zeros(1, 4), 0)


def test_decoding_takes_a_lens_object(lm):
    lens = _shifted(lm)
    g = generate_early_exit(lm, DOCS[0], ("static", 1), max_new_tokens=1, lens=lens, return_trace=False)
    ro = eeutils.readout(lm, [DOCS[0]], progress=False, lens=lens)
    assert g.tokens[0] == int(ro["top1"][len(DOCS[0]) - 1, 1])
    assert (g.meta["lens"], g.meta["lens_digest"]) == ("shifted", lens.digest())
    assert "translator" not in g.check_macs  # a lens whose transform costs no weight multiply-adds


def test_settings_come_as_a_config_or_as_keywords_and_unknown_ones_are_named(lm):
    a = eeutils.readout(lm, DOCS, progress=False, k=3, chunk_tokens=4)
    b = eeutils.readout(lm, DOCS, config=ReadoutConfig(k=3, chunk_tokens=4, progress=False))
    c = eeutils.readout(lm, DOCS, config=ReadoutConfig(k=7, chunk_tokens=4), k=3, progress=False)
    for r in (b, c):
        assert r.meta["k"] == 3 and r.meta["chunk_tokens"] == 4
        np.testing.assert_array_equal(r.topk, a.topk)
    with pytest.raises(TypeError, match="unknown setting.*'chunk'.*chunk_tokens"):
        eeutils.readout(lm, DOCS, chunk=4)
    with pytest.raises(ValueError, match="on_overflow"):
        ReadoutConfig(on_overflow="wrap")
    with pytest.raises(ValueError, match="kernel must be"):
        ReadoutConfig(kernel="fast")
    g1 = generate_early_exit(lm, DOCS[0], ("margin", 0.0), max_new_tokens=3, stop_at_eos=False)
    g2 = generate_early_exit(lm, DOCS[0], ("margin", 0.0), config=DecodeConfig(max_new_tokens=3, stop_at_eos=False))
    assert g1.tokens == g2.tokens and np.array_equal(g1.exit_layers, g2.exit_layers)
    with pytest.raises(TypeError, match="generate_early_exit.*'max_tokens'"):
        generate_early_exit(lm, DOCS[0], None, max_tokens=3)
    with pytest.raises(TypeError, match="KeySettings"):
        readout_key("zoo/none", None, Workload("w", [Doc(text="a b")]), max_tokens=8, k=5, dtype="float32", bacth=2)


def test_cache_keys_follow_the_lens_identity():
    wl, base = Workload("w", [Doc(text="a b c")]), dict(max_tokens=8, k=5, dtype="float32")
    keys = {readout_key("zoo/none", None, wl, **base),
            readout_key("zoo/none", None, wl, **base, lens="shifted", lens_digest="aa"),
            readout_key("zoo/none", None, wl, **base, lens="tuned", lens_digest="aa"),
            readout_key("zoo/none", None, wl, **base, lens="tuned", lens_digest="bb")}
    assert len(keys) == 4


def test_a_fused_kernel_that_cannot_compile_is_recorded_in_the_meta(lm, broken_fused_compile):
    plain = eeutils.readout(lm, DOCS, progress=False, kernel="eager")
    assert "kernel_fallback" not in plain.meta

    with pytest.warns(UserWarning, match="fused readout kernel is unavailable"):
        first = eeutils.readout(lm, DOCS, kernel="fused", progress=False)
    again = eeutils.readout(lm, DOCS, kernel="fused", progress=False)  # no warning now: the meta still says why
    for r in (first, again):
        assert r.meta["kernel"] == "eager" and "no C++ compiler" in r.meta["kernel_fallback"]
        np.testing.assert_array_equal(r["top1"], plain["top1"])
