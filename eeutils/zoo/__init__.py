"""The embedded zoo: tiny models of real transformers architectures, trained here on the
project's own corpus and shipped in ``data/zoo/`` so every notebook runs offline.

``resolve(name, revision)`` -> folder (a normal Hugging Face model folder), ``list_zoo()``, ``load_card(name)``,
``card_meta(name)``, ``zoo_table()`` (from `eeutils.core.zoo_store`, which every layer can read). Rebuild with
``python -m eeutils.zoo build``.
"""
from __future__ import annotations

from pathlib import Path

from ..core.resources import repo_root
from ..core.zoo_store import (TOKENIZER_DIRNAME, ZooError, card_meta, folder_size, list_revisions,  # noqa: F401
                              list_zoo, load_card, resolve, zoo_root, zoo_table)

__all__ = ["ZooError", "list_zoo", "resolve", "load_card", "card_meta", "list_revisions", "zoo_table",
           "zoo_markdown", "write_zoo_markdown", "zoo_root"]


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
    total = folder_size(zoo_root()) / 1e6
    lines.append("")
    lines.append(f"Total size of `data/zoo/` (checkpoints and tokenizer copies included): {total:.1f} MB.")
    return "\n".join(lines) + "\n"


def write_zoo_markdown(path: Path | None = None) -> Path:
    """Regenerate the table between the markers in ``docs/ZOO.md``."""
    path = Path(path) if path else repo_root() / "docs" / "ZOO.md"
    start, end = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"
    table = zoo_markdown()
    text = path.read_text() if path.is_file() else f"# The embedded zoo\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    path.write_text(f"{head}{start}\n{table}{end}{tail}")
    return path
