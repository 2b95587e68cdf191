"""The embedded zoo on disk (data/zoo, or $EEUTILS_ZOO_DIR): its models, their revisions and cards, and the
zoo table. ``resolve(name, revision)`` -> the folder of a zoo model (a normal Hugging Face model folder).

Package data, so every layer can read it (the loader resolves "zoo/<name>", notebooks read cards); the zoo's
recipes and its build live in `eeutils.zoo`, which also re-exports these names.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .resources import data_path

TOKENIZER_DIRNAME = "tokenizer"
ZOO_PREFIXES = ("zoo/", "zoo:")


class ZooError(KeyError):
    """Unknown zoo model or revision (the message lists what is available)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def zoo_root() -> Path:
    """The zoo folder: ``$EEUTILS_ZOO_DIR`` if set (read at call time), else the package's ``data/zoo``."""
    env = os.environ.get("EEUTILS_ZOO_DIR")
    return Path(env) if env else data_path("zoo")


def is_zoo_name(name) -> bool:
    """A "zoo/<name>" (or "zoo:<name>") model name."""
    return isinstance(name, str) and name.startswith(ZOO_PREFIXES)


def _strip(name: str) -> str:
    """"zoo/dense-mid" or "zoo:dense-mid" -> "dense-mid"."""
    name = str(name).strip()
    return name[len("zoo/"):] if name.startswith(ZOO_PREFIXES) else name


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


def folder_size(path: Path) -> int:
    """Bytes in the files under `path`."""
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
            "size_MB": folder_size(zoo_root() / name) / 1e6,
        })
    return pd.DataFrame(rows)


def card_meta(name: str) -> dict:
    """Facts from a model's card (card.json of a zoo model or a local folder): seed, recipe, arch, card_family.
    Empty for models without a card (hub ids). Notebooks read metadata from here, never from a model's name."""
    try:
        folder = resolve(name) if is_zoo_name(name) else Path(name).expanduser()
        card = json.loads((folder / "card.json").read_text())
    except (ZooError, OSError, ValueError):
        return {}
    return {"seed": card.get("seed"), "recipe": card.get("name"), "arch": card.get("arch"),
            "card_family": card.get("family")}
