"""The embedded zoo: tiny models of real transformers architectures, trained here on the
project's own corpus and shipped in ``data/zoo/`` so every notebook runs offline.

``resolve(name, revision)`` -> folder (a normal Hugging Face model folder), ``list_zoo()``,
``load_card(name)``, ``zoo_table()``. Rebuild with ``python -m eeutils.zoo build``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
_DEFAULT_ROOT = REPO_ROOT / "data" / "zoo"
ZOO_ROOT = Path(os.environ.get("EEUTILS_ZOO_DIR", _DEFAULT_ROOT))
TOKENIZER_DIRNAME = "tokenizer"

__all__ = ["ZOO_ROOT", "ZooError", "list_zoo", "resolve", "load_card", "list_revisions", "zoo_table",
           "zoo_markdown", "write_zoo_markdown", "zoo_root"]


class ZooError(KeyError):
    """Unknown zoo model or revision (the message lists what is available)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def zoo_root() -> Path:
    """The zoo folder: ``$EEUTILS_ZOO_DIR`` if set (read at call time), else ``data/zoo``."""
    env = os.environ.get("EEUTILS_ZOO_DIR")
    return Path(env) if env else ZOO_ROOT


def _strip(name: str) -> str:
    name = str(name).strip()
    return name[len("zoo/"):] if name.startswith("zoo/") else name


def list_zoo() -> list[str]:
    """Names of the finished zoo models present (folders with a ``card.json``), sorted."""
    root = zoo_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "card.json").is_file())


def list_revisions(name: str) -> list[str]:
    """Training checkpoints of a model, ``step-<n>`` sorted by step (the final step is the main folder)."""
    name = _strip(name)
    folder = zoo_root() / name / "checkpoints"
    revs = [p.name for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"step-\d+", p.name)] if folder.is_dir() else []
    card = zoo_root() / name / "card.json"
    if card.is_file():
        final = json.loads(card.read_text()).get("final_revision")
        if final and final not in revs:
            revs.append(final)
    return sorted(revs, key=lambda r: int(r.split("-")[1]))


def resolve(name: str, revision: str | None = None) -> Path:
    """Folder of zoo model ``name`` (``"dense-mid"`` or ``"zoo/dense-mid"``); ``revision`` None or
    ``"main"`` -> the final model, ``"step-<n>"`` -> that training checkpoint."""
    name = _strip(name)
    avail = list_zoo()
    folder = zoo_root() / name
    if name not in avail:
        hint = ", ".join(avail) if avail else f"none built in {zoo_root()}; run: python -m eeutils.zoo build"
        raise ZooError(f"unknown zoo model {name!r}; available: {hint}")
    if revision in (None, "main"):
        return folder
    revs = list_revisions(name)
    card = load_card(name)
    if revision == card.get("final_revision"):
        return folder
    path = folder / "checkpoints" / str(revision)
    if revision not in revs or not path.is_dir():
        hint = ", ".join(revs) if revs else "none (this model ships no checkpoints)"
        raise ZooError(f"zoo model {name!r} has no revision {revision!r}; available revisions: main, {hint}")
    return path


def load_card(name: str) -> dict:
    """The model card (``card.json``) of a zoo model."""
    return json.loads((resolve(name) / "card.json").read_text())


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def zoo_table():
    """One row per zoo model, from the cards (pandas DataFrame)."""
    import pandas as pd

    rows = []
    for name in list_zoo():
        c = load_card(name)
        rows.append({
            "name": name, "family": c["family"], "class": c["class"], "layers": c["config_summary"]["layers"],
            "d_model": c["config_summary"]["d_model"], "params_total_M": c["params_total"] / 1e6,
            "params_active_M": c["params_active"] / 1e6, "tokens_M": c["tokens_seen"] / 1e6, "seed": c["seed"],
            "val_loss": c["val_loss"], "unigram_val_loss": c["unigram_val_loss"],
            "train_min": c["train_seconds"] / 60, "revisions": len(c.get("checkpoints", [])),
            "size_MB": _dir_size(zoo_root() / name) / 1e6,
        })
    return pd.DataFrame(rows)


def zoo_markdown() -> str:
    df = zoo_table()
    if df.empty:
        return "(no zoo models built)\n"
    cols = list(df.columns)
    fmt = {"params_total_M": "{:.2f}", "params_active_M": "{:.2f}", "tokens_M": "{:.2f}", "val_loss": "{:.3f}",
           "unigram_val_loss": "{:.3f}", "train_min": "{:.1f}", "size_MB": "{:.1f}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |")
    total = _dir_size(zoo_root()) / 1e6
    lines.append("")
    lines.append(f"Total size of `data/zoo/` (checkpoints and tokenizer copies included): {total:.1f} MB.")
    return "\n".join(lines) + "\n"


def write_zoo_markdown(path: Path | None = None) -> Path:
    """Regenerate the table between the markers in ``docs/ZOO.md``."""
    path = Path(path) if path else REPO_ROOT / "docs" / "ZOO.md"
    start, end = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"
    table = zoo_markdown()
    text = path.read_text() if path.is_file() else f"# The embedded zoo\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    path.write_text(f"{head}{start}\n{table}{end}{tail}")
    return path
