"""The findings table as a reader sees it: rows grouped by paper claim and lens, a reading where comparisons of
one claim disagree, and the summary view (one line per paper claim: zoo/logit, zoo/tuned, real models, paper).

Records come from `findings.gather_findings`; nothing here computes a verdict. The summary's verdict for a claim
and lens is its headline comparison's (data/protocol.yaml marks it before any result exists), never a pick.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.io import write_csv_atomic, write_text_atomic
from ..core.resources import data_path
from .findings import INTERVAL_DESCRIPTIONS, gather_findings
from .plotting import savefig

__all__ = ["findings_markdown", "paper_claims", "readings", "summary_frame", "summary_figure", "summary_markdown",
           "unexplained_conflicts", "write_findings_table"]

REAL_PREFIX = "real/"
SUMMARY_COLUMNS = ("zoo · logit lens", "zoo · tuned lens", "real models")


def _num(x, fmt="+.3f") -> str:
    try:
        return format(float(x), fmt) if np.isfinite(float(x)) else "n/a"
    except (TypeError, ValueError):
        return "n/a"


def _prepared(frame: pd.DataFrame) -> pd.DataFrame:
    """Records with the view's columns filled: lens (old records: logit), headline, group (the paper claim)."""
    f = frame.copy()
    for col, default in (("lens", "logit"), ("headline", False), ("interval_kind", ""), ("robustness", ""),
                         ("reason", ""), ("deviations", ""), ("claim_key", "")):
        f[col] = f[col].fillna(default) if col in f else default
    f["lens"] = f.lens.replace("", "logit")
    f["real"] = f.models.fillna("").str.contains(REAL_PREFIX, regex=False)
    f["group"] = f.claim.str.replace(r"\s*\(.*\)$", "", regex=True)
    f["order"] = f.groupby("group").notebook.transform("min")  # a claim's rows stay together, tuned lens included
    return f.sort_values(["order", "group", "lens", "notebook"], kind="stable").reset_index(drop=True)


def readings(frame: pd.DataFrame) -> dict:
    """{(claim, lens): one line} for every claim and lens whose comparisons give different verdicts: what differs
    between them, and how to read it. Agreeing groups get no line."""
    f = _prepared(frame)
    out = {}
    for (group, lens), g in f[f.verdict != "descriptive"].groupby(["group", "lens"], sort=False):
        if g.verdict.nunique() < 2:
            continue
        parts = "; ".join(f"**{v}** at {c}" for v, c in zip(g.verdict, g.comparison))
        head = g[g.headline.astype(bool)]
        lead = (f"the headline comparison ({head.comparison.iloc[0]}) gives **{head.verdict.iloc[0]}**. "
                if len(head) else "")
        out[(group, lens)] = (f"The comparisons differ in what is held equal (tokens, checkpoint, workload, models): "
                              f"{parts}. Reading: {lead}The claim holds only under the comparisons that say so; "
                              "the others do not contradict it unless they disagree outright.")
    return out


