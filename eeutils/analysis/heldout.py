"""Max skip within an accuracy budget with held-out thresholds: the protocol claim `max_skip_within_budget`.

A rule's threshold tuned on the items it is scored on overstates what the rule would save on new items
(the largest skip within the budget is a maximum over the grid, and the maximum of noisy values is biased
up). Here the items (documents) are split once, by a seeded permutation fixed in data/protocol.yaml:

- **calibration half**: each rule takes its largest-skip grid threshold within the budget there
  (`eeutils.analysis.exits.max_skip_under_budget`); the best realisable rule is the one with the largest
  calibration skip;
- **held-out half**: that threshold's skip ratio (over the answer tokens) and relative accuracy loss, with a
  percentile bootstrap over held-out items (each item's skip and correctness resampled together: paired) and
  McNemar's exact test on the discordant items (`eeutils.analysis.paired.mcnemar_exact`).

The budget oracle (`eeutils.analysis.oracle`) has no threshold: it is solved on the held-out half itself, and
re-solved on every bootstrap replicate. The interval describes the sampling noise of the held-out items only
(the threshold is held fixed); with 20-40 items per half it is wide, and that width is the message.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..lens.result import Readout
from .bootstrap import check_boot, draw_counts, draw_docs, percentile_interval
from .exits import max_skip_under_budget, simulate, skip_tokens, tradeoff
from .oracle import budget_oracle_exits
from .paired import doc_correctness, mcnemar_exact
from .protocol import load_protocol
from .rule_parse import as_rule, default_rules

__all__ = ["HELDOUT_INTERVAL", "ORACLE_INTERVAL", "REFERENCES", "claim_settings", "split_items", "choose_thresholds",
           "item_outcomes", "paired_bootstrap", "oracle_bootstrap", "score_heldout", "heldout_table", "best_realisable",
           "HELDOUT_COLUMNS"]

HELDOUT_INTERVAL = "heldout-item-bootstrap"  # names in eeutils.analysis.protocol.INTERVAL_KINDS
ORACLE_INTERVAL = "oracle-item-bootstrap"
# the protocol's `reference` text (its words before any parenthesis) -> the rule kind that computes it
REFERENCES = {"budget oracle": "budget_oracle"}


def claim_settings(key: str = "max_skip_within_budget", n_boot: int | None = None) -> dict:
    """The claim's settings from data/protocol.yaml: budget, alpha (one-sided level of the budget test),
    min_effect (skip-ratio units), split_seed, calibration (share of items), reference (a rule kind), ci, n_boot
    (the protocol's unless given), seed (bootstrap seed), protocol_version."""
    proto = load_protocol()
    c, d = proto.claim(key), proto.defaults
    ref = str(c.extra["reference"]).split("(")[0].strip()
    if ref not in REFERENCES:
        raise ValueError(f"claim {key}: reference {ref!r} is not one of {sorted(REFERENCES)}")
    return dict(budget=float(c.extra["budget"]), alpha=float(c.extra["budget_alpha"]),
                min_effect=float(c.extra["min_effect"]), split_seed=int(c.extra["split"]["seed"]),
                calibration=float(c.extra["split"]["calibration"]), reference=REFERENCES[ref], ci=float(d["ci"]),
                n_boot=int(n_boot or d["n_boot"]), seed=int(d["bootstrap_seed"]), protocol_version=proto.version)


def split_items(readout: Readout, seed: int, calibration: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(calibration ids, held-out ids), each sorted: the readout's sorted document ids permuted by
    `np.random.default_rng(seed)`, the first floor(calibration x n) calibrating. Deterministic, disjoint."""
    docs = np.unique(np.asarray(readout.doc))
    k = int(np.floor(calibration * len(docs)))
    if not (1 <= k < len(docs)):
        raise ValueError(f"a {calibration:g} split of {len(docs)} items leaves an empty half")
    perm = docs[np.random.default_rng(int(seed)).permutation(len(docs))]
    return np.sort(perm[:k]), np.sort(perm[k:])


def choose_thresholds(calib: Readout, rules, budget: float) -> pd.DataFrame:
    """Per rule kind of `rules`, the largest-skip grid threshold within `budget` on `calib` (the calibration
    items only). Columns: rule, threshold (NaN: none admissible, the full model runs), calib_skip, calib_loss."""
    grid = [r for r in default_rules(calib.n_layers, budget) if r.kind in set(rules)]
    best = max_skip_under_budget(tradeoff(calib, grid), budget=budget, metric="accuracy", by=[])
    best = best.set_index("rule").reindex(list(rules))
    return pd.DataFrame({"rule": list(rules), "threshold": best.threshold.to_numpy(dtype=float),
                         "calib_skip": best.skip_ratio.to_numpy(dtype=float),
                         "calib_loss": best.loss.to_numpy(dtype=float)})


def item_outcomes(readout: Readout, exit_layers) -> dict:
    """Per item (document, sorted id order) of an exact-answer readout: skip (summed (L - exit) / L over its
    answer tokens), tokens (its answer tokens), full and exited (1 if right, else 0)."""
    full, exited, kind = doc_correctness(readout, exit_layers)
    mask, over = skip_tokens(readout)
    if kind != "exact_match" or over != "answer_tokens":
        raise ValueError(f"held-out max skip needs an exact-answer readout (accuracy here is {kind!r})")
    e = np.asarray(exit_layers)
    _, inv = np.unique(np.asarray(readout.doc)[mask], return_inverse=True)
    L = readout.n_layers
    skip = np.bincount(inv.reshape(-1), weights=((L - e[mask]) / L).astype(np.float64), minlength=len(full))
    tokens = np.bincount(inv.reshape(-1), minlength=len(full)).astype(np.float64)
    return dict(skip=skip, tokens=tokens, full=full, exited=exited)


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def paired_bootstrap(out: dict, n_boot: int, ci: float, seed: int, alpha: float) -> dict:
    """Skip ratio (sum skip / sum tokens) and relative loss (F - E) / F of `item_outcomes` with percentile
    intervals at level ci from one item draw per replicate (the draws of `bootstrap.draw_counts`), the
    one-sided (1 - alpha) upper bound of the loss, and McNemar's exact p on the discordant items."""
    check_boot(n_boot, ci, seed)
    skip, tokens, full, exited = (np.asarray(out[k], dtype=np.float64) for k in ("skip", "tokens", "full", "exited"))
    counts = draw_counts(int(seed), len(full), int(n_boot))
    skip_reps = _ratio(counts @ skip, counts @ tokens)
    F, Fb = full.sum(), counts @ full
    loss_reps = _ratio(Fb - counts @ exited, Fb)
    s_lo, s_hi = percentile_interval(skip_reps, ci)
    l_lo, l_hi = percentile_interval(loss_reps, ci)
    worse, better = int(((full == 1) & (exited == 0)).sum()), int(((full == 0) & (exited == 1)).sum())
    return dict(skip=float(_ratio(skip.sum(), tokens.sum())), skip_lo=float(s_lo), skip_hi=float(s_hi),
                loss=float(_ratio(F - exited.sum(), F)), loss_lo=float(l_lo), loss_hi=float(l_hi),
                loss_upper=float(percentile_interval(loss_reps, 1.0 - 2.0 * alpha)[1]), mcnemar_p=mcnemar_exact(worse, better),
                n_worse=worse, n_better=better, n_items=int(len(full)), full_right=int(F))


def oracle_bootstrap(held: Readout, budget: float, n_boot: int, ci: float, seed: int, alpha: float) -> dict:
    """The budget oracle re-solved on every item bootstrap replicate of `held` (the draws of
    `bootstrap.draw_docs`, the same as `paired_bootstrap`'s): percentile intervals of its skip ratio and
    relative loss (skip_lo, skip_hi, loss_lo, loss_hi) and the one-sided (1 - alpha) upper bound loss_upper."""
    docs = np.unique(np.asarray(held.doc))
    draws = draw_docs(int(seed), len(docs), int(n_boot))
    skip, loss = np.empty(len(draws)), np.empty(len(draws))
    for b, idx in enumerate(draws):
        sub = held.select_docs(docs[idx])
        o = item_outcomes(sub, budget_oracle_exits(sub, budget))
        skip[b] = _ratio(o["skip"].sum(), o["tokens"].sum())
        loss[b] = _ratio(o["full"].sum() - o["exited"].sum(), o["full"].sum())
    (s_lo, s_hi), (l_lo, l_hi) = percentile_interval(skip, ci), percentile_interval(loss, ci)
    return dict(skip_lo=float(s_lo), skip_hi=float(s_hi), loss_lo=float(l_lo), loss_hi=float(l_hi),
                loss_upper=float(percentile_interval(loss, 1.0 - 2.0 * alpha)[1]))


def score_heldout(held: Readout, rule: str, threshold: float, settings: dict) -> dict:
    """One rule at a fixed threshold (NaN: none admissible, the full model runs), or the reference oracle,
    scored on the held-out items: `paired_bootstrap`'s columns, interval_kind, budget_met (point loss within
    the budget) and budget_met_ci (one-sided upper bound within it). The oracle's intervals are
    `oracle_bootstrap`'s (re-solved per replicate, so its loss meets the budget on every replicate by
    construction); its McNemar p compares its held-out exits with the full model."""
    s = settings
    if rule == s["reference"]:
        exits = budget_oracle_exits(held, s["budget"])
    elif np.isnan(threshold):
        exits = np.full(held.n_tokens, held.n_layers, dtype=np.int64)
    else:
        exits = simulate(held, as_rule((rule, threshold)))
    res = paired_bootstrap(item_outcomes(held, exits), s["n_boot"], s["ci"], s["seed"], s["alpha"])
    res["interval_kind"] = HELDOUT_INTERVAL
    if rule == s["reference"]:
        res.update(oracle_bootstrap(held, s["budget"], s["n_boot"], s["ci"], s["seed"], s["alpha"]))
        res["interval_kind"] = ORACLE_INTERVAL
    tol = 1e-12
    res["budget_met"] = bool(np.isfinite(res["loss"]) and res["loss"] <= s["budget"] + tol)
    res["budget_met_ci"] = bool(np.isfinite(res["loss_upper"]) and res["loss_upper"] <= s["budget"] + tol)
    return res


HELDOUT_COLUMNS = ["model", "halves", "rule", "best", "threshold", "calib_skip", "calib_loss", "skip", "skip_lo",
                   "skip_hi", "loss", "loss_lo", "loss_hi", "loss_upper", "budget_met", "budget_met_ci", "mcnemar_p",
                   "n_worse", "n_better", "n_items", "n_calib", "full_right", "full_accuracy", "interval_kind", "ci",
                   "n_boot", "budget"]


def heldout_table(readout: Readout, rules, settings: dict, model: str = "") -> pd.DataFrame:
    """The claim's rows for one exact-answer readout: for halves "primary" (calibrate on the first half of
    `split_items`, score the second) and "swapped", the reference oracle and each rule of `rules` (realisable
    kinds, in tie-break order). best marks the rule with the largest calibration skip (ties: the earlier in
    `rules`). Columns: HELDOUT_COLUMNS (skip over answer tokens; loss relative; n_items: held-out items)."""
    s = settings
    first, second = split_items(readout, s["split_seed"], s["calibration"])
    rows = []
    for halves, cal_ids, held_ids in (("primary", first, second), ("swapped", second, first)):
        held = readout.select_docs(held_ids)
        chosen = choose_thresholds(readout.select_docs(cal_ids), rules, s["budget"])
        best = chosen.rule.iloc[int(np.argmax(chosen.calib_skip.to_numpy()))]
        ref = dict(rule=s["reference"], threshold=s["budget"], calib_skip=np.nan, calib_loss=np.nan)
        for r in [ref, *chosen.to_dict("records")]:
            res = score_heldout(held, r["rule"], float(r["threshold"]), s)
            rows.append(dict(r, **res, model=model, halves=halves, best=r["rule"] == best, n_calib=len(cal_ids),
                             full_accuracy=res["full_right"] / res["n_items"], ci=s["ci"], n_boot=s["n_boot"],
                             budget=s["budget"]))
    return pd.DataFrame(rows)[HELDOUT_COLUMNS]


def best_realisable(table: pd.DataFrame) -> pd.DataFrame:
    """The best-rule rows of a `heldout_table` frame (one per model and halves)."""
    return table[table.best].reset_index(drop=True)
