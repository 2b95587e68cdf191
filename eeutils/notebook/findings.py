"""Finding records: a paper claim, the direction measured here, its effect size and interval, a verdict.

Notebooks 4 to 9, 12 and 13 each write one or more records to `<out>/findings/`; the series runner gathers
them into the findings table and its summary view (`findings_view.write_findings_table`).
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
from ..core.io import write_json_atomic

VERDICTS = _VERDICTS
DESCRIPTIVE = "descriptive"  # a row that measures without judging: no smallest effect of interest, no verdict

# What each interval kind is, as findings.md states it (kinds from eeutils.analysis.protocol, plus legacy rows).
INTERVAL_DESCRIPTIONS = dict(INTERVAL_KINDS, **{
    "none": "no interval: a model of the comparison is missing (see the row's reason)",
    "": "not stated by the record (a descriptive row; read its metric and notes)",
})


@dataclass
class Finding:
    """One claim checked on this run's models.

    effect: signed so that a positive value is the paper's direction (e.g. EAS(dense) - EAS(moe) for
    "dense > MoE"); lo/hi: its interval, of kind interval_kind. The verdict is derived, never chosen: agree
    needs lo > 0 and effect > smallest_effect, disagree hi < 0 and -effect > smallest_effect (NaN: no noise
    floor, inconclusive). A record without a smallest effect of interest gets no verdict: it must say
    verdict="descriptive", else ValueError (there is no interval-sign-only fallback). An agree/disagree row must
    name its interval kind (one of eeutils.analysis.protocol.INTERVAL_KINDS). A verdict passed in that
    contradicts the rule raises ValueError. lens: the lens the readouts used (the protocol's primary: logit).
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
    lens: str = "logit"
    headline: bool = False  # the summary view's comparison for its paper claim (data/protocol.yaml)

    def __post_init__(self):
        if self.verdict and self.verdict not in VERDICTS + (DESCRIPTIVE,):
            raise ValueError(f"verdict must be one of {VERDICTS + (DESCRIPTIVE,)}, got {self.verdict!r}")
        if self.lo > self.hi:
            raise ValueError(f"interval lower end {self.lo} is above its upper end {self.hi}")
        if self.smallest_effect is None:
            if self.verdict != DESCRIPTIVE:
                raise ValueError(f"finding {self.claim!r} has no smallest_effect: pass the noise floor or the "
                                 "protocol's min_effect (NaN if there is none: inconclusive), or write it as "
                                 f"verdict={DESCRIPTIVE!r} (a measurement without a verdict)")
            return
        derived = verdict(self.lo, self.hi, self.effect, self.smallest_effect)
        if derived in ("agree", "disagree") and self.interval_kind not in INTERVAL_KINDS:
            raise ValueError(f"an {derived} row needs a named interval kind (one of {sorted(INTERVAL_KINDS)}), "
                             f"got {self.interval_kind!r}")
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
