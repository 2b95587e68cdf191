"""The analysis protocol (data/protocol.yaml): for each claim of the findings table, the comparison, the
primary metric, the interval, the smallest effect of interest and the secondary variants.

Loaded and validated here, read by `eeutils.analysis.verdicts`; notebooks never restate it. Changes to the
file are commits logged in docs/PROTOCOL.md.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from ..core.resources import data_path
from ..core.spec import parse_model_spec
from .eas import AGGREGATES
from .similarity import SIMILARITY_KINDS

__all__ = ["CLAIM_KINDS", "INTERVAL_KINDS", "LENSES", "Claim", "Protocol", "ProtocolError", "load_protocol"]

VALUES = ("normalised", "eas")
INTERVAL_KINDS = {
    "doc-bootstrap+seed-se": "percentile document bootstrap of the seed-averaged effect, each side widened in "
                             "quadrature by z x the between-seed standard error",
    "doc-bootstrap+seed-t": "percentile document bootstrap of the seed-averaged effect, each side widened in "
                            "quadrature by Student's t (Welch-Satterthwaite degrees of freedom) x the between-seed "
                            "standard error (protocol version 2)",
    "doc-bootstrap": "percentile document bootstrap only (one model per side and no twin to borrow from)",
    "heldout-item-bootstrap": "percentile bootstrap over the items of the held-out half, each item's (skip, "
                              "correctness) pair resampled together, at a threshold fixed on the other half",
    "oracle-item-bootstrap": "percentile bootstrap over the items of the held-out half with the budget oracle "
                             "re-solved on every replicate (an oracle has no threshold: it is defined on the "
                             "items it sees)",
}
LENSES = ("logit", "tuned")
CLAIM_KINDS = ("difference", "matched_loss", "trend", "exits")
_DEFAULT_KEYS = {"similarity", "value", "alpha", "aggregate", "include_embedding", "index_base", "workload", "n_docs",
                 "max_tokens", "ci", "n_boot", "bootstrap_seed", "interval", "min_effect", "variants", "max_loss_gap",
                 "min_seeds", "lens", "secondary_lenses"}
_CLAIM_KEYS = {"notebook", "claim", "paper_direction", "comparison", "kind", "a", "b", "runs", "segment", "x",
               "other_choices_shown", "workloads", "borrow_seed_spread", "match", "budget", "budget_test", "reference",
               "headline", "min_effect", "budget_alpha", "split"}


class ProtocolError(ValueError):
    """The protocol file is malformed (the message says which key and why)."""


@dataclass(frozen=True)
class Claim:
    """One claim of the protocol (see data/protocol.yaml for the meaning of each key)."""

    key: str
    notebook: str
    claim: str
    kind: str
    paper_direction: str = ""
    comparison: str = ""
    a: tuple = ()
    b: tuple = ()
    runs: tuple = ()
    workloads: tuple = ()
    segment: dict = field(default_factory=dict)
    match: str | None = None
    borrow_seed_spread: dict = field(default_factory=dict)
    headline: bool | str = False  # the summary view's comparison for its paper claim (a workload name: that row)
    extra: dict = field(default_factory=dict)

    def is_headline(self, workload: str | None = None) -> bool:
        """Whether this comparison (on `workload`, for a claim with several) is its paper claim's headline."""
        if isinstance(self.headline, str):
            return workload == self.headline
        return bool(self.headline)


@dataclass(frozen=True)
class Protocol:
    defaults: dict
    claims: dict
    version: int
    path: Path

    def claim(self, key: str) -> Claim:
        if key not in self.claims:
            raise KeyError(f"no claim {key!r} in the protocol; have {sorted(self.claims)}")
        return self.claims[key]

    def for_notebook(self, notebook: str) -> list[Claim]:
        return [c for c in self.claims.values() if c.notebook == str(notebook)[:2]]

    @property
    def primary(self) -> dict:
        """The primary metric: similarity, value ('normalised' or 'eas') and alpha."""
        return {k: self.defaults[k] for k in ("similarity", "value", "alpha")}

    @property
    def lenses(self) -> list[str]:
        """The primary lens, then the declared secondary ones."""
        return [self.defaults["lens"], *(self.defaults["secondary_lenses"] or [])]

    @property
    def eas_options(self) -> dict:
        """EAS choices held fixed across variants (aggregate, include_embedding, index_base)."""
        return {k: self.defaults[k] for k in ("aggregate", "include_embedding", "index_base")}

    def variants(self) -> list[dict]:
        """Every metric variant (the primary first), each {similarity, value, alpha}."""
        v = self.defaults["variants"]
        grid = [{"similarity": s, "value": val, "alpha": a} for s, val, a in
                itertools.product(v["similarity"], v["value"], v["alpha"])]
        prim = self.primary
        return [prim] + [g for g in grid if g != prim]


