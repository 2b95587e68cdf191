"""Tuned lens: identity start equals the logit lens; trained translators lower held-out KL at every layer;
cache keyed by weights and settings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eeutils.zoo import list_zoo

pytestmark = [pytest.mark.skipif("dense-mid" not in list_zoo(), reason="zoo not built")]


pytestmark.append(pytest.mark.usefixtures("one_thread"))


@pytest.fixture(scope="module")
def dense_mid():
    import eeutils

    return eeutils.load_model("zoo/dense-mid")


FAST = {"n_windows": 128, "steps": 40, "batch": 8, "lr": 3e-3}


def test_identity_translators_are_the_logit_lens(dense_mid):
    from eeutils.lens.tuned import TunedLens, corpus_windows, heldout_kl

    va = corpus_windows(dense_mid, "validation", 8)
    lens = TunedLens(dense_mid.n_layers, 128)
    h = torch.randn(5, 128)
    assert torch.equal(lens.translate(dense_mid.n_layers, h), h)
    assert torch.allclose(lens.logits(dense_mid, 2, h), dense_mid.layer_logits(h), atol=1e-5)
    np.testing.assert_allclose(heldout_kl(dense_mid, va, lens), heldout_kl(dense_mid, va), atol=1e-5)
    with pytest.raises(IndexError):
        lens.translate(dense_mid.n_layers + 1, h)


def test_trained_translators_lower_heldout_kl_at_every_layer(dense_mid, tmp_path, monkeypatch):
    from eeutils.lens.tuned import (
        TunedLensSettings,
        corpus_windows,
        heldout_kl,
        tuned_lens,
    )

    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path))
    settings = TunedLensSettings(**FAST)
    lens = tuned_lens(dense_mid, settings, progress=False)  # trained on the corpus TRAIN split
    va = corpus_windows(dense_mid, "validation", 32)  # held out from the translators' training
    logit, tuned = heldout_kl(dense_mid, va), heldout_kl(dense_mid, va, lens)
    L = dense_mid.n_layers
    assert logit[L] < 1e-5 and tuned[L] < 1e-5  # the last layer is the model's own distribution
    assert (tuned[:L] < logit[:L]).all(), (logit.round(3), tuned.round(3))
    assert tuned[0] < 0.5 * logit[0]  # the embedding layer gains most (the logit lens predicts the input back)
    # cached by weights digest + text + settings: a second call loads the same translators
    files = list((tmp_path / "tuned_lens").glob("*.safetensors"))
    assert len(files) == 1
    again = tuned_lens(dense_mid, settings, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(lens.state_dict().values(), again.state_dict().values()))
    # the same translators inside the streaming readout, on held-out workload documents (the test split)
    import eeutils

    wl = eeutils.workloads.get_workload("zoo-prose", n_docs=6)
    r_logit = eeutils.readout(dense_mid, wl, progress=False, chunk_tokens=64)
    r_tuned = eeutils.readout(dense_mid, wl, progress=False, chunk_tokens=64, lens=lens)
    assert r_tuned.meta["lens"] == "tuned" and r_tuned.meta["lens_digest"] == lens.digest()
    np.testing.assert_array_equal(r_tuned["top1"][:, L], r_logit["top1"][:, L])  # the model's own prediction
    kl_l, kl_t = np.nanmean(r_logit["kl_to_final"], 0), np.nanmean(r_tuned["kl_to_final"], 0)
    assert (kl_t[:L] < kl_l[:L]).all(), (kl_l.round(3), kl_t.round(3))


def test_cache_key_changes_with_weights_and_settings(dense_mid):
    from dataclasses import replace

    from eeutils.lens.tuned import TunedLensSettings, cache_key

    wins = torch.randint(3, 2048, (4, 16))
    s = TunedLensSettings(**FAST)
    k = cache_key(dense_mid, wins, s)
    assert k == cache_key(dense_mid, wins.clone(), s)
    assert k != cache_key(dense_mid, wins, replace(s, steps=41))
    assert k != cache_key(dense_mid, wins[:3], s)
    w = dense_mid.final_norm.weight
    with torch.no_grad():
        w[0] += 1.0
    try:
        assert k != cache_key(dense_mid, wins, s)
    finally:
        with torch.no_grad():
            w[0] -= 1.0


def test_bad_settings_are_refused():
    from eeutils.lens.tuned import TunedLensSettings

    with pytest.raises(ValueError, match="steps"):
        TunedLensSettings(steps=0)
    with pytest.raises(ValueError, match="lr"):
        TunedLensSettings(lr=0.0)


@pytest.mark.skipif("gpt2-mid" not in list_zoo(), reason="gpt2-mid not built")
def test_another_family_layout():
    """GPT-2 (LayerNorm with bias, learned positions): the identity start is again the logit lens."""
    import eeutils
    from eeutils.lens.tuned import TunedLens, corpus_windows, heldout_kl

    m = eeutils.load_model("zoo/gpt2-mid")
    va = corpus_windows(m, "validation", 4)
    np.testing.assert_allclose(heldout_kl(m, va, TunedLens(m.n_layers, 128)), heldout_kl(m, va), atol=1e-5)


def test_layer_by_layer_backward_equals_the_summed_loss(dense_mid):
    """train_tuned_lens back-propagates one layer's KL at a time (memory: one [tokens x vocab] graph); each
    translator's gradient then equals that of the summed loss, so one step gives the same translators."""
    from eeutils.lens.tuned import TunedLens, TunedLensSettings, _kl, _states, corpus_windows, train_tuned_lens
    wins = corpus_windows(dense_mid, "train", 8, 32)
    s = TunedLensSettings(n_windows=8, context=32, steps=1, batch=4, lr=1e-2, seed=3)
    got = train_tuned_lens(dense_mid, wins, s, progress=False)
    # reference: the summed loss, one backward, the same first batch and one Adam step
    torch.manual_seed(s.seed)
    ref = TunedLens(dense_mid.n_layers, 128)
    opt = torch.optim.Adam(ref.parameters(), lr=s.lr)
    g = torch.Generator().manual_seed(s.seed)
    idx = torch.randint(0, len(wins), (s.batch,), generator=g)
    final, states = _states(dense_mid, wins[idx])
    with torch.enable_grad():
        sum(_kl(final, ref.logits(dense_mid, l, states[l])) for l in range(dense_mid.n_layers)).backward()
    opt.step()
    for a, b in zip(got.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-7), float((a - b).abs().max())
    assert any(float(p.abs().max()) > 0 for p in got.parameters())  # the step moved the translators


