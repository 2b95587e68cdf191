"""The exit-rule table: every early-exit rule kind as one row, and `ExitRule` and `rule_fires` as lookups into
it (the parser of rule arguments is `eeutils.analysis.rule_parse`).

Conventions shared by the simulator (`eeutils.analysis.exits`) and the decoder (`eeutils.decoding`):

- Layers follow `eeutils.lens.result`: 0 = embeddings, l = output of block l, L = last block.
- An exit at layer l means blocks 1..l ran and the token is predicted from layer l's readout
  (top1 at l); it skips (L - l) / L of the blocks.
- Layer 0 never exits; every rule has a ``min_layer`` (default 1, must be >= 1): no exit before it.
- Layer L always exits: a token no rule stops earlier runs the full model.
- No rule reads layer 0's readout: the top-1 streak of "consecutive" counts changes from layer 1 on.
- A NaN statistic never fires a rule.

Adding a rule kind: one keyword `RuleKind` row (statistic read, comparison, bounds, threshold type, default
grid, realisable or oracle, label, widget range, default check, and the lists it belongs to: confidence rules,
default and cheap decoding rules), in the table below or by `register_rule_kind`. The simulator, the decoder
(realisable kinds), the trade-off grid, the explorer widget and every derived list (`REALISABLE`, `ORACLES`,
`CONFIDENCE_RULES`, `DECODE_DEFAULTS`, `CHEAP_CHECKS`, ...) pick it up.

Checks: how a decoder obtains a rule's statistics at a checked layer is a `CheckKind` row (`CHECK_KINDS`:
none, state, full, candidates) with its cost in weight multiply-adds; a rule uses its kind's default
check unless it asks for the candidate-set head (``candidates=K``). Which layers are checked is part of
the rule too (``min_layer``, ``every``, ``layers``): `rule_fires` never fires at an unchecked layer below
L, so the simulator and the decoder take the same decision on the same layers.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from ..core.checks import check_integer, check_real, is_real

__all__ = ["RuleKind", "RULE_KINDS", "CheckKind", "CHECK_KINDS", "RULE_OPTIONS", "EXIT_KINDS", "DEFAULT_THRESHOLDS",
           "REALISABLE", "ORACLES", "WIDGET_RULES", "ExitRule", "rule_fires", "subset_streak", "top1_streak",
           "update_streak", "CONFIDENCE_RULES", "DECODE_DEFAULTS", "CHEAP_CHECKS", "COMPARISONS", "register_rule_kind",
           "unregister_rule_kind"]


@dataclass(frozen=True)
class CheckKind:
    """How a decoder obtains a rule's statistics at one checked layer, and what that costs.

    macs(d, vocab, k): weight multiply-adds of one check of one token (d = model width, k = the candidate
    set size). supports: the statistics it can decide (None: any). verifies: a firing check is confirmed
    by the exact full head (which then doubles as the prediction).
    """

    name: str
    description: str
    macs: object
    supports: tuple[str, ...] | None = None
    verifies: bool = False


CHECK_KINDS: dict[str, CheckKind] = {c.name: c for c in (
    CheckKind("none", "no check: the exit layer is fixed (static)", lambda d, v, k: 0),
    CheckKind("state", "cosine of consecutive residual states on the device, no head (about 3d multiply-adds)",
              lambda d, v, k: 3 * d, ("hidden_cos_prev",)),
    CheckKind("full", "final norm + the full head (d x vocab) + softmax statistics at every checked layer",
              lambda d, v, k: d * v),
    CheckKind("candidates", "final norm + the head restricted to a carried candidate set of k tokens (k x d); "
                            "optimistic statistics (softmax over the set; entropy as -log of its max-prob); the "
                            "exact full head runs only when they fire, and confirms or refutes the exit",
              lambda d, v, k: k * d, ("max_prob", "margin", "entropy"), verifies=True),
)}


COMPARISONS = (">=", "<=", "static", "true", "equals_target", "solver")


@dataclass(frozen=True, kw_only=True)
class RuleKind:
    """One kind of exit rule: a keyword row of `RULE_KINDS` (`register_rule_kind`).

    reads: the per-layer values `rule_fires` needs (Readout statistics, or the derived "saturated",
    "top1_streak", "target"). comparison: ">=" / "<=" (statistic vs threshold), "static" (layer >= threshold),
    "true" (the statistic is a boolean), "equals_target" (top1 == target), "solver" (exits chosen over the
    whole readout by `eeutils.analysis.oracle`, the threshold being the loss budget). threshold: "int", "float" or
    None (no threshold). bounds: allowed threshold range (inclusive); hint: the error when a threshold is out of
    them; threshold_name: how errors name an "int" threshold (default "<kind> threshold"). grid: default
    trade-off thresholds ("layers": 1..L, "streaks": 1..L-1). realisable: a decoder can apply it while
    generating (oracles cannot; realisable=False is the "oracle" family). widget: (lo, hi, step, default) of
    the explorer's threshold slider, or None. check: the default `CHECK_KINDS` row a decoder uses (None: an
    oracle, not decodable). solver: whole-readout oracles: the reference `eeutils.analysis.oracle` judges against.

    The rule lists of the kit are derived from these fields: confidence (decides from its own layer's
    confidence statistic, so it needs no final layer and no layer history: `CONFIDENCE_RULES`, the rules a
    "best confidence rule" is chosen among); decode (the threshold, as a rule string writes it, of the default
    decoding comparison, `DECODE_DEFAULTS`); never_fires (a threshold at which it never fires in practice:
    decoding with it measures the pure cost of its checks); cheap ("threshold/options" variants whose checks
    cost at most a few percent of a block, `CHEAP_CHECKS`).
    """

    kind: str
    description: str
    comparison: str
    label: str  # format with {t}
    reads: tuple[str, ...] = ()
    threshold: str | None = None
    bounds: tuple[float, float] | None = None
    grid: tuple | str = (None,)
    realisable: bool = True
    widget: tuple[float, float, float, float] | None = None
    check: str | None = "full"
    solver: str | None = None
    hint: str = ""
    threshold_name: str = ""
    confidence: bool = False
    decode: str | None = None
    never_fires: str | None = None
    cheap: tuple[str, ...] = ()

    def __post_init__(self):
        if self.comparison not in COMPARISONS:
            raise ValueError(f"rule kind {self.kind!r}: comparison must be one of {COMPARISONS}, "
                             f"got {self.comparison!r}")
        if self.threshold not in ("int", "float", None) or (self.threshold is None) != (self.bounds is None):
            raise ValueError(f"rule kind {self.kind!r}: threshold must be 'int' or 'float' with bounds, or None "
                             f"without, got {self.threshold!r} with bounds {self.bounds!r}")
        if self.check is not None and self.check not in CHECK_KINDS:
            raise ValueError(f"rule kind {self.kind!r}: check must be one of {sorted(CHECK_KINDS)} or None")


RULE_KINDS: dict[str, RuleKind] = {}
# the lists derived from the table, rebuilt in place by `register_rule_kind` (importers hold these objects)
# kind -> what fires the exit at layer l (the first layer >= min_layer where it holds)
EXIT_KINDS: dict[str, str] = {}
# default trade-off grids of the threshold rules (static and consecutive grids depend on L: `default_rules`)
DEFAULT_THRESHOLDS: dict[str, tuple] = {}
ORACLES: list[str] = []
REALISABLE: list[str] = []
CONFIDENCE_RULES: list[str] = []  # realisable kinds that need no final layer (see RuleKind.confidence)
WIDGET_RULES: dict[str, tuple] = {}
DECODE_DEFAULTS: list[str] = []  # each kind's `decode` threshold, then the never-firing probes (pure check cost)
CHEAP_CHECKS: list[str] = []  # the probes' cheap variants first (the reference cost), then the other `cheap` variants


def _derive() -> None:
    """Rebuild every list derived from `RULE_KINDS`, in place."""
    rows = RULE_KINDS.items()
    probes = [f"{k}:{r.never_fires}" for k, r in rows if r.never_fires is not None]
    cheap = [f"{k}:{v}" for k, r in rows for v in r.cheap]
    derived = {
        "EXIT_KINDS": {k: r.description for k, r in rows},
        "DEFAULT_THRESHOLDS": {k: r.grid for k, r in rows
                               if r.threshold == "float" and r.realisable and isinstance(r.grid, tuple)},
        "ORACLES": [k for k, r in rows if not r.realisable],
        "REALISABLE": [k for k, r in rows if r.realisable],
        "CONFIDENCE_RULES": [k for k, r in rows if r.confidence],
        "WIDGET_RULES": {k: r.widget for k, r in rows if r.widget is not None},
        "DECODE_DEFAULTS": [f"{k}:{r.decode}" for k, r in rows if r.decode is not None] + probes,
        "CHEAP_CHECKS": sorted(cheap, key=lambda s: s.split("/")[0] not in probes),
    }
    for name, value in derived.items():
        target = globals()[name]
        target.clear()
        if isinstance(target, dict):
            target.update(value)
        else:
            target.extend(value)


def register_rule_kind(row: RuleKind, overwrite: bool = False) -> RuleKind:
    """Add a row to the rule table; every list derived from it (`EXIT_KINDS`, `REALISABLE`, ...) follows."""
    if not isinstance(row, RuleKind):
        raise TypeError(f"expected a RuleKind row, got {type(row).__name__}")
    if row.kind in RULE_KINDS and not overwrite:
        raise ValueError(f"an exit rule kind {row.kind!r} exists; pass overwrite=True to replace it")
    RULE_KINDS[row.kind] = row
    _derive()
    return row


def unregister_rule_kind(kind: str) -> None:
    """Remove a row added by `register_rule_kind` (and it from every derived list)."""
    RULE_KINDS.pop(kind, None)
    _derive()


_PROB = (0.0, 1.0)
for _row in (
    RuleKind(kind="static", description="l >= threshold (a fixed exit layer, 1..L)", comparison="static",
             threshold="int", bounds=(1, math.inf), grid="layers", label="static@{t}", check="none",
             threshold_name="static exit layer", hint="static exit layer must be in 1..L (layer 0 never exits)",
             decode="50%"),
    RuleKind(kind="saturation", description="saturation oracle: exit at the saturation layer, the earliest layer from "
             "which top1 equals the final top1 at every later layer; changes no prediction (zero loss by "
             "construction); needs all layers' readouts, so not realisable, and NOT an upper bound on savings under "
             "a loss budget (see budget_oracle)",
             reads=("saturated",), comparison="true", realisable=False, label="saturation oracle", check=None),
    RuleKind(kind="budget_oracle", description="budget oracle: per-token exits with the largest skip ratio whose "
             "relative accuracy loss (rel_acc_loss, against the target / answers) is <= threshold; the most any "
             "per-token exit decision could save within that budget (eeutils.analysis.oracle)",
             reads=("top1", "target"), comparison="solver", threshold="float", bounds=_PROB,
             grid=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2), realisable=False, label="budget oracle (acc. loss<={t:g})",
             solver="target", check=None,
             hint="budget_oracle threshold is a relative accuracy loss in [0, 1] (0.05 = 5%)"),
    RuleKind(kind="budget_oracle_agreement", description="budget oracle for agreement: per-token exits with the "
             "largest skip ratio whose disagreement with the full model (1 - agreement) is <= threshold",
             reads=("top1",), comparison="solver", threshold="float", bounds=_PROB,
             grid=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2), realisable=False, label="budget oracle (disagreement<={t:g})",
             solver="final", check=None,
             hint="budget_oracle_agreement threshold is a disagreement share in [0, 1]"),
    RuleKind(kind="oracle_correct", description="top1_l equals the TARGET next token; tokens never correct exit at L; "
             "uses the reference, so accuracy >= the full model's (not an upper bound on savings: budget_oracle:0 "
             "saves at least as much)",
             reads=("top1", "target"), comparison="equals_target", realisable=False,
             label="oracle_correct (first correct layer)", check=None),
    RuleKind(kind="max_prob", description="max_prob_l >= threshold (probability in [0, 1])", reads=("max_prob",),
             comparison=">=", threshold="float", bounds=_PROB,
             grid=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0), label="max_prob>={t:g}",
             widget=(0.0, 1.0, 0.05, 0.8), hint="max_prob threshold is a probability and must be in [0, 1]",
             confidence=True, decode="0.9", cheap=("0.9/cand=16",)),
    RuleKind(kind="margin", description="p(top1) - p(top2) at l >= threshold (probability in [0, 1]; CALM softmax "
             "response)", reads=("margin",), comparison=">=", threshold="float", bounds=_PROB,
             grid=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0), label="margin>={t:g}",
             widget=(0.0, 1.0, 0.05, 0.5), hint="margin threshold is a probability and must be in [0, 1]",
             confidence=True, decode="0.5", never_fires="1.0",
             cheap=("1.0/cand=16", "0.5/cand=16", "0.3/cand=16", "0.3/cand=16/every=2")),
    RuleKind(kind="entropy", description="entropy_l <= threshold (nats, >= 0)", reads=("entropy",), comparison="<=",
             threshold="float", bounds=(0.0, math.inf), grid=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
             label="entropy<={t:g}", widget=(0.0, 8.0, 0.1, 1.0), hint="entropy threshold must be >= 0 nats",
             confidence=True, decode="1.0"),
    RuleKind(kind="hidden_saturation", description="cos(h_l, h_{l-1}) >= threshold (cosine in [-1, 1]; CALM state "
             "saturation)", reads=("hidden_cos_prev",), comparison=">=", threshold="float", bounds=(-1.0, 1.0),
             grid=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999), label="hidden_cos_prev>={t:g}",
             widget=(0.0, 1.0, 0.01, 0.95), check="state",
             hint="hidden_saturation threshold is a cosine and must be in [-1, 1]",
             confidence=True, decode="0.99", cheap=("0.995/every=2", "0.95/min=3")),
    RuleKind(kind="consecutive", description="top1 unchanged over the last n = threshold layer transitions (n >= 1, "
             "counted from layer 1)", reads=("top1_streak",), comparison=">=", threshold="int", bounds=(1, math.inf),
             grid="streaks", label="top1 stable x{t}", threshold_name="consecutive n",
             hint="consecutive needs n >= 1 unchanged layer transitions"),
):
    register_rule_kind(_row)

# kinds renamed when the budget oracle arrived: a clear error instead of a silent guess
_RENAMED = {"oracle": "'oracle' is now 'saturation' (the saturation oracle: zero loss, not an upper bound); for "
                      "the most any per-token exit could save within a loss budget use 'budget_oracle:0.05'"}
_COMPARE = {">=": operator.ge, "<=": operator.le}


def _as_int(x, what: str) -> int:
    return check_integer(what, x)


def _is_missing(x) -> bool:
    """None or a NaN number (how a trade-off frame stores "no threshold"); never a string."""
    return x is None or (is_real(x) and math.isnan(float(x)))


def _as_layers(x) -> tuple[int, ...] | None:
    if x is None:
        return None
    if isinstance(x, str):
        x = [t for t in x.replace("+", " ").split() if t]
    try:
        items = list(x)
    except TypeError:
        items = [x]
    out = tuple(sorted({_as_int(v, "a checked layer") for v in items}))
    if not out or out[0] < 1:
        raise ValueError(f"layers must be a non-empty set of checked layers >= 1 (layer 0 never exits), got {x!r}")
    return out


@dataclass(frozen=True)
class ExitRule:
    """An early-exit rule: kind (a row of `RULE_KINDS`), threshold (its meaning depends on the kind), the
    layers where it is checked and how a decoder checks it.

    threshold: static -> the exit layer (1..L); max_prob, margin -> probability in [0, 1];
    entropy -> nats >= 0; hidden_saturation -> cosine in [-1, 1]; consecutive -> n >= 1 unchanged
    layer transitions; budget_oracle, budget_oracle_agreement -> the loss budget in [0, 1];
    saturation, oracle_correct -> none (None or NaN).
    min_layer (default 1): earliest layer that may exit; layer 0 never exits.
    every (default 1): check only every `every`-th layer from min_layer (min_layer, min_layer + every, ...).
    layers (default None = all): check only these layers (combined with min_layer and every).
    candidates (default 0 = the kind's own check): decode with the candidate-set head of this many tokens
    (`CHECK_KINDS["candidates"]`; max_prob, margin and entropy rules). The simulator treats it as the full
    head; a decoder exits at a layer only where the full head confirms the rule.
    A streak rule (consecutive) with a layer subset counts top-1 changes between checked layers.
    """

    kind: str
    threshold: float | int | None = None
    min_layer: int = 1
    every: int = 1
    layers: tuple[int, ...] | None = None
    candidates: int = 0

    def __post_init__(self):
        if not isinstance(self.kind, str):
            raise TypeError(f"exit rule kind must be a name such as 'max_prob', got {self.kind!r}")
        if self.kind in _RENAMED:
            raise ValueError(f"unknown exit rule kind {self.kind!r}: {_RENAMED[self.kind]}")
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown exit rule kind {self.kind!r}; choose one of {sorted(RULE_KINDS)}")
        ml = _as_int(self.min_layer, "min_layer")
        if ml < 1:
            raise ValueError(f"min_layer must be >= 1 (layer 0, the embeddings, never exits), got {self.min_layer!r}")
        object.__setattr__(self, "min_layer", ml)
        every = _as_int(self.every, "every")
        if every < 1:
            raise ValueError(f"every must be >= 1 (check every n-th layer from min_layer), got {self.every!r}")
        object.__setattr__(self, "every", every)
        object.__setattr__(self, "layers", _as_layers(self.layers))
        k = _as_int(self.candidates, "candidates")
        if k < 0:
            raise ValueError(f"candidates must be >= 0 (0 = the rule's own check), got {self.candidates!r}")
        object.__setattr__(self, "candidates", k)
        row, t = RULE_KINDS[self.kind], self.threshold
        if k:
            sup = CHECK_KINDS["candidates"].supports
            if not row.reads or any(r not in sup for r in row.reads):
                raise ValueError(f"the candidate-set check decides rules on {', '.join(sup)}; {self.kind!r} reads "
                                 f"{row.reads or 'nothing'}: drop candidates= for it")
        if (every > 1 or self.layers is not None) and row.check is None:
            raise ValueError(f"rule {self.kind!r} is an oracle: it has no checked layers to choose")
        if row.threshold is None:
            if not _is_missing(t):
                raise ValueError(f"rule {self.kind!r} takes no threshold, got {t!r}")
            object.__setattr__(self, "threshold", None)
            return
        if _is_missing(t):
            raise ValueError(f"rule {self.kind!r} needs a threshold: {row.description}")
        if row.threshold == "int":
            v = _as_int(t, row.threshold_name or f"{self.kind} threshold")
        else:
            v = check_real(f"threshold of {self.kind!r}", t)
        lo, hi = row.bounds
        if not (lo <= v <= hi):  # also rejects NaN
            raise ValueError(f"{row.hint or f'{self.kind} threshold out of range'}, got {t!r}")
        object.__setattr__(self, "threshold", v)

    @property
    def spec(self) -> RuleKind:
        return RULE_KINDS[self.kind]

    @property
    def label(self) -> str:
        base = self.spec.label.format(t=self.threshold)
        if self.min_layer != 1:
            base = f"{base} [min_layer={self.min_layer}]"
        opts = {"every": self.every if self.every != 1 else None,
                "layers": "+".join(map(str, self.layers)) if self.layers is not None else None,
                "cand": self.candidates or None}
        return base + "".join(f"/{k}={v}" for k, v in opts.items() if v is not None)

    @property
    def required_stats(self) -> tuple[str, ...]:
        """Names `rule_fires` reads from layer_stats for this rule."""
        return self.spec.reads

    @property
    def realisable(self) -> bool:
        return self.spec.realisable

    @property
    def check(self) -> str | None:
        """The `CHECK_KINDS` row a decoder uses for this rule (None for oracles)."""
        return "candidates" if self.candidates else self.spec.check

    @property
    def subset(self) -> bool:
        """Whether the rule is checked at a subset of the layers from min_layer (every > 1 or explicit layers)."""
        return self.every > 1 or self.layers is not None

    def checks_at(self, layer: int) -> bool:
        """Whether the rule is evaluated at `layer` (below L; layer L always exits)."""
        return (layer >= self.min_layer and (layer - self.min_layer) % self.every == 0
                and (self.layers is None or layer in self.layers))

    def checked_layers(self, n_layers: int) -> list[int]:
        """The layers 1..L-1 where the rule is evaluated."""
        return [j for j in range(1, n_layers) if self.checks_at(j)]

    def validate_for(self, n_layers: int) -> None:
        """Checks that need L: static layer, min_layer and checked layers within 1..L."""
        if self.kind == "static" and self.threshold > n_layers:
            raise ValueError(f"static exit layer must be in 1..{n_layers}, got {self.threshold}")
        if self.min_layer > n_layers:
            raise ValueError(f"min_layer {self.min_layer} exceeds the number of layers L = {n_layers}")
        if self.layers is not None and self.layers[-1] > n_layers:
            raise ValueError(f"checked layers must be in 1..{n_layers}, got {list(self.layers)}")


def top1_streak(top1: np.ndarray) -> np.ndarray:
    """[n, L+1] int: number of consecutive layer transitions ending at l with top1 unchanged,
    counting from layer 1 (layer 0 is never read): streak_0 = streak_1 = 0,
    streak_l = streak_{l-1} + 1 if top1_l == top1_{l-1} else 0.
    """
    top1 = _int_ids("top1", top1, ndim=2)
    out = np.zeros(top1.shape, dtype=np.int64)
    for layer in range(2, top1.shape[1]):
        out[:, layer] = np.where(top1[:, layer] == top1[:, layer - 1], out[:, layer - 1] + 1, 0)
    return out


def subset_streak(top1: np.ndarray, layers) -> np.ndarray:
    """[n, L+1] int: `top1_streak` over the checked `layers` only (a change counts between consecutive checked
    layers; the first checked layer has streak 0); 0 at every unchecked layer."""
    top1 = np.asarray(top1)
    out = np.zeros(top1.shape, dtype=np.int64)
    layers = list(layers)
    if layers:
        out[:, layers] = top1_streak(np.concatenate([top1[:, :1], top1[:, layers]], axis=1))[:, 1:]
    return out


def update_streak(prev_streak, prev_top1, top1) -> np.ndarray:
    """One decoder step of `top1_streak`: pass prev_top1=None at layer 1 (the streak starts at 0)."""
    top1 = np.atleast_1d(_int_ids("top1", top1))
    if prev_top1 is None:
        return np.zeros(top1.shape, dtype=np.int64)
    shapes = (np.atleast_1d(_int_ids("prev_top1", prev_top1)).shape, _int_ids("prev_streak", prev_streak).shape)
    if shapes[0] != top1.shape or shapes[1] not in ((), top1.shape):
        raise ValueError(f"prev_streak, prev_top1 and top1 must have one entry per token (shapes {shapes[1]}, "
                         f"{shapes[0]}, {top1.shape})")
    return np.where(top1 == np.atleast_1d(prev_top1), np.atleast_1d(prev_streak) + 1, 0).astype(np.int64)


def _int_ids(name: str, x, ndim: int | None = None) -> np.ndarray:
    """x as an integer array (token ids or counts), of `ndim` dimensions where given; else TypeError / ValueError
    naming `name`."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers (token ids or counts), got {a.dtype} ({x!r:.40})")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array [n_tokens, L + 1], got shape {a.shape}")
    return a


