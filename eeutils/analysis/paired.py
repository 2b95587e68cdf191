"""Is an accuracy budget met? A paired test of exited vs full-model correctness, per document.

Both predictions are made on the same documents, so the comparison is paired, as evaluation
harnesses compare two systems on one test set:

- ``mcnemar_exact``: McNemar's exact test on discordant documents (exact-match workloads: a
  document is right or wrong). Of the n = b + c documents where exactly one side is right
  (b: right in full, wrong when exiting; c: the reverse), b ~ Binomial(n, 1/2) if both sides are
  equally accurate; two-sided p = min(1, 2 P(X <= min(b, c))).
- ``paired_loss``: a paired bootstrap over documents of the relative accuracy loss
  (F - E) / F, F and E the full and exited right counts (answer documents, or scored tokens
  summed per document for token accuracy), with percentile interval at level ``ci``.

The rule used by `eeutils.exits.max_skip_under_budget`: the budget is **met with confidence ci**
iff the upper end of that two-sided interval is <= the budget (a one-sided (1 + ci) / 2 bound);
the point estimate alone only says the budget is met *on this sample*. For token accuracy the
documents are the resampled clusters (tokens of one document are not independent), and McNemar's
p is not reported (NaN).
"""
from __future__ import annotations

import math

import numpy as np

from ..core.checks import check_int_array, check_integer, check_real
from ..lens.result import Readout
from .bootstrap import check_boot, draw_counts, percentile_interval
from .oracle import scored_units
from .similarity import check_readout

__all__ = ["mcnemar_exact", "doc_correctness", "paired_loss", "PAIRED_INTERVAL_KIND"]

PAIRED_INTERVAL_KIND = "paired document bootstrap (percentile)"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c (1.0 when b + c = 0)."""
    hint = " (a non-negative integer count of discordant pairs)"
    b, c = (check_integer(name, v, 0, hint=hint) for name, v in (("b", b), ("c", c)))
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))


def doc_correctness(readout: Readout, exit_layers, reference: str = "target"):
    """Per-document right counts: (full [d], exited [d], kind), documents in sorted doc-id order.

    exact_match: 0/1 per answer document; token_accuracy: right scored tokens per document (documents
    without a scored token are left out); agreement: exited top-1 == final top-1 per skip token.
    """
    unit, label, kind = scored_units(readout, reference)
    top1 = np.asarray(readout.stats["top1"])
    e = np.asarray(exit_layers)
    rows = np.arange(readout.n_tokens)
    scored = unit >= 0
    doc = np.asarray(readout.doc)[scored]
    full_ok = (top1[scored, -1] == label[scored])
    exit_ok = (top1[rows, e][scored] == label[scored])
    docs, inv = np.unique(doc, return_inverse=True)
    inv = inv.reshape(-1)
    if kind == "exact_match":
        full = np.bincount(inv, weights=(~full_ok).astype(np.float64), minlength=len(docs)) == 0
        exited = np.bincount(inv, weights=(~exit_ok).astype(np.float64), minlength=len(docs)) == 0
        return full.astype(np.float64), exited.astype(np.float64), kind
    full = np.bincount(inv, weights=full_ok.astype(np.float64), minlength=len(docs))
    exited = np.bincount(inv, weights=exit_ok.astype(np.float64), minlength=len(docs))
    return full, exited, kind


def paired_loss(readout: Readout, exit_layers, budget: float, ci: float = 0.95, n_boot: int = 1000, seed: int = 0,
                reference: str = "target") -> dict:
    """Relative accuracy loss of `exit_layers` vs the full model, its paired document-bootstrap interval,
    McNemar's exact p (exact match only; NaN otherwise, as are n_worse / n_better) and whether
    `budget` is met (point) and met with confidence ci.

    Returns: loss, loss_lo, loss_hi, ci, n_boot, boot_seed, interval_kind, mcnemar_p, n_worse (docs
    right in full, wrong exited; exact match) / n_better (the reverse), n_paired_docs, accuracy_kind,
    budget_met (loss <= budget), budget_met_ci (loss_hi <= budget).
    """
    check_boot(n_boot, ci, seed)
    check_readout(readout, "test")
    check_real("budget", budget, 0, 1, hint=" (a relative accuracy loss, e.g. 0.05)")
    exit_layers = check_int_array("exit_layers", exit_layers, 0, readout.n_layers)
    if exit_layers.shape != (readout.n_tokens,):
        raise ValueError(f"exit_layers must have one entry per token, shape ({readout.n_tokens},), got "
                         f"{exit_layers.shape}")
    full, exited, kind = doc_correctness(readout, exit_layers, reference)
    F, E = float(full.sum()), float(exited.sum())
    loss = (F - E) / F if F > 0 else float("nan")
    out = dict(loss=loss, loss_lo=float("nan"), loss_hi=float("nan"), ci=float(ci), n_boot=int(n_boot),
               boot_seed=int(seed), interval_kind=PAIRED_INTERVAL_KIND, mcnemar_p=float("nan"),
               n_worse=float("nan"), n_better=float("nan"), n_paired_docs=int(len(full)), accuracy_kind=kind)
    if kind == "exact_match":
        b = int(((full == 1) & (exited == 0)).sum())
        c = int(((full == 0) & (exited == 1)).sum())
        out.update(mcnemar_p=mcnemar_exact(b, c), n_worse=b, n_better=c)
    if len(full) and F > 0:
        counts = draw_counts(seed, len(full), int(n_boot))
        Fb, Eb = counts @ full, counts @ exited
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = np.where(Fb > 0, (Fb - Eb) / Fb, np.nan)
        lo, hi = percentile_interval(reps, float(ci))
        out.update(loss_lo=float(lo), loss_hi=float(hi))
    tol = 1e-12
    out["budget_met"] = bool(np.isfinite(loss) and loss <= budget + tol)
    out["budget_met_ci"] = bool(np.isfinite(out["loss_hi"]) and out["loss_hi"] <= budget + tol)
    return out
