"""The paper's reported EAS values (secondary source), read from the package data."""
from __future__ import annotations

import pandas as pd

from ..core.checks import check_path
from ..core.resources import data_path

__all__ = ["reported_eas"]


def reported_eas(path=None) -> pd.DataFrame:
    """The EAS values reported for arXiv 2603.23701 (secondary source: reading notes; unverified).

    Columns: model, family, eas, generation, notes, source. Reads data/paper_reported.csv.
    """
    p = check_path("path", path) if path is not None else data_path("paper_reported.csv")
    if not p.is_file():
        raise FileNotFoundError(f"reported EAS table not found at {p} (it ships in the repository's data/ folder)")
    try:
        frame = pd.read_csv(p)
    except (ValueError, UnicodeDecodeError) as err:  # pandas' ParserError / EmptyDataError are ValueErrors
        raise ValueError(f"path {p} is not a reported-EAS table (a CSV): {type(err).__name__}: {err}") from None
    missing = [c for c in ("model", "eas") if c not in frame.columns]
    if missing:
        raise ValueError(f"path {p} is not a reported-EAS table: it lacks the column(s) {missing}")
    return frame
