"""Exact-answer workloads a real pretrained LLM can be scored on, built offline and deterministically.

Two parts, each a list of ``(prompt, answer)`` pairs scored by exact match on the answer tokens
(the answer starts with its separating space):

- **facts**: world knowledge read from ``data/real/facts.tsv`` (capital of a country, country of a
  city, language of a country, opposite of an adjective), each asked after two solved examples of
  the same relation: ``"The capital of Japan is Tokyo. The capital of Peru is Lima. The capital of
  France is"`` -> ``" Paris"``.
- **context**: answers that are in (or follow from) the prompt, generated from a fixed seed:
  continuing a sequence (weekdays, months, letters, counting in steps), recalling a marked word
  among distractors, and repeating a list of words. (Binding tasks such as "Anna has a red car. Ben
  has a blue car. Ben has a" -> " blue" were tried and dropped: SmolLM2-135M answers them near chance.)

The zoo models were never trained on this text, and do not solve it; it exists so that "accuracy
loss of an exit rule" means something for the real models (``real/gemma-3-270m``,
``real/smollm2-135m-instruct``). Registered as ``real-task`` (both parts), ``real-facts`` and
``real-context``.
"""
from __future__ import annotations

import random
from pathlib import Path

from ..core.resources import data_path
from .registry import register_workload

FACTS_PATH = data_path("real", "facts.tsv")
SEED = 2026
N_SHOTS = 2

TEMPLATES = {
    "capital": "The capital of {s} is",
    "country": "{s} is a city in",
    "language": "The official language of {s} is",
    "opposite": "The opposite of {s} is",
}
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
WORDS = ("apple", "river", "stone", "cloud", "horse", "table", "garden", "window", "bread", "music", "paper",
         "forest", "candle", "mirror", "island", "silver", "castle", "pepper", "rabbit", "ocean")


def read_facts(path: Path = FACTS_PATH) -> list[tuple[str, str, str]]:
    """(relation, subject, answer) rows of the facts table (comment lines start with '#')."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or parts[0] not in TEMPLATES or not all(p.strip() for p in parts):
            raise ValueError(f"{path}:{n}: expected 'relation<TAB>subject<TAB>answer' with relation in "
                             f"{sorted(TEMPLATES)}, got {line!r}")
        rows.append((parts[0], parts[1].strip(), parts[2].strip()))
    return rows


def fact_items(seed: int = SEED, n_shots: int = N_SHOTS, path: Path = FACTS_PATH) -> list[tuple[str, str, str]]:
    """(subtask, prompt, answer) for every fact, each after `n_shots` solved facts of its relation
    (chosen by `seed`, never one with the same answer)."""
    rng = random.Random(seed)
    rows = read_facts(path)
    items = []
    for rel, subj, ans in rows:
        pool = [(s, a) for r, s, a in rows if r == rel and a != ans and s != subj]
        shots = rng.sample(pool, n_shots)
        tpl = TEMPLATES[rel]
        prompt = " ".join(f"{tpl.format(s=s)} {a}." for s, a in shots) + " " + tpl.format(s=subj)
        items.append((f"fact-{rel}", prompt, " " + ans))
    return items


def _sequence(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("days", "months", "letters", "count"))
    if kind == "count":
        step, start = rng.choice((1, 2, 3, 5, 10)), rng.randrange(1, 40)
        seq = [str(start + i * step) for i in range(5)]
    else:
        cycle = {"days": DAYS, "months": MONTHS, "letters": LETTERS}[kind]
        start = rng.randrange(len(cycle) if kind != "letters" else len(cycle) - 5)
        seq = [cycle[(start + i) % len(cycle)] for i in range(5)]
    return ", ".join(seq[:4]) + ",", " " + seq[4]


def _recall(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, 3)
    return (f"The secret word is {words[0]}. Remember it. Other words: {words[1]}, {words[2]}. "
            "The secret word is"), " " + words[0]


def _repeat(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, 5)
    return f"Words: {' '.join(words)}. Again: {' '.join(words[:4])}", " " + words[4]


_CONTEXT = {"context-sequence": _sequence, "context-recall": _recall, "context-repeat": _repeat}


def context_items(seed: int = SEED, n_each: int = 30) -> list[tuple[str, str, str]]:
    """(subtask, prompt, answer): `n_each` distinct items of every in-context subtask, generated from `seed`."""
    rng = random.Random(seed)
    items = []
    for name, make in _CONTEXT.items():
        seen: dict = {}
        while len(seen) < n_each:  # distinct items only
            seen.setdefault(make(rng), None)
        items += [(name, p, a) for p, a in seen]
    return items


def real_task_items(part: str = "all", seed: int = SEED) -> list[tuple[str, str, str]]:
    """(subtask, prompt, answer) items of `part`: "facts", "context" or "all"."""
    if part not in ("facts", "context", "all"):
        raise ValueError(f"part must be 'facts', 'context' or 'all', got {part!r}")
    items = []
    if part in ("facts", "all"):
        items += fact_items(seed)
    if part in ("context", "all"):
        items += context_items(seed)
    return items


def real_task_pairs(part: str = "all", seed: int = SEED) -> list[tuple[str, str]]:
    """The (prompt, answer) pairs of `part`, for a workload loader."""
    return [(p, a) for _, p, a in real_task_items(part, seed)]


DESCRIPTIONS = {
    "real-task": "facts + in-context completions for real LLMs, exact-match answers (data/real/facts.tsv + seeded)",
    "real-facts": "world facts after two solved examples (capitals, countries, languages, opposites), exact match",
    "real-context": "in-context completions (sequences, marked-word recall, word-list repeat), exact match",
}
PARTS = {"real-task": "all", "real-facts": "facts", "real-context": "context"}


def register() -> None:
    """Register the three workloads (called by `eeutils.workloads.builtins` with the other built-ins)."""
    for name, part in PARTS.items():
        register_workload(name, lambda part=part: real_task_pairs(part), DESCRIPTIONS[name], "qa",
                          origin="offline", source=f"eeutils.workloads.real_tasks {part}", overwrite=True)