def unexplained_conflicts(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of one claim and lens with different verdicts but the same stated comparison (and workload): two
    verdicts a reader could not tell apart. A correct table has none."""
    f = _prepared(frame)
    f = f[f.verdict != "descriptive"]
    keys = ["group", "lens", "comparison", "workload"]
    n = f.groupby(keys, dropna=False).verdict.transform("nunique")
    return f[n > 1][keys + ["notebook", "verdict"]]


def _row(r) -> str:
    why = "; ".join(x for x in (r.reason, r.deviations and f"deviations: {r.deviations}") if x)
    mark = " (headline)" if bool(r.headline) else ""
    return (f"| {r.notebook} | {r.comparison}{mark} | {r.measured_direction} | "
            f"{_num(r.effect)} [{_num(r.lo)}, {_num(r.hi)}] ({r.interval_kind or 'unstated'}) | "
            f"{_num(r.noise_floor, '.3f')} / {_num(r.smallest_effect, '.3f')} | {r.metric} | **{r.verdict}** | "
            f"{r.robustness or 'n/a'} | {why} |")


def findings_markdown(frame: pd.DataFrame) -> str:
    """One section per paper claim and lens: its comparisons, then a reading where their verdicts differ."""
    f = _prepared(frame)
    notes = readings(frame)
    head = ("| notebook | comparison | measured here | effect [interval] (kind) | noise floor / smallest effect | "
            "metric | verdict | robustness | why / deviations |\n|---|---|---|---|---|---|---|---|---|")
    lines = []
    for (group, lens), g in f.groupby(["group", "lens"], sort=False):
        where = "real models" if g.real.all() else "zoo" if not g.real.any() else "zoo and real models"
        lines += [f"### {group} ({g.paper_direction.iloc[0]}) · {lens} lens · {where}", "", head]
        lines += [_row(r) for r in g.itertuples()]
        if (group, lens) in notes:
            lines += ["", notes[(group, lens)]]
        lines.append("")
    return "\n".join(lines) + "\n"


def paper_claims(path=None) -> pd.DataFrame:
    """What the paper says per claim key (reported, secondary source): data/paper_claims.csv."""
    return pd.read_csv(Path(path) if path is not None else data_path("paper_claims.csv"))


def _cell(rows: pd.DataFrame) -> str:
    """A summary cell: the headline row's verdict with effect and floor, and how many other comparisons agree."""
    if not len(rows):
        return "not measured"
    rows = rows[rows.verdict != "descriptive"] if (rows.verdict != "descriptive").any() else rows
    head = rows[rows.headline.astype(bool)]
    r = (head if len(head) else rows).iloc[0]
    text = (f"{r.verdict} ({_num(r.effect)}, floor {_num(r.noise_floor, '.3f')})" if r.verdict != "descriptive"
            else f"descriptive ({_num(r.effect)})")
    others = rows.drop(index=r.name)
    if len(others):
        counts = others.verdict.value_counts()
        text += " · other comparisons: " + ", ".join(f"{v} ×{n}" for v, n in counts.items())
    return text


def summary_frame(frame: pd.DataFrame, claims: pd.DataFrame | None = None) -> pd.DataFrame:
    """One line per paper claim: the headline verdict under each lens on the zoo, the real models' rows, and
    what the paper reports (secondary source)."""
    f = _prepared(frame)
    claims = paper_claims() if claims is None else claims
    said = dict(zip(claims.claim_key, claims.paper))
    rows = []
    for group, g in f.groupby("group", sort=False):
        zoo, real = g[~g.real], g[g.real]
        keys = [k for k in g.claim_key if k in said]
        rows.append({"claim": group, "paper direction": g.paper_direction.iloc[0],
                     SUMMARY_COLUMNS[0]: _cell(zoo[zoo.lens == "logit"]),
                     SUMMARY_COLUMNS[1]: _cell(zoo[zoo.lens == "tuned"]),
                     SUMMARY_COLUMNS[2]: _cell(real),
                     "paper (reported, secondary source)": said[keys[0]] if keys else "not stated in the notes"})
    return pd.DataFrame(rows)


def summary_markdown(summary: pd.DataFrame) -> str:
    cols = list(summary.columns)
    lines = ["# Findings summary: one line per paper claim", "",
             "Each cell: the verdict of the claim's headline comparison (data/protocol.yaml) with its effect and "
             "noise floor, then how the other comparisons of the same claim came out. The paper's column is "
             "reported, secondary source. Full rows: findings.md.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in summary.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary_figure(summary: pd.DataFrame):
    """A claims x (zoo/logit, zoo/tuned, real) grid coloured by verdict (colour-blind palette)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = ["agree", "inconclusive", "disagree", "descriptive", "not measured"]
    code = summary[list(SUMMARY_COLUMNS)].apply(lambda col: col.map(lambda t: order.index(
        next((v for v in order if t.startswith(v)), "not measured"))))
    colours = sns.color_palette("colorblind", len(order))
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(summary) + 1.6))
    sns.heatmap(code, cmap=colours, vmin=-0.5, vmax=len(order) - 0.5, cbar=False, linewidths=1, ax=ax,
                annot=summary[list(SUMMARY_COLUMNS)].map(lambda t: t.split(" · ")[0]), fmt="",
                annot_kws={"fontsize": 7})
    ax.set_yticks(np.arange(len(summary)) + 0.5, [c[:48] for c in summary.claim], rotation=0, fontsize=8)
    ax.set_xlabel("where the claim was checked (headline comparison)")
    ax.set_ylabel("paper claim")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(len(order))]
    ax.legend(handles, order, title="verdict", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def _header(frame: pd.DataFrame) -> str:
    kinds = sorted(set(frame.interval_kind.fillna(""))) if len(frame) else []
    text = ["# Findings: the paper's claims against this run\n",
            ("Effects are signed so that a positive value is the paper's direction (reported, secondary source). "
             "Rows are *agree* or *disagree* only when the interval excludes zero, |effect| exceeds the smallest "
             "effect of interest (the larger of the seed noise floor and the protocol's minimum) and every side has "
             "the protocol's minimum number of seeds; otherwise *inconclusive*. *descriptive* rows measure without "
             "judging. Rows are grouped by paper claim and lens; where comparisons of one claim disagree, a "
             "reading follows. Robustness: how many secondary metric variants give the same verdict. "
             "One line per claim: findings_summary.md.\n"),
            "Interval kinds in this table:\n"]
    text += [f"- `{k or 'unstated'}`: {INTERVAL_DESCRIPTIONS.get(k, 'described in the row (metric, notes)')}"
             for k in kinds]
    return "\n".join(text) + "\n\n"


def write_findings_table(out_dir) -> tuple[Path, Path]:
    """findings.md, findings.csv, findings_summary.md/.csv and figures/findings_summary.png in out_dir."""
    out_dir = Path(out_dir)
    frame = gather_findings(out_dir)
    csv, md = out_dir / "findings.csv", out_dir / "findings.md"
    write_csv_atomic(frame, csv)
    body = findings_markdown(frame) if len(frame) else "_no finding records were written_\n"
    write_text_atomic(_header(frame) + body, md)
    if len(frame):
        summary = summary_frame(frame)
        write_csv_atomic(summary, out_dir / "findings_summary.csv")
        write_text_atomic(summary_markdown(summary), out_dir / "findings_summary.md")
        import matplotlib.pyplot as plt

        fig = summary_figure(summary)
        savefig(fig, "findings_summary", out_dir)
        plt.close(fig)
    return md, csv
