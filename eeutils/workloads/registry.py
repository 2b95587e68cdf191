"""Workloads: named, pluggable lists of documents to read out, some with reference answers.

A workload is a list of `Doc`s plus a name and a kind:

- kind ``"lm"``: plain text; early-exit quality is scored on every next-token prediction.
- kind ``"qa"``: ``Doc(prompt, answer)`` pairs; accuracy is exact match on the answer tokens.

Where workloads come from
-------------------------
- Offline built-ins, read from the held-out TEST split of the zoo's own corpus (`eeutils.workloads.corpus`):
  ``zoo-prose`` (KJV chapters, lm), ``zoo-technical`` (stdlib docstrings, lm) and ``zoo-task``
  (synthetic addition / key-value recall, qa). The zoo models never saw these documents in training.
- Online built-ins through the `datasets` package (``pip install 'eeutils[data]'``), fetched once
  and then served from the Hugging Face cache: ``wikitext`` (WikiText-2 raw test, one article per
  document), ``code`` (HumanEval functions: prompt + reference solution as plain text), ``gsm8k``
  (qa, final numeric answer), ``arc`` (ARC-Challenge, qa, answer letter) and ``mmlu`` (qa, answer letter).
  Offline and not cached, they raise `WorkloadUnavailable` saying what to do.
- Your own: `workload_from_texts`, `workload_from_pairs`, `workload_from_text_file`, or
  `register_workload(name, loader, ...)` so `get_workload(name)` (and ``eeutils bench``) finds it.

`get_workload(name, n_docs, max_chars, seed)` subsets deterministically: the chosen documents are the
first ``n_docs`` of a seeded permutation, returned in their source order, so the 10-document subset
is contained in the 20-document one for the same seed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from ..core.checks import check_bool, check_count, check_path
from .types import KINDS, Doc, Workload, WorkloadUnavailable, surrogate_problem  # noqa: F401

# --------------------------------------------------------------------------------------------------
# registry

@dataclass(frozen=True)
class _Entry:
    name: str
    loader: Callable
    description: str
    kind: str
    origin: str  # "offline", "online" or "user"
    source: str


_REGISTRY: dict[str, _Entry] = {}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_name(name) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"workload name must be a non-empty string of letters, digits, '.', '_' or '-' "
                         f"(it names result files), got {name!r}")
    return name


def _check_kind(kind) -> str:
    if kind not in KINDS:
        raise ValueError(f"workload kind must be one of {KINDS} ('lm': plain text, 'qa': prompt + exact-match "
                         f"answer), got {kind!r}")
    return kind


def register_workload(name: str, loader: Callable, description: str = "", kind: str = "lm", *,
                      origin: str = "user", source: str = "", overwrite: bool = False) -> None:
    """Make a workload available by name to `get_workload`, `list_workloads` and ``eeutils bench``.

    loader: a zero-argument callable returning a `Workload`, a list of `Doc`, a list of texts, or a
    list of (prompt, answer) pairs. It is called on every `get_workload`; subsetting and truncation
    happen afterwards, so the loader returns everything. kind: "lm" or "qa". Registering an existing
    name raises unless ``overwrite=True``.
    """
    _check_name(name)
    _check_kind(kind)
    check_bool("overwrite", overwrite)
    if not callable(loader):
        raise TypeError(f"loader must be callable (a function returning the documents), got {type(loader).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"a workload named {name!r} is already registered; pick another name or pass overwrite=True")
    _REGISTRY[name] = _Entry(name, loader, description, kind, origin, source)


def unregister_workload(name: str) -> None:
    """Remove a registered workload (no error if absent)."""
    _REGISTRY.pop(name, None)


def workload_names() -> list[str]:
    return sorted(_REGISTRY)


def list_workloads():
    """A DataFrame of the registered workloads: name, kind, origin (offline/online/user), source, description."""
    import pandas as pd

    rows = [dict(name=e.name, kind=e.kind, origin=e.origin, source=e.source, description=e.description)
            for e in sorted(_REGISTRY.values(), key=lambda e: (("offline", "online", "user").index(e.origin)
                                                                 if e.origin in ("offline", "online", "user")
                                                                 else 3, e.name))]
    return pd.DataFrame(rows, columns=["name", "kind", "origin", "source", "description"])


def _unknown(name) -> ValueError:
    return ValueError(
        f"unknown workload {name!r}. Registered workloads: {', '.join(workload_names()) or '(none)'}. "
        "To add your own: eeutils.workloads.register_workload('my-set', loader, description, kind='lm'|'qa') "
        "with a loader returning texts, (prompt, answer) pairs or Docs; or build one directly with "
        "workload_from_texts / workload_from_pairs / workload_from_text_file.")


def get_workload(name, n_docs: int | None = None, max_chars: int | None = None, seed: int = 0) -> Workload:
    """Load a registered workload (or subset a `Workload` you pass) deterministically.

    n_docs: keep this many documents (all if None or larger than the workload): the first n_docs of a
    permutation seeded by `seed`, kept in source order. max_chars: cut each document to at most this
    many characters (lm: keep the beginning; qa: keep the whole answer and the end of the prompt).
    """
    n_docs = check_count("n_docs", n_docs, 1, allow_none=True)
    max_chars = check_count("max_chars", max_chars, 1, allow_none=True)
    check_count("seed", seed, 0)
    if isinstance(name, Workload):
        base = name
        _validate_docs(base.docs, base.name)
    else:
        if not isinstance(name, str) or name not in _REGISTRY:
            raise _unknown(name)
        entry = _REGISTRY[name]
        base = _coerce(entry.loader(), entry)
    total = len(base.docs)
    idx = list(range(total))
    if n_docs is not None and n_docs < total:
        import numpy as np

        perm = np.random.default_rng(seed).permutation(total)
        idx = sorted(int(i) for i in perm[:n_docs])
    docs = [base.docs[i] for i in idx]
    if max_chars is not None:
        docs = [_truncate(d, max_chars) for d in docs]
    meta = dict(base.meta)
    meta.update(n_available=total, n_docs=len(docs), seed=seed, max_chars=max_chars,
                subset=(n_docs is not None and n_docs < total))
    return Workload(name=base.name, docs=docs, kind=base.kind, source=base.source, meta=meta)


def _truncate(doc: Doc, max_chars: int) -> Doc:
    if doc.has_answer:
        room = max_chars - len(doc.answer)
        if room < 1:
            raise ValueError(f"max_chars={max_chars} leaves no room for the prompt of a document whose answer has "
                             f"{len(doc.answer)} characters; raise max_chars")
        prompt = doc.prompt[len(doc.prompt) - room:] if room < len(doc.prompt) else doc.prompt
        return Doc(prompt=prompt, answer=doc.answer)
    if len(doc.text) <= max_chars:
        return doc
    return Doc(text=doc.text[:max_chars])


def _to_doc(item, i: int, name: str) -> Doc:
    if isinstance(item, Doc):
        return item
    if isinstance(item, str):
        return Doc(text=item)
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return Doc(prompt=item[0], answer=item[1])
    raise TypeError(f"workload {name!r}: document {i} is a {type(item).__name__}; expected a str, a Doc or a "
                    "(prompt, answer) pair of strings")


def _validate_docs(docs, name: str) -> None:
    if not docs:
        raise ValueError(f"workload {name!r} has no documents; give it at least one non-empty text")
    for i, d in enumerate(docs):
        if d.has_answer:
            if not d.answer.strip():
                raise ValueError(f"workload {name!r}: document {i} has an empty answer")
            if not d.prompt.strip():
                raise ValueError(f"workload {name!r}: document {i} has an empty prompt")
        elif not d.text.strip():
            raise ValueError(f"workload {name!r}: document {i} is empty (only whitespace); remove it")
        problem = surrogate_problem(d.text)
        if problem:
            raise ValueError(f"workload {name!r}: document {i} {problem}")


def _coerce(result, entry: _Entry) -> Workload:
    if isinstance(result, Workload):
        wl = Workload(name=entry.name, docs=list(result.docs), kind=result.kind, source=result.source or entry.source,
                      meta=dict(result.meta))
    else:
        if result is None:
            raise ValueError(f"the loader of workload {entry.name!r} returned None; it must return documents")
        docs = [_to_doc(x, i, entry.name) for i, x in enumerate(result)]
        wl = Workload(name=entry.name, docs=docs, kind=entry.kind, source=entry.source)
    _validate_docs(wl.docs, entry.name)
    _check_kind(wl.kind)
    if wl.kind == "qa" and not all(d.has_answer for d in wl.docs):
        raise ValueError(f"workload {entry.name!r} is kind 'qa' but some documents have no answer")
    wl.meta.setdefault("description", entry.description)
    wl.meta.setdefault("origin", entry.origin)
    return wl


# --------------------------------------------------------------------------------------------------
# user workloads

def workload_from_texts(texts: Iterable[str], name: str, *, source: str = "texts") -> Workload:
    """A language-modelling workload from a list of texts (each one a document)."""
    _check_name(name)
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string (wrap it: [text])")
    if isinstance(texts, (bytes, bytearray, dict)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is a {type(t).__name__}, expected str")
    docs = [Doc(text=t) for t in texts]
    _validate_docs(docs, name)
    return Workload(name=name, docs=docs, kind="lm", source=source)


def workload_from_pairs(pairs: Iterable, name: str, *, source: str = "pairs") -> Workload:
    """An exact-match ("qa") workload from (prompt, answer) pairs.

    The answer is appended to the prompt verbatim, so put the separating space in the answer
    (``("Q: 2 + 2 = ?\\nA:", " 4")``), as most tokenizers attach the space to the following word.
    """
    _check_name(name)
    if isinstance(pairs, (str, bytes, bytearray, dict)) or not hasattr(pairs, "__iter__"):
        raise TypeError(f"pairs must be a list of (prompt, answer) tuples, got {type(pairs).__name__}")
    docs = []
    for i, p in enumerate(pairs):
        if not (isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) for x in p)):
            raise TypeError(f"pair {i} must be a (prompt, answer) tuple of two strings, got {p!r}")
        docs.append(Doc(prompt=p[0], answer=p[1]))
    _validate_docs(docs, name)
    return Workload(name=name, docs=docs, kind="qa", source=source)


def workload_from_text_file(path, name: str | None = None, split_on: str = "\n\n",
                            encoding: str = "utf-8") -> Workload:
    """A language-modelling workload from a UTF-8 text file, one document per `split_on`-separated block.

    Blocks are stripped; empty blocks are dropped. The default name is the file's stem. A file that is not
    text in `encoding` (or holds NUL bytes: a binary file) is a ValueError naming it.
    """
    path = check_path("path", path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a text file: pass the path of one file")
    if not path.is_file():
        raise FileNotFoundError(f"no such text file: {path}")
    if not isinstance(split_on, str) or not split_on:
        raise ValueError("split_on must be a non-empty separator such as '\\n\\n' or '\\n'")
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be the name of a text encoding such as 'utf-8', got {encoding!r}")
    if name is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._") or "text-file"
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not {encoding} text (byte {err.start}: {err.reason}): is it a binary file? "
                         f"Pass a text file, or the encoding it was written in (e.g. encoding='latin-1')") from None
    except LookupError as err:
        raise ValueError(f"encoding={encoding!r} is not a text encoding Python knows ({err}); use e.g. 'utf-8'") from None
    if "\x00" in text:
        raise ValueError(f"{path} holds NUL bytes (the first at character {text.index(chr(0))}): it is a binary file, "
                         "not text; pass a text file")
    blocks = [b.strip() for b in text.split(split_on)]
    blocks = [b for b in blocks if b]
    if not blocks:
        raise ValueError(f"{path} has no text (after splitting on {split_on!r} and dropping empty blocks)")
    return workload_from_texts(blocks, name, source=str(path))
