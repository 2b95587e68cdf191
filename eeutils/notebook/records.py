"""Each protocol record beside the table it came from, and a check that recomputes the record from that table.

`run_claim` writes `<out>/findings/<name>.scores.csv` next to `<name>.json`: the primary metric's score of every
model it compared (side a, b, or a borrowed twin), or for a trend every run's score at every step of the segment.
`check_records(out)` recomputes each record's effect, noise floor, smallest effect of interest and verdict from
that table alone (plain numpy, no readout) and lists every disagreement: a record that does not follow from its
own table is a bug, never a finding.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.protocol import load_protocol
from ..analysis.verdicts import verdict
from ..core.io import write_csv_atomic

__all__ = ["check_records", "recompute", "scores_path", "write_scores"]

SUFFIX = ".scores.csv"


def scores_path(record: Path) -> Path:
    return record.with_name(record.stem + SUFFIX)


def write_scores(run, record: Path) -> Path:
    """The primary metric's per-model table of a ClaimRun, beside its record."""
    e = run.primary
    if "runs" in run.sides:  # a trend: every run's score at every step of the segment
        steps = e.extra.get("steps", [])
        t = run.table if run.table is not None else pd.DataFrame(columns=["run", "step", "score"])
        frame = t[t.step.isin(steps)][["run", "step", "score"]].assign(kind="trend")
    else:
        rows = [{"side": side, "model": m, "score": e.scores.get(m, np.nan)}
                for side in ("a", "b") for m in run.sides[side]]
        rows += [{"side": "borrow", "model": m, "score": v} for m, v in e.scores.items()
                 if m not in run.sides["a"] + run.sides["b"]]
        frame = pd.DataFrame(rows, columns=["side", "model", "score"]).assign(kind="difference")
    frame["blocked"] = bool(run.blocked)  # matched loss without a close revision: never a verdict
    return write_csv_atomic(frame, scores_path(record))


def _slope(x, y) -> float:
    return float(np.polyfit(x, y, 1)[0])


def _difference(t: pd.DataFrame) -> tuple[float, float, dict]:
    a, b, borrow = (t[t.side == s].score.to_numpy(float) for s in ("a", "b", "borrow"))
    effect = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    gaps = [abs(x - y) for side in (a, b) if len(side) >= 2 for x, y in itertools.combinations(side, 2)]
    if any(len(side) == 1 for side in (a, b)):
        gaps += [abs(borrow[0] - borrow[1])] if len(borrow) == 2 else [float("nan")]
    return effect, max(gaps) if gaps else float("nan"), {"A": len(a), "B": len(b)}


def _trend(t: pd.DataFrame) -> tuple[float, float, dict]:
    curve = t.pivot(index="step", columns="run", values="score").sort_index()
    x = np.log2(curve.index.to_numpy(float))
    effect = -_slope(x, curve.mean(axis=1).to_numpy())
    per_run = [-_slope(x, curve[r].to_numpy()) for r in curve.columns]
    floor = max((abs(u - v) for u, v in itertools.combinations(per_run, 2)), default=float("nan"))
    return effect, floor, {"runs": curve.shape[1]}


def recompute(record: dict, table: pd.DataFrame) -> dict:
    """Effect, noise floor, smallest effect of interest and verdict of a record, from its scores table and the
    record's own interval (lo, hi) and protocol settings."""
    d = load_protocol().defaults
    effect, floor, sizes = (_trend if (table.kind == "trend").all() else _difference)(table)
    blocked = bool(table.blocked.any())  # matched loss with no close revision: no smallest effect, no verdict
    smallest = max(floor, d["min_effect"]) if np.isfinite(floor) and not blocked else float("nan")
    call = verdict(record["lo"], record["hi"], effect, smallest)
    if min(sizes.values()) < d["min_seeds"]:
        call = "inconclusive"
    return {"effect": effect, "noise_floor": floor, "smallest_effect": smallest, "verdict": call}


def check_records(out_dir, atol: float = 1e-9) -> pd.DataFrame:
    """One row per (record, field) whose recorded value differs from the value recomputed from its table."""
    rows = []
    for path in sorted((Path(out_dir) / "findings").glob("*.json")):
        table_path = scores_path(path)
        if not table_path.exists():
            continue
        rec = json.loads(path.read_text())
        if rec.get("protocol_version") is None or rec.get("verdict") == "descriptive":
            continue
        for field, value in recompute(rec, pd.read_csv(table_path)).items():
            got = rec.get(field)
            same = (got == value if isinstance(value, str) else
                    got is not None and np.isclose(float(got), value, atol=atol, equal_nan=True))
            if not same:
                rows.append({"record": path.name, "field": field, "recorded": got, "recomputed": value})
    return pd.DataFrame(rows, columns=["record", "field", "recorded", "recomputed"])
