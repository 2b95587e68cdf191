"""Notebook 12 ("What training for early exit buys"): the numbers behind its conclusions.

A recipe's effect on a score (EAS, saturation depth, budget skip, validation loss) is judged against the
seed-noise floor: the largest difference between seed twins of one recipe (same data, same schedule, only the
initialisation seed differs). An effect no larger than that floor is not attributed to the recipe, whatever a
document bootstrap says (the bootstrap holds the weights fixed). The protocol's verdict rules (noise floors
from seed twins) are being rewritten elsewhere; these functions keep the floor and the call explicit so the
record can be reconciled with them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..analysis.exits import max_skip_under_budget, tradeoff
from ..analysis.rules import REALISABLE
from ..core.zoo_store import load_card


def seed_noise_floor(scores: Mapping[str, Sequence[float]]) -> dict:
    """The seed-noise floor of a score from seed twins.

    scores: {recipe: [score of each seed]}; recipes with one seed are ignored. Returns {"floor": the largest
    within-recipe range (max - min) over recipes, "per_recipe": {recipe: range}, "n_recipes": recipes used}.
    """
    ranges = {}
    for name, vals in scores.items():
        v = np.asarray(list(vals), dtype=float)
        if not np.isfinite(v).all():
            raise ValueError(f"non-finite score for {name!r}: {list(vals)}")
        if len(v) >= 2:
            ranges[name] = float(v.max() - v.min())
    if not ranges:
        raise ValueError("a seed-noise floor needs at least one recipe with two or more seeds")
    return {"floor": max(ranges.values()), "per_recipe": ranges, "n_recipes": len(ranges)}


def recipe_effect(treated: Sequence[float], base: Sequence[float], floor: float,
                  boot_lo: float | None = None, boot_hi: float | None = None) -> dict:
    """Effect of a recipe on a score: mean(treated seeds) - mean(base seeds), against the seed-noise floor.

    call: "raises" / "lowers" when |effect| exceeds the floor and every treated-minus-base seed pair (and the
    bootstrap interval, when given) has the effect's sign; otherwise "within seed noise".
    snr: effect / floor (inf when the floor is 0 and the effect is not).
    """
    t, b = np.asarray(list(treated), float), np.asarray(list(base), float)
    if not len(t) or not len(b):
        raise ValueError("both sides need at least one seed")
    if not floor >= 0:
        raise ValueError(f"floor must be >= 0, got {floor!r}")
    effect = float(t.mean() - b.mean())
    pairs = (t[:, None] - b[None, :]).ravel()
    sign = np.sign(effect)
    consistent = bool(sign != 0 and np.all(np.sign(pairs) == sign))
    if boot_lo is not None and boot_hi is not None:
        consistent &= bool((boot_lo > 0) if sign > 0 else (boot_hi < 0))
    beyond = abs(effect) > floor
    call = ("raises" if effect > 0 else "lowers") if (beyond and consistent) else "within seed noise"
    snr = effect / floor if floor > 0 else (float("inf") * sign if effect else 0.0)
    return {"effect": effect, "floor": float(floor), "snr": float(snr), "pair_min": float(pairs.min()),
            "pair_max": float(pairs.max()), "beyond_floor": bool(beyond), "consistent": consistent, "call": call}


def card_losses(names: Sequence[str]) -> pd.DataFrame:
    """Validation loss at the last layer, per source, and training time, from each zoo model's card."""
    rows = []
    for n in names:
        c = load_card(n)
        row = {"model": n, "seed": c.get("seed"), "layerskip": bool(c.get("layerskip")), "val_loss": c["val_loss"],
               "train_min": c.get("train_seconds", float("nan")) / 60, "tokens_seen": c.get("tokens_seen")}
        row.update({f"val_loss_{k}": v for k, v in (c.get("val_loss_per_source") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def best_at_quality(frame: pd.DataFrame, quality: float, by: str = "model") -> pd.DataFrame:
    """Per `by` group, the fastest row (largest speed_ratio) whose agreement with full decoding is >= quality;
    a group with none keeps no row. Needs columns speed_ratio and agreement."""
    if not 0 <= quality <= 1:
        raise ValueError(f"quality must be in [0, 1], got {quality!r}")
    ok = frame[frame["agreement"] >= quality - 1e-12]
    if ok.empty:
        return ok.copy()
    idx = ok.groupby(by, sort=False)["speed_ratio"].idxmax()
    return ok.loc[idx.values].reset_index(drop=True)


def budget_skip(readout, budget: float = 0.05, metric: str = "accuracy", rules=None) -> dict:
    """Within a quality `budget`: the largest simulated skip ratio a realisable exit rule reaches (`skip_ratio`,
    `rule`) and, beside it, the budget oracle's (`oracle_skip_ratio`: the most any per-token exit decision could
    save within the budget, which no rule can beat). Oracles never count as the best rule."""
    frame = max_skip_under_budget(tradeoff(readout, rules, budget=budget), budget=budget, metric=metric)
    realisable = frame[frame["rule"].isin(REALISABLE)]
    best = realisable.sort_values("skip_ratio", ascending=False, kind="stable").iloc[0]
    oracle_kind = "budget_oracle" if metric == "accuracy" else "budget_oracle_agreement"
    oracle = frame[frame["rule"] == oracle_kind]
    return {"skip_ratio": float(best["skip_ratio"]), "rule": str(best["label"] or best["rule"]), "budget": budget,
            "metric": metric, "oracle_skip_ratio": float(oracle["skip_ratio"].max()) if len(oracle) else float("nan")}
