"""Verdicts that survive seed noise: seed-averaged effects between two groups of models, intervals combining the
document bootstrap with the between-seed spread, noise floors from seed twins, and the robustness count.

The rules are those of data/protocol.yaml (docs/PROTOCOL.md): effect = mean score of side A - mean score of
side B (each side lists the training seeds of one recipe); interval kind "doc-bootstrap+seed-se"; agree or
disagree only when the interval excludes zero AND |effect| exceeds max(noise floor, min_effect).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

from ..lens.result import Readout
from .bootstrap import _check_boot, _quantiles, eas_replicates
from .eas import eas

__all__ = [
    "NO_TWIN",
    "VERDICTS",
    "Effect",
    "combine_interval",
    "compare",
    "normal_z",
    "robustness",
    "side_spread",
    "verdict",
]

VERDICTS = ("agree", "disagree", "inconclusive")
NO_TWIN = "no seed twin"


def normal_z(ci: float) -> float:
    """Two-sided normal quantile of a CI level (1.96 for 0.95)."""
    return NormalDist().inv_cdf(1.0 - (1.0 - float(ci)) / 2.0)


def verdict(lo: float, hi: float, effect: float | None = None, smallest_effect: float | None = None) -> str:
    """agree if lo > 0 (and effect > smallest_effect when one is given), disagree if hi < 0 (and
    -effect > smallest_effect), else inconclusive. A NaN smallest effect (no noise floor) is inconclusive."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if smallest_effect is not None:
        if effect is None or not (np.isfinite(effect) and np.isfinite(smallest_effect)):
            return "inconclusive"
        if lo > 0 and effect > smallest_effect:
            return "agree"
        if hi < 0 and -effect > smallest_effect:
            return "disagree"
        return "inconclusive"
    if lo > 0:
        return "agree"
    if hi < 0:
        return "disagree"
    return "inconclusive"


def combine_interval(effect: float, boot: np.ndarray, seed_var: float, ci: float) -> tuple[float, float]:
    """[effect - sqrt(d_lo^2 + (z se)^2), effect + sqrt(d_hi^2 + (z se)^2)]: the percentile bootstrap half-widths
    d_lo = effect - q_lo, d_hi = q_hi - effect (each at least 0) combined in quadrature with z x the between-seed
    standard error se = sqrt(seed_var). seed_var = 0 gives the bootstrap interval; no bootstrap spread gives
    effect +/- z se."""
    q_lo, q_hi = _quantiles(np.asarray(boot, dtype=float), ci)
    s = normal_z(ci) * math.sqrt(max(float(seed_var), 0.0))
    return (float(effect - math.hypot(max(effect - q_lo, 0.0), s)),
            float(effect + math.hypot(max(q_hi - effect, 0.0), s)))


def side_spread(scores: list[float], borrowed: tuple[float, float] | None = None):
    """(variance of the side's mean over seeds, noise floor) for one side's seed scores.

    Two or more seeds: sample variance (ddof 1) / k, floor = the largest pairwise |difference|. One seed and
    a borrowed twin pair (x, y): variance (x - y)^2 / 2 (a single model's seed variance), floor |x - y|.
    Otherwise (None, None): no seed twin."""
    s = [float(v) for v in scores]
    if len(s) >= 2:
        return float(np.var(s, ddof=1)) / len(s), max(abs(x - y) for x, y in itertools.combinations(s, 2))
    if len(s) == 1 and borrowed is not None:
        x, y = map(float, borrowed)
        return (x - y) ** 2 / 2.0, abs(x - y)
    return None, None


@dataclass
class Effect:
    """One comparison under one metric variant (similarity, value, alpha)."""

    effect: float
    lo: float
    hi: float
    verdict: str
    similarity: str
    value: str
    alpha: float
    interval_kind: str
    ci: float
    n_boot: int
    boot_seed: int
    boot_lo: float
    boot_hi: float
    seed_se: float
    noise_floor: float
    floor_pairs: list
    smallest_effect: float
    scores: dict
    reason: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _same_documents(readouts: dict[str, Readout], members) -> int:
    docs = [np.unique(readouts[m].doc) for m in members]
    if any(len(d) != len(docs[0]) or not np.array_equal(d, docs[0]) for d in docs):
        raise ValueError("every model of a comparison must be read on the same documents (same workload, n_docs)")
    return len(docs[0])


