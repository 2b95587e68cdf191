"""Finding records: a paper claim, the direction measured here, its effect size and interval, a verdict.

Notebooks 4 to 9 each write one or more records to `<out>/findings/`; the series
runner gathers them into the findings table (markdown + CSV).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.protocol import INTERVAL_KINDS
from ..analysis.verdicts import VERDICTS as _VERDICTS
from ..analysis.verdicts import verdict
from ..core.io import write_csv_atomic, write_json_atomic, write_text_atomic

VERDICTS = _VERDICTS

# What each interval kind is, as findings.md states it (kinds from eeutils.analysis.protocol, plus legacy rows).
INTERVAL_DESCRIPTIONS = dict(INTERVAL_KINDS, **{
    "none": "no interval: a model of the comparison is missing (see the row's reason)",
    "": "not stated by the record (a row written without the protocol; read its metric and notes)",
})


@dataclass
class Finding:
    """One claim checked on this run's models.

    effect: signed so that a positive value is the paper's direction (e.g. EAS(dense) - EAS(moe) for
    "dense > MoE"); lo/hi: its interval, of kind interval_kind. The verdict is derived, never chosen:
    with smallest_effect set (the protocol's rows) agree needs lo > 0 and effect > smallest_effect, disagree
    hi < 0 and -effect > smallest_effect (NaN: no noise floor, inconclusive); without it, the interval's sign.
    A verdict passed in that contradicts this raises ValueError.
    """

    notebook: str
    claim: str
    paper_direction: str
    measured_direction: str
    effect: float
    lo: float
    hi: float
    metric: str
    models: str = ""
    comparison: str = ""  # e.g. "equal tokens" or "matched validation loss"
    notes: str = ""
    verdict: str = field(default="")
    claim_key: str = ""
    interval_kind: str = ""
    ci: float = float("nan")
    n_boot: int = 0
    boot_seed: int = 0
    seeds: str = ""
    noise_floor: float = float("nan")
    floor_pairs: str = ""
    smallest_effect: float | None = None
    robustness: str = ""
    robustness_counts: dict = field(default_factory=dict)
    workload: str = ""
    n_docs: int | None = None
    protocol_version: int | None = None
    deviations: str = ""
    reason: str = ""

    def __post_init__(self):
        if self.verdict and self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.lo > self.hi:
            raise ValueError(f"interval lower end {self.lo} is above its upper end {self.hi}")
        derived = verdict(self.lo, self.hi, self.effect, self.smallest_effect)
        if self.verdict and self.verdict != derived:
            raise ValueError(f"verdict {self.verdict!r} contradicts the interval [{self.lo}, {self.hi}] "
                             f"(effect {self.effect}, smallest effect of interest {self.smallest_effect}): "
                             f"it gives {derived!r}")
        self.verdict = derived


def direction_word(effect: float, positive: str, negative: str, tie: str = "no difference") -> str:
    if not np.isfinite(effect) or effect == 0:
        return tie
    return positive if effect > 0 else negative


def write_finding(finding: Finding, out_dir, name: str | None = None) -> Path:
    """Write a record atomically to <out_dir>/findings/<name>.json."""
    path = Path(out_dir) / "findings" / f"{name or finding.notebook}.json"
    return write_json_atomic(asdict(finding), path, default=float)


def gather_findings(out_dir) -> pd.DataFrame:
    files = sorted((Path(out_dir) / "findings").glob("*.json"))
    rows = [json.loads(p.read_text()) for p in files]
    cols = list(Finding.__dataclass_fields__)
    return pd.DataFrame(rows, columns=cols)


def _num(x, fmt="+.3f") -> str:
    try:
        return format(float(x), fmt) if np.isfinite(float(x)) else "n/a"
    except (TypeError, ValueError):
        return "n/a"


def findings_markdown(frame: pd.DataFrame) -> str:
    """The table: one row per record, with the interval kind, noise floor and robustness beside the verdict."""
    lines = [("| notebook | claim (paper) | comparison | measured here | effect [interval] (kind) | noise floor / "
             "smallest effect | metric | verdict | robustness | why / deviations |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in frame.fillna({"interval_kind": "", "robustness": "", "reason": "", "deviations": ""}).itertuples():
        why = "; ".join(x for x in (r.reason, r.deviations and f"deviations: {r.deviations}") if x)
        lines.append(f"| {r.notebook} | {r.claim} ({r.paper_direction}) | {r.comparison} | {r.measured_direction} | "
                     f"{_num(r.effect)} [{_num(r.lo)}, {_num(r.hi)}] ({r.interval_kind or 'unstated'}) | "
                     f"{_num(r.noise_floor, '.3f')} / {_num(r.smallest_effect, '.3f')} | {r.metric} | "
                     f"**{r.verdict}** | {r.robustness or 'n/a'} | {why} |")
    return "\n".join(lines) + "\n"


def _header(frame: pd.DataFrame) -> str:
    kinds = sorted(set(frame.interval_kind.fillna(""))) if len(frame) else []
    text = ["# Findings: the paper's claims against this run\n",
            ("Effects are signed so that a positive value is the paper's direction (reported, secondary source). "
            "Rows written under the analysis protocol (docs/PROTOCOL.md, data/protocol.yaml) are *agree* or "
            "*disagree* only when the interval excludes zero and |effect| exceeds the smallest effect of interest "
            "(the larger of the seed-twin noise floor and the protocol's minimum); otherwise *inconclusive*. "
            "Robustness: how many of the protocol's secondary metric variants give the same verdict.\n"),
            "Interval kinds in this table:\n"]
    text += [f"- `{k or 'unstated'}`: {INTERVAL_DESCRIPTIONS.get(k, 'described in the row (metric, notes)')}"
             for k in kinds]
    return "\n".join(text) + "\n\n"


def write_findings_table(out_dir) -> tuple[Path, Path]:
    """findings.md and findings.csv in out_dir, gathered from the records."""
    out_dir = Path(out_dir)
    frame = gather_findings(out_dir)
    csv = out_dir / "findings.csv"
    md = out_dir / "findings.md"
    write_csv_atomic(frame, csv)
    body = findings_markdown(frame) if len(frame) else "_no finding records were written_\n"
    write_text_atomic(_header(frame) + body, md)
    return md, csv
