"""Training dynamics as a curve: EAS at every checkpoint of several seeds, and the trend test of the protocol.

effect = -(OLS slope of the seed-averaged score against log2(step)) over the protocol's segment: the fall of
suitability per doubling of training (positive = the paper's direction, "falls as training proceeds"). Its
interval is the "doc-bootstrap+seed-t" construction of `verdicts.compare` applied to the slope; the noise
floor is the largest difference between the seeds' own slopes. Kendall's tau of the seed-averaged curve with
an exact/permutation p-value is reported beside it.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from ..lens.result import Readout
from .bootstrap import check_boot, percentile_interval, eas_replicates
from .eas import eas_ceiling
from .verdicts import NO_TWIN, Effect, Rule, combine_interval, few_seeds, side_spread, verdict

__all__ = ["checkpoint_scores", "kendall_tau", "permutation_p", "slope", "trend_effect"]


def slope(x, y) -> np.ndarray:
    """OLS slope of y on x; y may be [n] or [..., n] (one slope per leading row)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    xc = x - x.mean()
    return (y - y.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)


def kendall_tau(x, y) -> float:
    """Kendall's tau-a: (concordant - discordant) / n_pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, 1)
    return float(np.sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])) / len(i))


def permutation_p(x, y, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of Kendall's tau under random order of y: exact for n <= 8, else n_perm permutations."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    i, j = np.triu_indices(n, 1)
    sx = np.sign(x[i] - x[j])
    t0 = abs(kendall_tau(x, y))
    if n <= 8:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((n_perm, n)), axis=1)
    yp = y[perms]
    taus = np.abs((np.sign(yp[:, i] - yp[:, j]) * sx).sum(axis=1) / len(i))
    hits = int(np.sum(taus >= t0 - 1e-12))
    return float(hits / len(perms)) if n <= 8 else float((hits + 1) / (n_perm + 1))


def checkpoint_scores(curves: dict[str, dict[int, Readout]], *, similarity: str, value: str = "normalised",
                      alpha: float = 0.5, n_boot: int = 1000, ci: float = 0.95, seed: int = 0,
                      eas_options: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Score (with a document-bootstrap interval) of every run x checkpoint, and the replicates.

    curves: {run: {step: Readout}}; every readout must cover the same documents (one draw is shared).
    Returns (frame with run, step, score, lo, hi; {(run, step): replicates [n_boot]})."""
    check_boot(n_boot, ci)
    readouts = [r for steps in curves.values() for r in steps.values()]
    if not readouts:
        raise ValueError("no checkpoints to score")
    docs = np.unique(readouts[0].doc)
    if any(not np.array_equal(np.unique(r.doc), docs) for r in readouts):
        raise ValueError("every checkpoint must be read on the same documents")
    draws = np.random.default_rng(seed).integers(0, len(docs), size=(n_boot, len(docs)))
    kw = dict(similarity=similarity, alpha=alpha, **(eas_options or {}))
    rows, reps = [], {}
    for run, steps in curves.items():
        for step, r in sorted(steps.items()):
            rep = eas_replicates(r, draws, value=value, **kw)
            point = eas_replicates(r, np.arange(len(docs))[None, :], value=value, **kw)[0]
            lo, hi = percentile_interval(rep, ci)
            reps[(run, step)] = rep
            rows.append({"run": run, "step": int(step), "score": float(point), "lo": float(lo), "hi": float(hi)})
    return pd.DataFrame(rows), reps


def trend_effect(curves: dict[str, dict[int, Readout]], *, similarity: str, value: str = "normalised",
                 alpha: float = 0.5, rule: Rule | None = None, min_step: int = 1) -> Effect:
    """The protocol's trend test over the checkpoints with step >= min_step that every run has.

    Needs at least 3 such checkpoints; with one run the row is inconclusive ("no seed twin"); with fewer runs
    than rule.min_seeds the verdict is withheld. The seed part uses the runs' own slopes (df = runs - 1)."""
    rule = rule or Rule()
    if int(min_step) < 1:
        raise ValueError(f"min_step must be >= 1: the trend is fitted against log2(step), got {min_step!r}")
    frame, reps = checkpoint_scores(curves, similarity=similarity, value=value, alpha=alpha, n_boot=rule.n_boot,
                                    ci=rule.ci, seed=rule.seed, eas_options=rule.eas_options)
    runs = list(curves)
    common = sorted(set.intersection(*[{s for s in curves[r] if s >= min_step} for r in runs]))
    base = {"similarity": similarity, "value": value, "alpha": float(alpha), "ci": float(rule.ci),
            "n_boot": int(rule.n_boot), "boot_seed": int(rule.seed)}
    if len(common) < 3:
        nan = float("nan")
        return Effect(effect=nan, lo=nan, hi=nan, verdict="inconclusive", interval_kind="doc-bootstrap",
                      boot_lo=nan, boot_hi=nan, seed_se=nan, noise_floor=nan, floor_pairs=[], smallest_effect=nan,
                      scores={}, reason=f"fewer than 3 checkpoints with step >= {min_step} common to {runs}", **base)
    x = np.log2(np.asarray(common, dtype=float))
    pts = frame.set_index(["run", "step"]).score
    per_run = {r: float(-slope(x, [pts[(r, s)] for s in common])) for r in runs}
    mean_curve = np.mean([[pts[(r, s)] for s in common] for r in runs], axis=0)
    effect = float(-slope(x, mean_curve))
    boot = -slope(x, np.mean([np.stack([reps[(r, s)] for s in common], axis=1) for r in runs], axis=0))
    b_lo, b_hi = percentile_interval(boot, rule.ci)
    var, floor = side_spread(list(per_run.values()))
    kind, reason, df = rule.interval, "", math.inf
    if var is None:
        var, floor, kind, reason = 0.0, float("nan"), "doc-bootstrap", NO_TWIN
    else:
        df = rule.df([(var, len(runs) - 1)])
    lo, hi = combine_interval(effect, boot, var, rule.ci, df)
    smallest = max(floor, rule.min_effect * _scale(curves, value, alpha, rule)) if np.isfinite(floor) else float("nan")
    call = verdict(lo, hi, effect, smallest)
    withheld = few_seeds({"runs": len(runs)}, rule.min_seeds) if kind != "doc-bootstrap" else ""
    if withheld:
        call, reason = "inconclusive", withheld
    tau = kendall_tau(common, mean_curve)
    return Effect(effect=effect, lo=lo, hi=hi, verdict=call, interval_kind=kind,
                  boot_lo=float(b_lo), boot_hi=float(b_hi), seed_se=math.sqrt(var), noise_floor=float(floor),
                  floor_pairs=[list(p) for p in itertools.combinations(runs, 2)], smallest_effect=float(smallest),
                  scores={f"-slope {r}": v for r, v in per_run.items()}, reason=reason,
                  extra={"steps": [int(s) for s in common], "kendall_tau": tau, "seed_df": df,
                         "kendall_p": permutation_p(common, mean_curve, seed=rule.seed),
                         "mean_curve": [float(v) for v in mean_curve]}, **base)


def _scale(curves, value: str, alpha: float, rule: Rule) -> float:
    """min_effect's unit: 1 for EAS / ceiling, the mean ceiling for raw EAS."""
    if value == "normalised":
        return 1.0
    opts = {k: v for k, v in rule.eas_options.items() if k in ("include_embedding", "index_base")}
    return float(np.mean([eas_ceiling(r.n_layers, alpha, **opts) for steps in curves.values() for r in steps.values()]))
