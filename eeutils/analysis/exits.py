"""Early-exit rules simulated on one Readout (no model re-run), their trade-off curves, and the
maximum skip ratio under an accuracy budget.

The rules themselves (kinds, thresholds, conventions, the predicate `rule_fires`) are the table in
`eeutils.analysis.rules`; `rule_fires` is the one predicate the simulator and the decoder share:
the simulator calls it with whole columns of the readout, a decoder with 1-element arrays (or
scalars) of the current layer's statistics for the token being generated.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.checks import check_frame, check_names, check_real
from ..lens.result import Readout
from .depth import saturated_matrix
from .oracle import budget_oracle_exits
from .paired import paired_loss
from .similarity import check_readout
from .bootstrap import check_boot
from .rule_parse import as_rule, default_rules, parse_rules  # noqa: F401
from .rules import (DEFAULT_THRESHOLDS, EXIT_KINDS, ExitRule, rule_fires,  # noqa: F401
                    subset_streak, top1_streak, update_streak)

__all__ = [
    "EXIT_KINDS", "DEFAULT_THRESHOLDS", "ExitRule", "rule_fires", "top1_streak", "update_streak",
    "default_rules", "simulate", "evaluate", "tradeoff", "max_skip_under_budget", "skip_tokens", "PAIRED_COLUMNS",
]


# ---------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------
def _rule_inputs(readout: Readout, rule: ExitRule, cache: dict | None = None) -> dict:
    """Per-statistic arrays for `rule`: [n, L+1] matrices, or [n] vectors that apply at every layer."""
    cache = {} if cache is None else cache
    out = {}
    for name in rule.required_stats:
        if name == "top1_streak" and rule.subset:  # the streak counts changes between checked layers only
            out[name] = subset_streak(readout.stats["top1"], rule.checked_layers(readout.n_layers))
            continue
        if name not in cache:
            if name == "saturated":
                cache[name] = saturated_matrix(readout.stats["top1"])
            elif name == "top1_streak":
                cache[name] = top1_streak(readout.stats["top1"])
            elif name == "target":
                cache[name] = np.asarray(readout.target)
            elif name in readout.stats:
                cache[name] = np.asarray(readout.stats[name])
            else:
                raise ValueError(f"rule {rule.label!r} needs the statistic {name!r}, which this readout lacks "
                                 f"(it has: {sorted(readout.stats)})")
        out[name] = cache[name]
    return out


def simulate(readout: Readout, rule: ExitRule, _cache: dict | None = None) -> np.ndarray:
    """Exit layer per token (int array in min_layer..L) if `rule` were applied while decoding.

    Teacher-forced simulation: each token's exit is decided from its own readout row, as if the
    earlier tokens had been produced by the full model (the readout's hidden states come from a
    full forward; a real decoder's later tokens would see early-exited states).
    """
    check_readout(readout, "simulate")
    if not isinstance(rule, ExitRule):
        raise TypeError(f"rule must be an ExitRule (make one with eeutils.exits.as_rule('max_prob:0.9')), got "
                        f"{type(rule).__name__}")
    L = readout.n_layers
    rule.validate_for(L)
    if rule.spec.solver is not None:  # a whole-readout oracle
        return budget_oracle_exits(readout, rule.threshold, rule.min_layer, reference=rule.spec.solver)
    inputs = _rule_inputs(readout, rule, _cache)
    n = readout.n_tokens
    exit_layer = np.full(n, L, dtype=np.int64)
    undecided = np.ones(n, dtype=bool)
    for layer in range(rule.min_layer, L):
        stats = {k: (v[:, layer] if v.ndim == 2 else v) for k, v in inputs.items()} or {"_": undecided}
        fires = rule_fires(rule, stats, layer, L) & undecided
        exit_layer[fires] = layer
        undecided &= ~fires
        if not undecided.any():
            break
    return exit_layer


def skip_tokens(readout: Readout) -> tuple[np.ndarray, str]:
    """(mask, name): the tokens savings are averaged over. On answer-scored workloads (answer
    positions with a target) the answer tokens ("answer_tokens"): accuracy is scored there, and a
    prompt is not generated; otherwise every token ("all_tokens")."""
    check_readout(readout, "simulate")
    ans = np.asarray(readout.answer, dtype=bool) & (np.asarray(readout.target) >= 0)
    if ans.any():
        return ans, "answer_tokens"
    return np.ones(readout.n_tokens, dtype=bool), "all_tokens"


def evaluate(readout: Readout, exit_layers) -> dict:
    """Savings and quality of given exit layers (one per token) against the full model.

    Returns: n_tokens, n_layers; skip_over ("answer_tokens" on answer-scored workloads, else
    "all_tokens": see `skip_tokens`) and n_skip_tokens; over those tokens: mean_layers (mean exit
    layer = blocks run), skip_ratio = mean (L - exit)/L, agreement = share whose exited top1 equals
    the final top1; skip_ratio_all_tokens (the same mean over every token, prompts included);
    token_accuracy / full_token_accuracy = exited / final top1 == target over tokens with a target
    (n_scored_tokens); exact_match / full_exact_match over documents with answer positions
    (a document is correct iff every answer-position prediction equals its target; n_answer_docs);
    accuracy / full_accuracy = the exact match if the workload has answers, else token accuracy
    (accuracy_kind says which); rel_acc_loss = (full - accuracy) / full (NaN when full is 0 or
    undefined; negative = the exit improves accuracy: the loss is net of newly right items).
    """
    check_readout(readout, "simulate")
    L = readout.n_layers
    e = np.asarray(exit_layers)
    if e.shape != (readout.n_tokens,):
        raise ValueError(f"exit_layers must have one entry per token, shape ({readout.n_tokens},), got {e.shape}")
    if e.dtype.kind not in "iu":
        if e.dtype.kind == "f" and np.all(np.isfinite(e)) and np.all(e == np.round(e)):
            e = e.astype(np.int64)
        else:
            raise ValueError("exit_layers must be integers")
    if e.min() < 0 or e.max() > L:
        raise ValueError(f"exit layers must lie in 0..{L}, got range {e.min()}..{e.max()}")
    top1 = np.asarray(readout.stats["top1"])
    rows = np.arange(readout.n_tokens)
    pred = top1[rows, e]
    final = top1[:, -1]
    target = np.asarray(readout.target)
    has_t = target >= 0
    correct = pred == target
    full_correct = final == target
    mask, over = skip_tokens(readout)
    skip = (L - e) / L
    res = dict(n_tokens=readout.n_tokens, n_layers=L, skip_over=over, n_skip_tokens=int(mask.sum()),
               mean_layers=float(e[mask].mean()), skip_ratio=float(skip[mask].mean()),
               skip_ratio_all_tokens=float(skip.mean()), agreement=float((pred == final)[mask].mean()),
               n_scored_tokens=int(has_t.sum()))
    res["token_accuracy"] = float(correct[has_t].mean()) if has_t.any() else float("nan")
    res["full_token_accuracy"] = float(full_correct[has_t].mean()) if has_t.any() else float("nan")
    ans = np.asarray(readout.answer, dtype=bool) & has_t
    if ans.any():
        docs, inv = np.unique(np.asarray(readout.doc)[ans], return_inverse=True)
        wrong = np.bincount(inv, weights=(~correct[ans]).astype(np.float64), minlength=len(docs))
        full_wrong = np.bincount(inv, weights=(~full_correct[ans]).astype(np.float64), minlength=len(docs))
        res.update(exact_match=float((wrong == 0).mean()), full_exact_match=float((full_wrong == 0).mean()),
                   n_answer_docs=int(len(docs)))
        res.update(accuracy=res["exact_match"], full_accuracy=res["full_exact_match"], accuracy_kind="exact_match")
    else:
        res.update(exact_match=float("nan"), full_exact_match=float("nan"), n_answer_docs=0)
        res.update(accuracy=res["token_accuracy"], full_accuracy=res["full_token_accuracy"],
                   accuracy_kind="token_accuracy")
    full = res["full_accuracy"]
    res["rel_acc_loss"] = float((full - res["accuracy"]) / full) if (np.isfinite(full) and full > 0) else float("nan")
    return res


TRADEOFF_COLUMNS = ["model", "rule", "threshold", "label", "min_layer", "mean_layers", "skip_ratio", "skip_over",
                    "skip_ratio_all_tokens", "agreement", "accuracy", "full_accuracy", "rel_acc_loss", "accuracy_kind",
                    "n_tokens", "n_skip_tokens"]


def tradeoff(readout: Readout, rules=None, budget: float | None = None) -> pd.DataFrame:
    """One row per rule (kind and threshold) simulated on `readout`.

    Columns: model, rule (kind), threshold (NaN for threshold-free oracles; the budget for budget
    oracles), label, min_layer, mean_layers, skip_ratio, skip_over (which tokens the skip and
    agreement average over, see `skip_tokens`), skip_ratio_all_tokens, agreement, accuracy,
    full_accuracy, rel_acc_loss, accuracy_kind, n_tokens, n_skip_tokens.
    rules: iterable of ExitRule (or (kind, threshold) tuples, or dicts of ExitRule fields);
    None = `default_rules(L, budget)` (budget: a loss budget added to the budget oracles' grid).
    """
    check_readout(readout, "simulate")
    if budget is not None:
        check_real("budget", budget, 0, 1, hi_open=True, hint=" (a relative accuracy loss, e.g. 0.05)")
    if isinstance(rules, (str, dict)) or (rules is not None and not hasattr(rules, "__iter__")):
        rules = parse_rules(rules, readout.n_layers)  # a spec string, one rule, or a clear TypeError
    rules = default_rules(readout.n_layers, budget) if rules is None else [as_rule(r) for r in rules]
    cache: dict = {}
    rows = []
    for rule in rules:
        r = evaluate(readout, simulate(readout, rule, _cache=cache))
        rows.append(dict(model=readout.meta.get("model", ""), rule=rule.kind,
                         threshold=float("nan") if rule.threshold is None else float(rule.threshold),
                         label=rule.label, min_layer=rule.min_layer,
                         **{c: r[c] for c in TRADEOFF_COLUMNS[5:] if c in r}))
    return pd.DataFrame(rows, columns=TRADEOFF_COLUMNS)


_OTHER_BUDGET_ORACLE = {"accuracy": "budget_oracle_agreement", "agreement": "budget_oracle"}
PAIRED_COLUMNS = ["loss_lo", "loss_hi", "ci", "n_boot", "boot_seed", "interval_kind", "mcnemar_p", "n_worse",
                  "n_better", "n_paired_docs", "budget_met", "budget_met_ci"]


def _best_within_budget(row: dict, g: pd.DataFrame):
    """(the row with the group's largest admissible skip ratio, ties to the smaller loss; the chosen threshold's
    trade-off row or None when no threshold is admissible: skip 0, run the full model)."""
    ok = g[g["admissible"]]
    row["skip_over"] = g["skip_over"].iloc[0] if "skip_over" in g else "all_tokens"
    if ok.empty:
        row.update(skip_ratio=0.0, threshold=float("nan"), label="", mean_layers=float("nan"),
                   loss=float("nan"), n_admissible=0)
        return row, None
    best = ok.sort_values(["skip_ratio", "loss"], ascending=[False, True], kind="stable").iloc[0]
    row.update(skip_ratio=float(best["skip_ratio"]), threshold=float(best["threshold"]),
               label=best.get("label", ""), mean_layers=float(best.get("mean_layers", float("nan"))),
               loss=float(best["loss"]), n_admissible=int(len(ok)))
    return row, best


def max_skip_under_budget(tradeoff_frame: pd.DataFrame, budget: float = 0.05, metric: str = "accuracy",
                          by=None, readout: Readout | None = None, ci: float = 0.95, n_boot: int = 1000,
                          seed: int = 0) -> pd.DataFrame:
    """Per rule, the largest skip ratio among thresholds whose quality loss is within `budget`,
    and (given the readout) a paired test of whether that loss meets the budget.

    metric="accuracy": loss = rel_acc_loss = (full_accuracy - accuracy) / full_accuracy (the
    paper's "at most 5% accuracy loss", read as relative; net: newly right items count).
    metric="agreement": loss = 1 - agreement (share of skip tokens whose prediction changes).
    A row is admissible iff loss <= budget (NaN losses are not). Ties in skip ratio go to the
    smaller loss. A rule with no admissible threshold gets skip_ratio 0 (run the full model) and
    threshold NaN. The budget oracle of the other metric is left out (it optimises another loss).
    by: grouping columns besides "rule"; default: whichever of model, workload the frame has.
    Returns: group columns, rule, skip_ratio, skip_over, threshold, label, mean_layers, loss,
    n_admissible, budget, metric.

    readout (the one readout the frame was computed from): the chosen threshold's exits are
    re-simulated and judged by `eeutils.analysis.paired.paired_loss` (a paired bootstrap over
    documents, n_boot replicates, seed, level ci; McNemar's exact p on discordant answer
    documents), adding PAIRED_COLUMNS: loss_lo, loss_hi, ci, n_boot, boot_seed, interval_kind,
    mcnemar_p, n_worse, n_better, n_paired_docs, budget_met (point loss <= budget) and
    budget_met_ci (loss_hi <= budget: met with confidence, the rule of `eeutils.analysis.paired`).
    """
    b = check_real("budget", budget, 0, 1, hi_open=True, hint=" (a fraction, e.g. 0.05 for 5%)")
    if not isinstance(metric, str) or metric not in ("accuracy", "agreement"):
        raise ValueError(f"metric must be 'accuracy' or 'agreement', got {metric!r}")
    check_boot(n_boot, ci, seed)  # checked even without a readout, where they go unused
    need = ["rule", "threshold", "skip_ratio"] + (["rel_acc_loss"] if metric == "accuracy" else ["agreement"])
    check_frame("tradeoff_frame", tradeoff_frame, source="eeutils.exits.tradeoff")
    missing = [c for c in need if c not in tradeoff_frame]
    if missing:
        raise ValueError(f"the trade-off frame lacks column(s) {missing}")
    if by is not None:
        by = check_names("by", by, [c for c in tradeoff_frame.columns if c != "rule"], empty=True)
    groups = [c for c in (("model", "workload") if by is None else by) if c in tradeoff_frame] + ["rule"]
    if readout is not None:
        check_readout(readout, "simulate")
        many = [c for c in groups[:-1] if tradeoff_frame[c].nunique(dropna=False) > 1]
        if many:
            raise ValueError(f"a readout belongs to one trade-off; this frame has several {many}: pass "
                             "one model x workload at a time")
    f = tradeoff_frame[tradeoff_frame["rule"] != _OTHER_BUDGET_ORACLE[metric]].copy()
    f["loss"] = f["rel_acc_loss"] if metric == "accuracy" else 1.0 - f["agreement"]
    f["admissible"] = f["loss"].notna() & (f["loss"] <= b + 1e-12)
    out = []
    for key, g in f.groupby(groups, sort=False, dropna=False):
        row, chosen = _best_within_budget(dict(zip(groups, key if isinstance(key, tuple) else (key,))), g)
        row.update(budget=b, metric=metric)
        if readout is not None:
            row.update(_paired_row(readout, chosen, b, metric, ci, n_boot, seed))
        out.append(row)
    return pd.DataFrame(out)


def _paired_row(readout: Readout, chosen, budget: float, metric: str, ci: float, n_boot: int, seed: int) -> dict:
    """The paired test of one max-skip row: `chosen` trade-off row, or None (no admissible threshold: full model)."""
    if chosen is None:
        exit_layers = np.full(readout.n_tokens, readout.n_layers, dtype=np.int64)
    else:
        thr = chosen["threshold"]
        rule = as_rule(dict(kind=chosen["rule"], threshold=None if pd.isna(thr) else thr,
                            min_layer=int(chosen.get("min_layer", 1))))
        exit_layers = simulate(readout, rule)
    res = paired_loss(readout, exit_layers, budget, ci=ci, n_boot=n_boot, seed=seed,
                      reference="final" if metric == "agreement" else "target")
    return {c: res[c] for c in PAIRED_COLUMNS}
