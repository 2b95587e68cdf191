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

from ..core.io import write_csv_atomic, write_json_atomic, write_text_atomic
from .experiments import group_effect

VERDICTS = ("agree", "disagree", "inconclusive")


@dataclass
class Finding:
    """One claim checked on this run's models.

    effect: signed so that a positive value is the paper's direction (e.g. EAS(dense) - EAS(moe)
    for "dense > MoE"); lo/hi: its interval; the verdict follows from the interval's sign.
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
    comparison: str = ""  # e.g. "equal tokens" or "equal validation loss"
    notes: str = ""
    verdict: str = field(default="")

    def __post_init__(self):
        if not self.verdict:
            self.verdict = verdict(self.lo, self.hi)
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def verdict(lo: float, hi: float) -> str:
    """agree if the whole interval is in the paper's direction (> 0), disagree if it is wholly opposite."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if lo > 0:
        return "agree"
    if hi < 0:
        return "disagree"
    return "inconclusive"


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


def findings_markdown(frame: pd.DataFrame) -> str:
    lines = ["| notebook | claim (paper) | comparison | measured here | effect [interval] | metric | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        lines.append(f"| {r.notebook} | {r.claim} ({r.paper_direction}) | {r.comparison} | {r.measured_direction} | "
                     f"{r.effect:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] | {r.metric} | **{r.verdict}** |")
    return "\n".join(lines) + "\n"


def write_findings_table(out_dir) -> tuple[Path, Path]:
    """findings.md and findings.csv in out_dir, gathered from the records."""
    out_dir = Path(out_dir)
    frame = gather_findings(out_dir)
    csv = out_dir / "findings.csv"
    md = out_dir / "findings.md"
    write_csv_atomic(frame, csv)
    header = ("# Findings: the paper's claims against this run\n\n"
              "Effects are signed so that a positive value is the paper's direction; the interval is a "
              "bootstrap over documents (and, where stated, the spread between training seeds). Paper "
              "numbers are reported from a secondary source.\n\n")
    write_text_atomic(header + (findings_markdown(frame) if len(frame) else "_no finding records were written_\n"), md)
    return md, csv


def check_claim(readouts: dict, group_a, group_b, *, notebook: str, claim: str, paper_direction: str,
                positive: str, negative: str, similarity: str = "logit_cos", out_dir=None, n_boot: int = 200,
                seed: int = 0, comparison: str = "", notes: str = "", name: str | None = None, **eas_kwargs):
    """Test "A is more suitable than B" on readouts and write the finding record.

    The effect is mean normalised EAS of group A minus group B (A = the side the paper says is more
    suitable); its interval is the union of a document bootstrap and the seed spread
    (`experiments.group_effect`). Returns (Finding, the effect dict).
    """
    eff = group_effect(readouts, list(group_a), list(group_b), n_boot=n_boot, seed=seed, similarity=similarity,
                       **eas_kwargs)
    seeds = " (interval includes seed spread)" if max(len(group_a), len(group_b)) > 1 else ""
    f = Finding(notebook=notebook, claim=claim, paper_direction=paper_direction,
                measured_direction=direction_word(eff["effect"], positive, negative),
                effect=eff["effect"], lo=eff["lo"], hi=eff["hi"],
                metric=f"EAS/ceiling, {similarity} similarity{seeds}",
                models=f"A={', '.join(group_a)}; B={', '.join(group_b)}", comparison=comparison, notes=notes)
    if out_dir is not None:
        write_finding(f, out_dir, name or f"{notebook}_{similarity}")
    return f, eff