def _fail(where: str, msg: str):
    raise ProtocolError(f"protocol {where}: {msg}")


def _check_defaults(d: dict) -> dict:
    if not isinstance(d, dict):
        _fail("defaults", "must be a mapping")
    missing, unknown = _DEFAULT_KEYS - set(d), set(d) - _DEFAULT_KEYS
    if missing or unknown:
        _fail("defaults", f"missing {sorted(missing)}, unknown {sorted(unknown)}")
    if d["similarity"] not in SIMILARITY_KINDS:
        _fail("defaults.similarity", f"{d['similarity']!r} is not one of {sorted(SIMILARITY_KINDS)}")
    if d["value"] not in VALUES:
        _fail("defaults.value", f"must be one of {VALUES}")
    if d["aggregate"] not in AGGREGATES:
        _fail("defaults.aggregate", f"must be one of {AGGREGATES}")
    if d["interval"] not in INTERVAL_KINDS:
        _fail("defaults.interval", f"must be one of {sorted(INTERVAL_KINDS)}")
    for k, lo, hi in (("alpha", 0, 1), ("ci", 0, 1), ("min_effect", 0, 1), ("max_loss_gap", 0, 10)):
        if not isinstance(d[k], (int, float)) or isinstance(d[k], bool) or not (lo <= d[k] <= hi):
            _fail(f"defaults.{k}", f"must be a number in [{lo}, {hi}], got {d[k]!r}")
    if not isinstance(d["min_seeds"], int) or isinstance(d["min_seeds"], bool) or d["min_seeds"] < 1:
        _fail("defaults.min_seeds", f"must be a positive integer, got {d['min_seeds']!r}")
    lenses = [d["lens"], *(d["secondary_lenses"] or [])]
    if any(x not in LENSES for x in lenses) or len(set(lenses)) != len(lenses):
        _fail("defaults.lens", f"lens and secondary_lenses must be distinct names from {LENSES}, got {lenses}")
    if not (0 < d["ci"] < 1):
        _fail("defaults.ci", "must be strictly between 0 and 1")
    for k in ("n_boot", "n_docs", "max_tokens"):
        if not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < 1:
            _fail(f"defaults.{k}", f"must be a positive integer, got {d[k]!r}")
    v = d["variants"]
    if not isinstance(v, dict) or set(v) != {"similarity", "value", "alpha"}:
        _fail("defaults.variants", "must list similarity, value and alpha")
    if set(v["similarity"]) - set(SIMILARITY_KINDS) or set(v["value"]) - set(VALUES) or \
            any(not (0 <= a <= 1) for a in v["alpha"]):
        _fail("defaults.variants", "holds an unknown similarity/value or an alpha outside [0, 1]")
    if d["similarity"] not in v["similarity"] or d["value"] not in v["value"] or d["alpha"] not in v["alpha"]:
        _fail("defaults.variants", "must contain the primary similarity, value and alpha")
    return d


def _specs(where: str, specs) -> tuple:
    if specs is None:
        return ()
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
        _fail(where, "must be a list of 'model[@revision]' strings")
    for s in specs:
        parse_model_spec(s)
    return tuple(specs)


