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
from .bootstrap import check_boot, percentile_interval, eas_replicates
from .eas import eas

__all__ = [
    "NO_TWIN",
    "VERDICTS",
    "Effect",
    "Rule",
    "combine_interval",
    "compare",
    "few_seeds",
    "normal_z",
    "robustness",
    "seed_quantile",
    "side_spread",
    "verdict",
    "welch_df",
]

VERDICTS = ("agree", "disagree", "inconclusive")
NO_TWIN = "no seed twin"


def normal_z(ci: float) -> float:
    """Two-sided normal quantile of a CI level (1.96 for 0.95)."""
    return NormalDist().inv_cdf(1.0 - (1.0 - float(ci)) / 2.0)


def verdict(lo: float, hi: float, effect: float, smallest_effect: float) -> str:
    """agree if lo > 0 and effect > smallest_effect, disagree if hi < 0 and -effect > smallest_effect, else
    inconclusive. A NaN smallest effect (no noise floor) or interval is inconclusive. There is no interval-sign-only
    mode: a verdict always needs a smallest effect of interest."""
    values = (lo, hi, effect, smallest_effect)
    if any(v is None for v in values):
        raise ValueError("verdict needs lo, hi, effect and smallest_effect (the noise floor or the protocol's "
                         "min_effect); for a descriptive row with no smallest effect, write no verdict")
    if not all(np.isfinite(v) for v in values):
        return "inconclusive"
    if lo > 0 and effect > smallest_effect:
        return "agree"
    if hi < 0 and -effect > smallest_effect:
        return "disagree"
    return "inconclusive"


def seed_quantile(ci: float, df: float = math.inf) -> float:
    """Two-sided quantile that scales the between-seed standard error: Student's t with `df` degrees of freedom
    (the protocol's "seed-t" intervals), the normal z when df is infinite (no seed variance, or "seed-se")."""
    if not math.isfinite(df):
        return normal_z(ci)
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df!r}")
    from scipy.stats import t as student_t

    return float(student_t.ppf(1.0 - (1.0 - float(ci)) / 2.0, df))


