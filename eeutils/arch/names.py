"""Model names -> local folders: a zoo name ("zoo/<name>", `eeutils.core.zoo_store`), an existing local path,
or the hub cache's snapshot of a hub id (`model_folder`, `weights_folder`).
"""
from __future__ import annotations

from pathlib import Path

from ..core.env import hf_cache_dir
# the zoo's names and cards live in core.zoo_store; those re-exported beside the three this module uses keep
# working the imports that name this module (notebook 06, the zoo build, notebook/claims and experiments)
from ..core.zoo_store import (TOKENIZER_DIRNAME, ZooError, card_meta, is_zoo_name, list_revisions,  # noqa: F401
                              list_zoo, resolve, zoo_root)


def model_folder(name: str, revision: str | None = None) -> Path | None:
    """The local folder of a zoo name or an existing local path, None for a hub id (or an unknown name)."""
    try:
        if is_zoo_name(name):
            return resolve(name, revision)
        path = Path(name).expanduser()
        return path if path.is_dir() else None
    except ZooError:
        return None


def weights_folder(name: str, revision: str | None = None) -> Path | None:
    """Where a model's weights are on this machine: a zoo or local folder, or the hub cache's snapshot of a
    hub id (None when it is not cached)."""
    folder = model_folder(name, revision)
    if folder is not None or is_zoo_name(name):
        return folder
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(name, "config.json", cache_dir=hf_cache_dir(), revision=revision)
    except Exception:  # noqa: BLE001 - not a hub id, no hub library
        return None
    return Path(hit).parent if isinstance(hit, str) else None