def _size(layer_stats: dict) -> int:
    for v in layer_stats.values():
        return int(np.atleast_1d(np.asarray(v)).shape[0])
    return 1


def rule_fires(rule: ExitRule, layer_stats: dict, layer: int, n_layers: int) -> np.ndarray:
    """Whether `rule` stops each token at `layer`, a bool array (length of the stats; 1 for scalars).

    layer_stats maps statistic names to that layer's values (arrays of one entry per token, or
    scalars). Names read (``rule.required_stats``, the table's ``reads``): the Readout statistics
    ``max_prob``, ``margin``, ``entropy``, ``hidden_cos_prev``, ``top1``, plus
    ``target`` (the reference next token, -1 if none), ``top1_streak`` (`top1_streak` /
    `update_streak`) and ``saturated`` (top1 here and at every later layer equals the final:
    only computable after the full forward, hence an oracle).

    Always False below ``rule.min_layer`` (so at layer 0) and at layers the rule does not check
    (``every``, ``layers``), always True at layer L; in between,
    the first layer where it is True is the exit layer. NaN statistics never fire.
    """
    if not isinstance(rule, ExitRule):
        raise TypeError(f"expected an ExitRule, got {type(rule).__name__}")
    n_layers = _as_int(n_layers, "n_layers")
    layer = _as_int(layer, "layer")
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if not isinstance(layer_stats, dict):
        raise TypeError(f"layer_stats must be a dict {{statistic name: values}}, got {type(layer_stats).__name__}")
    if not (0 <= layer <= n_layers):
        raise ValueError(f"layer must be in 0..{n_layers}, got {layer}")
    rule.validate_for(n_layers)
    missing = [s for s in rule.required_stats if s not in layer_stats]
    if missing:
        raise ValueError(f"rule {rule.label!r} needs layer statistic(s) {missing}; got {sorted(layer_stats)}")
    size = _size({s: layer_stats[s] for s in rule.required_stats} or layer_stats)
    if layer >= n_layers:
        return np.ones(size, dtype=bool)
    if not rule.checks_at(layer):  # below min_layer or outside the checked subset
        return np.zeros(size, dtype=bool)

    def get(name):
        return np.atleast_1d(np.asarray(layer_stats[name]))

    row, t = rule.spec, rule.threshold
    if row.comparison == "solver":
        raise ValueError(f"{rule.label} chooses exits over the whole readout, not layer by layer: use "
                         "eeutils.exits.simulate on a Readout")
    with np.errstate(invalid="ignore"):
        if row.comparison == "static":
            out = np.full(size, layer >= t)
        elif row.comparison == "true":
            out = get(row.reads[0]).astype(bool)
        elif row.comparison == "equals_target":
            target = get("target")
            out = (get("top1") == target) & (target >= 0)
        else:
            out = _COMPARE[row.comparison](get(row.reads[0]), t)
    return np.broadcast_to(np.asarray(out, dtype=bool), (size,)).copy()


# rule-string options "kind:threshold/key=value/...": key -> (ExitRule field, value parser)
RULE_OPTIONS: dict[str, tuple[str, object]] = {
    "min": ("min_layer", int),
    "every": ("every", int),
    "layers": ("layers", lambda v: [int(x) for x in v.split("+")]),
    "cand": ("candidates", int),
}
