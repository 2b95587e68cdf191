"""Environment: offline mode and cache folders, each decided in one place."""
from __future__ import annotations

import os
from pathlib import Path

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = ("1", "true", "yes", "on")


def hf_offline() -> bool:
    """True when any Hugging Face offline switch is set (hub, transformers or datasets)."""
    return any(os.environ.get(v, "0").strip().lower() in _TRUE for v in OFFLINE_VARIABLES)


def offline_setting() -> str:
    """The offline variables that are set, for error messages ("HF_HUB_OFFLINE=1", or "unset")."""
    found = [f"{v}={os.environ[v]}" for v in OFFLINE_VARIABLES if v in os.environ]
    return ", ".join(found) or "unset"


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder: huggingface_hub's (it reads HF_HUB_CACHE / HF_HOME), else the same rule."""
    try:
        from huggingface_hub import constants
        return constants.HF_HUB_CACHE
    except Exception:  # noqa: BLE001 - huggingface_hub missing
        if os.environ.get("HF_HUB_CACHE"):
            return os.environ["HF_HUB_CACHE"]
        if os.environ.get("HF_HOME"):
            return os.path.join(os.environ["HF_HOME"], "hub")
        return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def eeutils_cache_dir() -> Path:
    """The kit's own cache: $EEUTILS_CACHE, default ~/.cache/eeutils. ValueError naming the variable when it
    points at a file, or under one (a folder cannot be made there)."""
    env = os.environ.get("EEUTILS_CACHE")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "eeutils"
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = f"EEUTILS_CACHE={env}" if env else f"the default cache folder {path}"
        raise ValueError(f"{where} cannot be the kit's cache folder: {blocker} is a file, not a folder. Point "
                         "EEUTILS_CACHE at a folder (it is created if missing), e.g. "
                         "export EEUTILS_CACHE=~/.cache/eeutils")
    return path