# ------------------------------------------------------------------ training under inference mode, checked cache files
TINY = {"n_windows": 8, "context": 32, "steps": 2, "batch": 2}


@pytest.fixture
def small_cached(tmp_path, monkeypatch):
    """dense-small's translators trained with a tiny budget into an empty cache: (model, settings, file, lens)."""
    import warnings

    import eeutils
    from eeutils.lens.tuned import TunedLensSettings, cache_dir, tuned_lens

    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path))
    lm = eeutils.load_model("zoo/dense-small")
    s = TunedLensSettings(**TINY)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="shipped tuned lens")  # the shipped file has other settings
        lens = tuned_lens(lm, s, progress=False)
    (path,) = cache_dir().glob("*.safetensors")
    return lm, s, path, lens


def test_readout_trains_missing_translators_outside_inference_mode(tmp_path, monkeypatch):
    """readout() runs under inference mode; training the translators it asks for must still work."""
    import warnings

    import eeutils
    from eeutils.lens.tuned import TunedLensSettings, cache_dir

    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path))
    lm = eeutils.load_model("zoo/dense-small")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="shipped tuned lens")
        r = eeutils.readout(lm, "The river ran past the old mill and into the sea.", lens="tuned",
                            lens_settings=TunedLensSettings(**TINY), progress=False)
    assert r.meta["lens"] == "tuned" and r.meta["lens_digest"]
    assert len(list(cache_dir().glob("*.safetensors"))) == 1  # trained once, then cached


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_truncated_cache_file_is_named_and_retrained(small_cached):
    from eeutils.lens.tuned import tuned_lens

    lm, s, path, lens = small_cached
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match=f"{path.name}.*unreadable.*retraining"):
        again = tuned_lens(lm, s, progress=False, shipped=False)
    assert _same(again, lens)  # retrained (same seed): the same translators, and the file is whole again
    assert _same(tuned_lens(lm, s, progress=False, shipped=False), lens)


def test_a_zeroed_cache_file_is_not_read_as_numbers(small_cached):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from eeutils.lens.tuned import tuned_lens

    lm, s, path, lens = small_cached
    with safe_open(str(path), "pt") as f:
        meta, zeros = f.metadata(), {k: torch.zeros_like(f.get_tensor(k)) for k in f.keys()}
    save_file(zeros, str(path), metadata=meta)  # same key and version, tensors rewritten with zeros
    with pytest.warns(UserWarning, match=f"{path.name}.*checksum"):
        again = tuned_lens(lm, s, progress=False, shipped=False)
    assert _same(again, lens) and any(float(p.detach().abs().max()) > 0 for p in again.parameters())


def test_a_cache_file_holding_another_key_is_not_used(small_cached):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from eeutils.lens.tuned import tuned_lens

    lm, s, path, lens = small_cached
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={**meta, "key": "0" * 32})
    with pytest.warns(UserWarning, match=f"{path.name}.*holds key"):
        again = tuned_lens(lm, s, progress=False, shipped=False)
    assert _same(again, lens)


def test_a_file_of_another_lens_version_is_refused(small_cached):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from eeutils.lens.tuned import read_lens

    lm, _, path, _ = small_cached
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={**meta, "version": "0"})
    with pytest.raises(ValueError, match="lens version"):
        read_lens(path, lm.n_layers, 96)
    with pytest.raises(ValueError, match="do not fit"):
        save_file(tensors, str(path), metadata=meta)
        read_lens(path, lm.n_layers + 1, 96)