def _check_exits(where: str, c: dict) -> None:
    """An exits claim: budget, budget_alpha in (0, 1); min_effect in [0, 1) (skip-ratio units);
    split {seed, calibration}."""
    for k, lo_open in (("budget", True), ("budget_alpha", True), ("min_effect", False)):
        v = c.get(k)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (0 < v < 1 if lo_open else 0 <= v < 1)
        if not ok:
            _fail(f"{where}.{k}", f"must be a number in {'(' if lo_open else '['}0, 1), got {v!r}")
    s = c.get("split")
    ok = isinstance(s, dict) and set(s) == {"seed", "calibration"}
    ok = ok and isinstance(s["seed"], int) and not isinstance(s["seed"], bool) and s["seed"] >= 0
    ok = ok and isinstance(s["calibration"], (int, float)) and 0 < s["calibration"] < 1
    if not ok:
        _fail(f"{where}.split", f"must be {{seed: a non-negative integer, calibration: a share in (0, 1)}}, got {s!r}")


def _check_claim(key: str, c: dict) -> Claim:
    where = f"claims.{key}"
    if not isinstance(c, dict):
        _fail(where, "must be a mapping")
    unknown = set(c) - _CLAIM_KEYS
    if unknown:
        _fail(where, f"unknown key(s) {sorted(unknown)}")
    for k in ("notebook", "claim"):
        if not c.get(k):
            _fail(where, f"needs {k!r}")
    kind = c.get("kind", "difference")
    if kind not in CLAIM_KINDS:
        _fail(f"{where}.kind", f"must be one of {CLAIM_KINDS}")
    a, b, runs = _specs(f"{where}.a", c.get("a")), _specs(f"{where}.b", c.get("b")), _specs(f"{where}.runs", c.get("runs"))
    if kind in ("difference", "matched_loss") and not (a and b):
        _fail(where, "a comparison needs both sides a and b")
    if kind == "trend" and (len(runs) < 1 or not isinstance(c.get("segment"), dict)):
        _fail(where, "a trend needs runs and a segment")
    if kind == "matched_loss" and c.get("match") not in ("a", "b"):
        _fail(f"{where}.match", "must be 'a' or 'b' (the side whose revision is chosen)")
    if kind == "exits":
        _check_exits(where, c)
    borrow = c.get("borrow_seed_spread") or {}
    for side_model, pair in borrow.items():
        if side_model not in a + b or not (isinstance(pair, list) and len(pair) == 2):
            _fail(f"{where}.borrow_seed_spread", f"{side_model!r} must be a side member mapped to a twin pair")
    known = {"notebook", "claim", "paper_direction", "comparison", "kind", "a", "b", "runs", "workloads",
             "segment", "match", "borrow_seed_spread", "headline"}
    return Claim(key=key, notebook=str(c["notebook"]), claim=c["claim"], kind=kind,
                 paper_direction=c.get("paper_direction", ""), comparison=c.get("comparison", ""), a=a, b=b,
                 runs=runs, workloads=tuple(c.get("workloads") or ()), segment=dict(c.get("segment") or {}),
                 match=c.get("match"), borrow_seed_spread={k: tuple(v) for k, v in borrow.items()},
                 headline=c.get("headline", False),
                 extra={k: v for k, v in c.items() if k not in known})


def parse_protocol(raw: dict, path: Path | str = "<memory>") -> Protocol:
    """Validate a protocol mapping (as read from YAML); raises ProtocolError naming the bad key."""
    if not isinstance(raw, dict) or set(raw) != {"version", "defaults", "claims"}:
        _fail("file", "must hold exactly: version, defaults, claims")
    defaults = _check_defaults(dict(raw["defaults"]))
    if not isinstance(raw["claims"], dict) or not raw["claims"]:
        _fail("claims", "must be a non-empty mapping")
    claims = {k: _check_claim(k, v) for k, v in raw["claims"].items()}
    return Protocol(defaults=defaults, claims=claims, version=int(raw["version"]), path=Path(path))


@lru_cache(maxsize=4)
def _load(path: str) -> Protocol:
    return parse_protocol(yaml.safe_load(Path(path).read_text()), path)


def load_protocol(path=None) -> Protocol:
    """The protocol (default: the package's data/protocol.yaml), validated."""
    return _load(str(Path(path) if path is not None else data_path("protocol.yaml")))
