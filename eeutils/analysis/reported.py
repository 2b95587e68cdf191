"""The paper's reported EAS values (secondary source), read from the package data."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..core.resources import data_path

__all__ = ["reported_eas"]


def reported_eas(path=None) -> pd.DataFrame:
    """The EAS values reported for arXiv 2603.23701 (secondary source: reading notes; unverified).

    Columns: model, family, eas, generation, notes, source. Reads data/paper_reported.csv.
    """
    p = Path(path) if path is not None else data_path("paper_reported.csv")
    if not p.exists():
        raise FileNotFoundError(f"reported EAS table not found at {p} (it ships in the repository's data/ folder)")
    return pd.read_csv(p)
