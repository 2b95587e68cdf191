"""Workload data types: a `Doc`, a named `Workload` of docs, and a digest of the documents' content.

Imports nothing else from eeutils, so any layer may use these types.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

KINDS = ("lm", "qa")


@dataclass(frozen=True)
class Doc:
    """One document. With `answer`, the text is `prompt + answer` and accuracy is scored on the answer tokens."""

    text: str = ""
    prompt: str | None = None
    answer: str | None = None

    def __post_init__(self):
        if self.answer is not None:
            if self.prompt is None:
                raise ValueError("a Doc with an answer needs a prompt")
            object.__setattr__(self, "text", self.prompt + self.answer)

    @property
    def has_answer(self) -> bool:
        return self.answer is not None


@dataclass
class Workload:
    """A named list of documents plus where they came from."""

    name: str
    docs: list[Doc]
    kind: str = "lm"  # "lm" (language modelling) or "qa" (exact-match answers)
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.docs)

    def __iter__(self):
        return iter(self.docs)


class WorkloadUnavailable(RuntimeError):
    """A registered workload cannot be loaded here (offline and not cached, or `datasets` missing)."""


def surrogate_problem(text: str) -> str | None:
    """Where a text holds a lone surrogate (not valid Unicode: no tokenizer accepts it), else None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as err:
        return (f"contains a lone surrogate ({ascii(text[err.start])} at character {err.start}), which is not valid "
                "Unicode and no tokenizer accepts: fix the text (lone surrogates usually come from decoding bytes "
                "with errors='surrogateescape'; decode them with errors='replace' instead)")


def docs_digest(docs) -> str:
    """sha256 of the documents' text, prompt and answer (separated unambiguously): a cache-key part."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.text, d.prompt, d.answer):
            h.update(b"\x00" if part is None else part.encode("utf-8", "surrogatepass") + b"\x01")
        h.update(b"\x02")
    return h.hexdigest()