def welch_df(parts) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance components [(var of a mean, its df), ...]:
    (sum v)^2 / sum(v^2 / df). Infinite when every component is zero (nothing to be unsure about)."""
    parts = [(float(v), float(d)) for v, d in parts]
    total = sum(v for v, _ in parts)
    if total <= 0:
        return math.inf
    return total ** 2 / sum(v ** 2 / d for v, d in parts if v > 0)


def combine_interval(effect: float, boot: np.ndarray, seed_var: float, ci: float,
                     df: float = math.inf) -> tuple[float, float]:
    """[effect - sqrt(d_lo^2 + (q se)^2), effect + sqrt(d_hi^2 + (q se)^2)]: the percentile bootstrap half-widths
    d_lo = effect - q_lo, d_hi = q_hi - effect (each at least 0) combined in quadrature with q x the between-seed
    standard error se = sqrt(seed_var), q = `seed_quantile(ci, df)` (t with df, or z). seed_var = 0 gives the
    bootstrap interval; no bootstrap spread gives effect +/- q se."""
    q_lo, q_hi = percentile_interval(np.asarray(boot, dtype=float), ci)
    s = seed_quantile(ci, df) * math.sqrt(max(float(seed_var), 0.0)) if seed_var > 0 else 0.0
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


@dataclass(frozen=True)
class Rule:
    """The protocol's interval and verdict settings (data/protocol.yaml defaults), in one object.

    interval: "doc-bootstrap+seed-t" (version 2) or "doc-bootstrap+seed-se" (version 1, normal z).
    min_seeds: agree/disagree needs this many trained seeds on every side (a borrowed pair counts as one).
    eas_options: the EAS choices held fixed across variants (aggregate, include_embedding, index_base)."""

    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    min_effect: float = 0.01
    min_seeds: int = 1
    interval: str = "doc-bootstrap+seed-t"
    eas_options: dict = field(default_factory=dict)

    def __post_init__(self):
        check_boot(self.n_boot, self.ci)
        if self.interval not in ("doc-bootstrap+seed-t", "doc-bootstrap+seed-se"):
            raise ValueError(f"interval must be 'doc-bootstrap+seed-t' or 'doc-bootstrap+seed-se', got {self.interval!r}")
        if not isinstance(self.min_seeds, int) or self.min_seeds < 1:
            raise ValueError(f"min_seeds must be a positive integer, got {self.min_seeds!r}")

    @classmethod
    def from_protocol(cls, proto, n_boot: int | None = None) -> "Rule":
        d = proto.defaults
        return cls(n_boot=int(n_boot or d["n_boot"]), ci=d["ci"], seed=d["bootstrap_seed"], min_effect=d["min_effect"],
                   min_seeds=d["min_seeds"], interval=d["interval"], eas_options=dict(proto.eas_options))

    def df(self, parts) -> float:
        """Degrees of freedom of the seed part: Welch-Satterthwaite for seed-t, infinite (z) for seed-se."""
        return welch_df(parts) if self.interval == "doc-bootstrap+seed-t" else math.inf


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


def _seed_part(a, b, point, borrow, rule: Rule):
    """(seed variance, df, floor, floor pairs, interval kind, reason) of a two-sided comparison."""
    parts, floors, pairs = [], [], []
    for side in (a, b):
        pair = borrow.get(side[0]) if len(side) == 1 else None
        var, floor = side_spread([point[m] for m in side], tuple(point[k] for k in pair) if pair else None)
        if var is None:
            return 0.0, math.inf, float("nan"), [], "doc-bootstrap", NO_TWIN
        parts.append((var, len(side) - 1 if len(side) >= 2 else 1))
        floors.append(floor)
        pairs += [list(p) for p in itertools.combinations(side, 2)] if len(side) >= 2 else [list(pair)]
    reason = ""
    if any(len(side) == 1 for side in (a, b)):
        reason = "seed spread borrowed: " + "; ".join(f"{k} from {' vs '.join(v)}" for k, v in borrow.items()
                                                      if k in a + b)
    return sum(v for v, _ in parts), rule.df(parts), max(floors), pairs, rule.interval, reason


def few_seeds(sizes: dict, min_seeds: int) -> str:
    """The reason a verdict is withheld for too few seeds ("" when every side has min_seeds)."""
    if all(n >= min_seeds for n in sizes.values()):
        return ""
    return f"fewer than {min_seeds} seeds (" + ", ".join(f"{k}: {n}" for k, n in sizes.items()) + ")"


def compare(readouts: dict[str, Readout], a, b, *, similarity: str, value: str = "normalised", alpha: float = 0.5,
            rule: Rule | None = None, borrow: dict | None = None) -> Effect:
    """Seed-averaged effect mean(score(A)) - mean(score(B)) with its interval (kind rule.interval) and verdict.

    a, b: keys of `readouts`, one per training seed of each side's recipe. borrow: {member: (twin_x, twin_y)}
    for a side with one member, naming two readouts of another seed pair whose difference stands in for the
    missing twin. One document draw per replicate is shared by every model (they must read the same documents).
    min_effect is in units of EAS / ceiling (multiplied by the mean ceiling for value="eas").
    """
    rule = rule or Rule()
    if value not in ("normalised", "eas"):
        raise ValueError(f"value must be 'normalised' or 'eas', got {value!r}")
    a, b, borrow = list(a), list(b), dict(borrow or {})
    if not a or not b:
        raise ValueError("both sides need at least one model")
    members = list(dict.fromkeys(a + b + [k for pair in borrow.values() for k in pair]))
    missing = [m for m in members if m not in readouts]
    if missing:
        raise KeyError(f"no readout for {missing}; have {sorted(readouts)}")
    n_docs = _same_documents(readouts, members)
    kw = dict(similarity=similarity, alpha=alpha, **rule.eas_options)
    point, ceilings = {}, {}
    for m in members:
        point[m], ceilings[m] = _score(readouts[m], value, **kw)
    draws = np.random.default_rng(rule.seed).integers(0, n_docs, size=(rule.n_boot, n_docs))
    reps = {m: eas_replicates(readouts[m], draws, value=value, **kw) for m in a + b}
    effect = float(np.mean([point[m] for m in a]) - np.mean([point[m] for m in b]))
    boot = np.mean([reps[m] for m in a], axis=0) - np.mean([reps[m] for m in b], axis=0)
    b_lo, b_hi = percentile_interval(boot, rule.ci)
    seed_var, df, floor, pairs, kind, reason = _seed_part(a, b, point, borrow, rule)
    lo, hi = combine_interval(effect, boot, seed_var, rule.ci, df)
    scale = float(np.mean([ceilings[m] for m in a + b])) if value == "eas" else 1.0
    smallest = max(floor, rule.min_effect * scale) if np.isfinite(floor) else float("nan")
    call = verdict(lo, hi, effect, smallest)
    withheld = few_seeds({"A": len(a), "B": len(b)}, rule.min_seeds) if kind != "doc-bootstrap" else ""
    if withheld:
        call, reason = "inconclusive", "; ".join(x for x in (withheld, reason) if x)
    return Effect(effect=effect, lo=lo, hi=hi, verdict=call, similarity=similarity,
                  value=value, alpha=float(alpha), interval_kind=kind, ci=float(rule.ci), n_boot=int(rule.n_boot),
                  boot_seed=int(rule.seed), boot_lo=float(b_lo), boot_hi=float(b_hi), seed_se=math.sqrt(seed_var),
                  noise_floor=float(floor), floor_pairs=pairs, smallest_effect=float(smallest),
                  scores={m: float(point[m]) for m in members}, reason=reason, extra={"seed_df": df})


def robustness(primary: Effect, others: list[Effect]) -> dict:
    """How many secondary variants give the primary's verdict: {same, n, counts: {verdict: n}, label 'k/n'}."""
    counts = {v: sum(o.verdict == v for o in others) for v in VERDICTS}
    same = counts[primary.verdict]
    return {"same": same, "n": len(others), "counts": counts, "label": f"{same}/{len(others)}"}
