"""Workload registry, user workloads, deterministic subsets and the offline error path (no network)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pandas as pd
import pytest

from eeutils import workloads as W
from eeutils.workloads import (Doc, Workload, WorkloadUnavailable, get_workload, list_workloads,
                               register_workload, workload_from_pairs, workload_from_text_file,
                               workload_from_texts)

REPO = Path(__file__).resolve().parents[1]
BUILTINS = {"zoo-prose": "lm", "zoo-technical": "lm", "zoo-task": "qa", "wikitext": "lm", "code": "lm",
            "gsm8k": "qa", "arc": "qa", "mmlu": "qa"}


@pytest.fixture
def registered():
    """Register throwaway workloads; remove them afterwards."""
    names = []

    def reg(name, loader, description="test", kind="lm", **kw):
        register_workload(name, loader, description, kind, **kw)
        names.append(name)

    yield reg
    for n in names:
        W.unregister_workload(n)


# ---- registry -------------------------------------------------------------------------------------

def test_list_workloads_has_builtins_with_kinds():
    frame = list_workloads()
    assert isinstance(frame, pd.DataFrame)
    assert {"name", "kind", "origin", "source", "description"} <= set(frame.columns)
    got = dict(zip(frame["name"], frame["kind"]))
    for name, kind in BUILTINS.items():
        assert got[name] == kind
    origins = dict(zip(frame["name"], frame["origin"]))
    assert origins["zoo-prose"] == "offline" and origins["gsm8k"] == "online"
    assert frame["description"].str.len().min() > 0


def test_unknown_workload_lists_names_and_how_to_register():
    with pytest.raises(ValueError) as info:
        get_workload("no-such-workload")
    msg = str(info.value)
    assert "no-such-workload" in msg and "zoo-prose" in msg and "register_workload" in msg


def test_register_and_get_all_loader_return_types(registered):
    registered("t-texts", lambda: ["one text", "two text"])
    registered("t-pairs", lambda: [("Q: 1+1?\nA:", " 2"), ("Q: 2+2?\nA:", " 4")], kind="qa")
    registered("t-docs", lambda: [Doc(text="a doc")])
    registered("t-wl", lambda: Workload("other-name", [Doc(text="x")], kind="lm", source="src"))
    assert [d.text for d in get_workload("t-texts")] == ["one text", "two text"]
    qa = get_workload("t-pairs")
    assert qa.kind == "qa" and qa.docs[1].answer == " 4" and qa.docs[1].text == "Q: 2+2?\nA: 4"
    assert get_workload("t-docs").docs == [Doc(text="a doc")]
    wl = get_workload("t-wl")
    assert wl.name == "t-wl" and wl.source == "src"
    assert "t-texts" in set(list_workloads()["name"])
    assert list_workloads().set_index("name").loc["t-texts", "origin"] == "user"


def test_register_rejects_duplicates_bad_names_kinds_and_loaders(registered):
    registered("t-dup", lambda: ["a"])
    with pytest.raises(ValueError, match="already registered"):
        register_workload("t-dup", lambda: ["b"], "again", "lm")
    register_workload("t-dup", lambda: ["b"], "again", "lm", overwrite=True)
    assert get_workload("t-dup").docs[0].text == "b"
    with pytest.raises(ValueError, match="name"):
        register_workload("bad name/with slash", lambda: ["a"], "", "lm")
    with pytest.raises(ValueError, match="kind"):
        register_workload("t-kind", lambda: ["a"], "", "classification")
    with pytest.raises(TypeError, match="callable"):
        register_workload("t-call", ["a"], "", "lm")


def test_loader_returning_nothing_or_bad_docs_is_a_clear_error(registered):
    registered("t-empty", lambda: [])
    registered("t-none", lambda: None)
    registered("t-blank", lambda: ["fine", "   \n"])
    registered("t-qa-noanswer", lambda: [Doc(text="no answer")], kind="qa")
    registered("t-weird", lambda: [42])
    with pytest.raises(ValueError, match="no documents"):
        get_workload("t-empty")
    with pytest.raises(ValueError, match="returned None"):
        get_workload("t-none")
    with pytest.raises(ValueError, match="document 1 is empty"):
        get_workload("t-blank")
    with pytest.raises(ValueError, match="no answer"):
        get_workload("t-qa-noanswer")
    with pytest.raises(TypeError, match="document 0"):
        get_workload("t-weird")


# ---- deterministic subsets and truncation ---------------------------------------------------------

def test_subset_is_deterministic_nested_and_in_source_order(registered):
    texts = [f"document number {i}" for i in range(50)]
    registered("t-fifty", lambda: texts)
    a = get_workload("t-fifty", n_docs=10, seed=3)
    b = get_workload("t-fifty", n_docs=10, seed=3)
    assert [d.text for d in a] == [d.text for d in b]
    pos = [texts.index(d.text) for d in a]
    assert pos == sorted(pos) and len(set(pos)) == 10
    bigger = {d.text for d in get_workload("t-fifty", n_docs=20, seed=3)}
    assert {d.text for d in a} <= bigger
    assert [d.text for d in get_workload("t-fifty", n_docs=10, seed=4)] != [d.text for d in a]
    full = get_workload("t-fifty", n_docs=500)
    assert [d.text for d in full] == texts and full.meta["n_available"] == 50 and not full.meta["subset"]
    assert a.meta["n_docs"] == 10 and a.meta["seed"] == 3 and a.meta["subset"]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_docs"):
            get_workload("t-fifty", n_docs=bad)
    with pytest.raises(ValueError, match="max_chars"):
        get_workload("t-fifty", max_chars=0)


def test_max_chars_cuts_text_and_keeps_answers(registered):
    registered("t-long", lambda: ["x" * 100, "short"])
    registered("t-longqa", lambda: [("P" * 50 + "\nA:", " 1234")], kind="qa")
    wl = get_workload("t-long", max_chars=10)
    assert [d.text for d in wl] == ["x" * 10, "short"]
    qa = get_workload("t-longqa", max_chars=20)
    d = qa.docs[0]
    assert d.answer == " 1234" and len(d.text) == 20 and d.prompt.endswith("\nA:")
    with pytest.raises(ValueError, match="max_chars"):
        get_workload("t-longqa", max_chars=5)


def test_get_workload_accepts_a_workload_object():
    wl = workload_from_texts([f"t{i}" for i in range(8)], "mine")
    sub = get_workload(wl, n_docs=3, seed=1)
    assert sub.name == "mine" and len(sub) == 3 and len(wl) == 8
    with pytest.raises(ValueError, match="no documents"):
        get_workload(Workload("empty", []))


# ---- user workloads -------------------------------------------------------------------------------

def test_workload_from_texts_and_pairs():
    wl = workload_from_texts(["alpha beta", "gamma"], "greek")
    assert wl.kind == "lm" and wl.name == "greek" and len(wl) == 2 and not wl.docs[0].has_answer
    qa = workload_from_pairs([("2 + 2 =", " 4")], "sums")
    assert qa.kind == "qa" and qa.docs[0].text == "2 + 2 = 4" and qa.docs[0].has_answer
    with pytest.raises(ValueError, match="no documents"):
        workload_from_texts([], "empty")
    with pytest.raises(ValueError, match="document 1 is empty"):
        workload_from_texts(["ok", "  "], "blank")
    with pytest.raises(TypeError, match="not one string"):
        workload_from_texts("just one string", "oops")
    with pytest.raises(TypeError, match="text 0"):
        workload_from_texts([b"bytes"], "bytes")
    with pytest.raises(ValueError, match="no documents"):
        workload_from_pairs([], "none")
    with pytest.raises(ValueError, match="empty answer"):
        workload_from_pairs([("prompt", "")], "noans")
    with pytest.raises(ValueError, match="empty prompt"):
        workload_from_pairs([("", " 4")], "noprompt")
    with pytest.raises(TypeError, match="pair 0"):
        workload_from_pairs([("only prompt",)], "bad")
    with pytest.raises(ValueError, match="name"):
        workload_from_texts(["a"], "has space")


def test_workload_from_text_file(tmp_path):
    path = tmp_path / "My Notes.txt"
    path.write_text("first block\nline two\n\n\n\nsecond block\n\n   \n\nthird\n", encoding="utf-8")
    wl = workload_from_text_file(path)
    assert wl.name == "My-Notes" and wl.kind == "lm" and wl.source == str(path)
    assert [d.text for d in wl] == ["first block\nline two", "second block", "third"]
    lines = workload_from_text_file(path, name="lines", split_on="\n")
    assert [d.text for d in lines] == ["first block", "line two", "second block", "third"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n\n")
    with pytest.raises(ValueError, match="no text"):
        workload_from_text_file(empty)
    with pytest.raises(FileNotFoundError, match="no such text file"):
        workload_from_text_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="split_on"):
        workload_from_text_file(path, split_on="")


# ---- offline built-ins (the zoo corpus' test split) -----------------------------------------------

def test_zoo_workloads_from_the_corpus_test_split():
    from eeutils.workloads import corpus
    try:
        task = get_workload("zoo-task", n_docs=6, seed=0)
    except corpus.CorpusError as err:  # pragma: no cover - depends on the environment
        pytest.skip(f"zoo corpus unavailable: {err}")
    assert task.kind == "qa" and len(task) == 6 and all(d.has_answer for d in task)
    expected = [d for d in corpus.load_split("task", "test")]
    assert all(d in expected for d in task)
    assert [d.text for d in get_workload("zoo-task", n_docs=6, seed=0)] == [d.text for d in task]
    for name in ("zoo-prose", "zoo-technical"):
        try:
            wl = get_workload(name, n_docs=3, max_chars=200)
        except corpus.CorpusError as err:  # pragma: no cover
            pytest.skip(f"zoo corpus source unavailable: {err}")
        assert wl.kind == "lm" and len(wl) == 3 and all(0 < len(d.text) <= 200 for d in wl)


# ---- online built-ins: conversion with a fake `datasets`, errors without network ------------------

def _fake_datasets(tables: dict, calls: list):
    mod = types.ModuleType("datasets")

    def load_dataset(path, config=None, split=None):
        calls.append((path, config, split))
        return tables[path]

    mod.load_dataset = load_dataset
    return mod


def test_online_loaders_convert_rows(monkeypatch):
    calls = []
    tables = {
        "Salesforce/wikitext": {"text": ["", " = Alpha = \n", "", " Alpha text . \n", " = = Section = = \n",
                                         " more alpha . \n", " = Beta = \n", " Beta text . \n"]},
        "openai/openai_humaneval": {"prompt": ["def f(x):\n    \"\"\"Double.\"\"\"\n"],
                                    "canonical_solution": ["    return 2 * x\n"]},
        "openai/gsm8k": {"question": ["Tom has 3 apples and buys 1,000 more. How many?"],
                         "answer": ["3 + 1000 = 1003\n#### 1,003"]},
        "allenai/ai2_arc": {"question": ["Which is a gas?", "Odd labels?"],
                            "choices": [{"label": ["A", "B", "C"], "text": ["rock", "steam", "ice"]},
                                        {"label": ["1", "2", "3", "4"], "text": ["w", "x", "y", "z"]}],
                            "answerKey": ["B", "3"]},
        "cais/mmlu": {"question": ["2 + 2 = ?"], "choices": [["3", "4", "5", "6"]], "answer": [1]},
    }
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(tables, calls))
    wiki = get_workload("wikitext")
    assert len(wiki) == 2 and wiki.docs[0].text.startswith("= Alpha =") and "more alpha" in wiki.docs[0].text
    assert wiki.docs[1].text.startswith("= Beta =")
    code = get_workload("code")
    assert code.kind == "lm" and "return 2 * x" in code.docs[0].text
    gsm = get_workload("gsm8k")
    assert gsm.kind == "qa" and gsm.docs[0].answer == " 1003" and "Tom has 3 apples" in gsm.docs[0].prompt
    arc = get_workload("arc")
    assert [d.answer for d in arc] == [" B", " C"]
    assert "A. rock\nB. steam\nC. ice\nAnswer:" in arc.docs[0].prompt
    mmlu = get_workload("mmlu")
    assert mmlu.docs[0].answer == " B" and mmlu.docs[0].prompt.endswith("D. 6\nAnswer:")
    assert ("Salesforce/wikitext", "wikitext-2-raw-v1", "test") in calls
    assert ("openai/gsm8k", "main", "test") in calls


def test_online_loader_connection_error_says_what_to_do(monkeypatch):
    mod = types.ModuleType("datasets")

    def load_dataset(*a, **k):
        raise ConnectionError("Couldn't reach the Hub")

    mod.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", mod)
    with pytest.raises(WorkloadUnavailable) as info:
        get_workload("gsm8k")
    msg = str(info.value)
    assert "gsm8k" in msg and "zoo-prose" in msg and "workload_from_text_file" in msg and "online" in msg


def test_missing_datasets_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(WorkloadUnavailable, match="pip install"):
        get_workload("wikitext")


def test_real_datasets_offline_and_uncached_raises_workload_unavailable(tmp_path):
    pytest.importorskip("datasets")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    code = textwrap.dedent("""
        from eeutils.workloads import WorkloadUnavailable, get_workload
        try:
            get_workload("gsm8k")
        except WorkloadUnavailable as err:
            print("UNAVAILABLE:", err)
        else:
            print("LOADED")
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "UNAVAILABLE:" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "HF_DATASETS_OFFLINE=1" in out.stdout and "Go online once" in out.stdout
    assert "zoo-prose" in out.stdout
