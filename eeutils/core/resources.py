"""Package data (data/zoo, data/corpus, data/presets, data/paper_reported.csv), found in one place.

In a source checkout the repository's top-level ``data/`` folder is used; in an installed wheel the
same folder ships as the package ``eeutils._data`` and is read through `importlib.resources`.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_MARKER = "paper_reported.csv"  # a file at the top of the data folder


def repo_root() -> Path | None:
    """The source checkout holding this package (a folder with pyproject.toml and data/), else None."""
    root = _PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "data").is_dir() else None


def data_root() -> Path:
    root = repo_root()
    if root is not None:
        return root / "data"
    try:
        # eeutils._data has no __init__.py (it is the repository's data/ folder): files() gives a
        # multiplexed path for such a namespace package, and joinpath of a known file a real one
        return Path(importlib.resources.files("eeutils._data").joinpath(_MARKER)).parent
    except ModuleNotFoundError as err:
        raise FileNotFoundError("eeutils' data folder is missing: neither a source checkout nor an installed "
                                "eeutils._data package (reinstall eeutils)") from err


def data_path(*parts) -> Path:
    """A path under the data folder, e.g. data_path("zoo") or data_path("paper_reported.csv")."""
    return data_root().joinpath(*parts)
