"""Environment-derived settings: where the kit keeps its own caches."""
from __future__ import annotations

import os
from pathlib import Path


def eeutils_cache_dir() -> Path:
    """The kit's cache folder: ``$EEUTILS_CACHE`` if set (read at call time), else ``~/.cache/eeutils``.

    Not created here; callers create what they write into and report an unwritable folder by name.
    """
    env = os.environ.get("EEUTILS_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eeutils"
