"""Notebook 9's numbers from a benchmark result frame: per cell the budget oracle, the saturation oracle
and the best confidence rule within the budget, and the savings finding with its range over cells."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.protocol import load_protocol
from ..analysis.rules import CONFIDENCE_RULES
from .findings import Finding

__all__ = ["CONFIDENCE_RULES", "best_rule_table", "savings_summary", "savings_finding", "RANGE_OVER_CELLS"]

RANGE_OVER_CELLS = "range over cells (min..max across model x workload; not a bootstrap interval)"
PAPER_MAX_SKIP = 0.0726  # reported, secondary source: the paper's largest max-skip ratio (Table 1)
_CELL = ["model", "workload"]
_PAIRED = ["loss", "loss_lo", "loss_hi", "mcnemar_p", "budget_met_ci"]


def best_rule_table(results: pd.DataFrame, min_correct: int = 20, rules=CONFIDENCE_RULES) -> pd.DataFrame:
    """One row per (model, workload) of a `run_benchmark` frame.

    Columns: model, workload, skip_over (the tokens skip ratios average over: "answer_tokens" on
    answer-scored workloads, else "all_tokens"), budget_oracle / saturation / best_rule_skip (max skip
    ratios within the budget over skip_over tokens), best_rule (label of the best of `rules`),
    best_rule_skip_all_tokens and budget_oracle_all_tokens (the same exits averaged over every token),
    the best rule's loss and paired test (loss, loss_lo, loss_hi, mcnemar_p, budget_met_ci; NaN when the
    benchmark ran without them), full_accuracy, accuracy_kind, n_items (answer documents or scored
    tokens), full_correct and meaningful (full_correct >= min_correct).
    """
    ms = results[results.row_type == "max_skip"]
    tr = results[results.row_type == "tradeoff"]
    if ms.empty or tr.empty:
        raise ValueError("the results hold no max_skip / tradeoff rows: pass the frame run_benchmark returned")
    all_tokens = (tr.set_index([*_CELL, "label"])["skip_ratio_all_tokens"] if "skip_ratio_all_tokens" in tr
                  else None)
    rows = []
    for (model, workload), g in ms.groupby(_CELL, sort=False):
        by_rule = g.set_index("rule")
        conf = g[g.rule.isin(rules)].sort_values("skip_ratio", ascending=False, kind="stable")
        best = conf.iloc[0] if len(conf) else None
        t = tr[(tr.model == model) & (tr.workload == workload)].iloc[0]
        over = g["skip_over"].iloc[0] if "skip_over" in g else "all_tokens"
        row = dict(model=model, workload=workload, skip_over=over,
                   budget_oracle=_get(by_rule, "budget_oracle", "skip_ratio"),
                   saturation=_get(by_rule, "saturation", "skip_ratio"),
                   best_rule=best["label"] if best is not None else "",
                   best_rule_skip=float(best["skip_ratio"]) if best is not None else float("nan"))
        row["best_rule_skip_all_tokens"] = _all_tokens(all_tokens, model, workload, row["best_rule"], 0.0)
        row["budget_oracle_all_tokens"] = _all_tokens(all_tokens, model, workload,
                                                      _get(by_rule, "budget_oracle", "label"), float("nan"))
        for c in _PAIRED:
            row[c] = best[c] if (best is not None and c in best) else float("nan")
        em = t["accuracy_kind"] == "exact_match"
        row.update(full_accuracy=float(t["full_accuracy"]), accuracy_kind=t["accuracy_kind"],
                   n_items=int(t["readout_docs"] if em else t["n_tokens"]))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["full_correct"] = np.round(out.full_accuracy.fillna(0) * out.n_items).astype(int)
    out["meaningful"] = out.full_correct >= min_correct
    return out


def _get(frame, rule, column):
    return frame.loc[rule, column] if rule in frame.index else (float("nan") if column != "label" else "")


def _all_tokens(series, model, workload, label, no_rule):
    if series is None:
        return float("nan")
    if not label:  # no admissible threshold: the full model runs
        return no_rule
    key = (model, workload, label)
    return float(series.loc[key]) if key in series.index else float("nan")


def savings_summary(table: pd.DataFrame) -> dict:
    """The 09 finding's numbers from `best_rule_table`: over the meaningful cells (all cells if none is),
    effect = 7.26% (reported, secondary source) - median best-rule skip, and lo / hi = the same with the
    largest / smallest cell: a range over cells, named so in interval_kind, never a bootstrap interval."""
    used = table[table.meaningful]
    weak = used.empty
    if weak:
        used = table
    vals = used.best_rule_skip.to_numpy(dtype=float)
    med = float(np.median(vals))
    return dict(effect=PAPER_MAX_SKIP - med, lo=PAPER_MAX_SKIP - float(vals.max()),
                hi=PAPER_MAX_SKIP - float(vals.min()), interval_kind=RANGE_OVER_CELLS, median_skip=med,
                min_skip=float(vals.min()), max_skip=float(vals.max()),
                n_cells=int(len(used)), all_cells_weak=weak,
                skip_over=", ".join(sorted(set(used.skip_over))),
                budget_oracle_median=float(np.nanmedian(used.budget_oracle)),
                saturation_median=float(np.nanmedian(used.saturation)))


def savings_finding(summary: dict, models, workloads) -> Finding:
    """The 09 zoo row from `savings_summary`: descriptive (a range over cells is no interval of an estimate and
    has no noise floor, so it carries no verdict); the metric text says the range is over cells."""
    claim = load_protocol().claim("max_skip_within_budget")
    kwargs = dict(notebook="09_benchmark", claim=claim.claim, claim_key=claim.key,
                  paper_direction="skip ≤ 7.26% (reported, secondary source)",
                  measured_direction=f"median best confidence-rule skip {summary['median_skip']:.1%}",
                  effect=summary["effect"], lo=summary["lo"], hi=summary["hi"],
                  metric=("0.0726 − max skip ratio of the best confidence rule (skip over "
                          f"{summary['skip_over']}); interval: {RANGE_OVER_CELLS}"),
                  models=", ".join(models), comparison=f"workloads: {', '.join(workloads)}",
                  notes=(f"budget oracle median {summary['budget_oracle_median']:.1%}, saturation oracle median "
                         f"{summary['saturation_median']:.1%}; {summary['n_cells']} cells"),
                  interval_kind=summary["interval_kind"], verdict="descriptive")
    return Finding(**kwargs)