def _score(r: Readout, value: str, **kw) -> tuple[float, float]:
    e = eas(r, **kw)
    return (e.normalised if value == "normalised" else e.value), e.ceiling


def compare(readouts: dict[str, Readout], a, b, *, similarity: str, value: str = "normalised", alpha: float = 0.5,
            n_boot: int = 1000, ci: float = 0.95, seed: int = 0, min_effect: float = 0.01,
            borrow: dict | None = None, eas_options: dict | None = None) -> Effect:
    """Seed-averaged effect mean(score(A)) - mean(score(B)) with a "doc-bootstrap+seed-se" interval and verdict.

    a, b: keys of `readouts`, one per training seed of each side's recipe. borrow: {member: (twin_x, twin_y)}
    for a side with one member, naming two readouts of another seed pair whose difference stands in for the
    missing twin. One document draw per replicate is shared by every model (they must read the same documents).
    min_effect is in units of EAS / ceiling (multiplied by the mean ceiling for value="eas").
    """
    _check_boot(n_boot, ci)
    if value not in ("normalised", "eas"):
        raise ValueError(f"value must be 'normalised' or 'eas', got {value!r}")
    a, b, borrow = list(a), list(b), dict(borrow or {})
    if not a or not b:
        raise ValueError("both sides need at least one model")
    borrowed_keys = [k for pair in borrow.values() for k in pair]
    members = list(dict.fromkeys(a + b + borrowed_keys))
    missing = [m for m in members if m not in readouts]
    if missing:
        raise KeyError(f"no readout for {missing}; have {sorted(readouts)}")
    n_docs = _same_documents(readouts, members)
    kw = dict(similarity=similarity, alpha=alpha, **(eas_options or {}))
    point, ceilings = {}, {}
    for m in members:
        point[m], ceilings[m] = _score(readouts[m], value, **kw)
    draws = np.random.default_rng(seed).integers(0, n_docs, size=(n_boot, n_docs))
    reps = {m: eas_replicates(readouts[m], draws, value=value, **kw) for m in a + b}
    effect = float(np.mean([point[m] for m in a]) - np.mean([point[m] for m in b]))
    boot = np.mean([reps[m] for m in a], axis=0) - np.mean([reps[m] for m in b], axis=0)
    b_lo, b_hi = _quantiles(boot, ci)

    spreads, pairs = [], []
    for side in (a, b):
        pair = borrow.get(side[0]) if len(side) == 1 else None
        var, floor = side_spread([point[m] for m in side], tuple(point[k] for k in pair) if pair else None)
        spreads.append((var, floor))
        pairs += [list(p) for p in itertools.combinations(side, 2)] if len(side) >= 2 else ([list(pair)] if pair else [])
    if any(v is None for v, _ in spreads):
        seed_var, floor, kind, reason = 0.0, float("nan"), "doc-bootstrap", NO_TWIN
    else:
        seed_var = sum(v for v, _ in spreads)
        floor, kind, reason = max(f for _, f in spreads), "doc-bootstrap+seed-se", ""
        if any(len(side) == 1 for side in (a, b)):
            reason = "seed spread borrowed: " + "; ".join(f"{k} from {' vs '.join(v)}" for k, v in borrow.items()
                                                          if k in a + b)
    lo, hi = combine_interval(effect, boot, seed_var, ci)
    scale = float(np.mean([ceilings[m] for m in a + b])) if value == "eas" else 1.0
    smallest = max(floor, min_effect * scale) if np.isfinite(floor) else float("nan")
    return Effect(effect=effect, lo=lo, hi=hi, verdict=verdict(lo, hi, effect, smallest), similarity=similarity,
                  value=value, alpha=float(alpha), interval_kind=kind, ci=float(ci), n_boot=int(n_boot),
                  boot_seed=int(seed), boot_lo=float(b_lo), boot_hi=float(b_hi), seed_se=math.sqrt(seed_var),
                  noise_floor=float(floor), floor_pairs=pairs, smallest_effect=float(smallest),
                  scores={m: float(point[m]) for m in members}, reason=reason)


def robustness(primary: Effect, others: list[Effect]) -> dict:
    """How many secondary variants give the primary's verdict: {same, n, counts: {verdict: n}, label 'k/n'}."""
    counts = {v: sum(o.verdict == v for o in others) for v in VERDICTS}
    same = counts[primary.verdict]
    return {"same": same, "n": len(others), "counts": counts, "label": f"{same}/{len(others)}"}
