"""The exit-rule table: every early-exit rule kind as one row, and `ExitRule`, `rule_fires` and the
rule parser as lookups into it.

Conventions shared by the simulator (`eeutils.analysis.exits`) and the decoder (`eeutils.decoding`):

- Layers follow `eeutils.lens.result`: 0 = embeddings, l = output of block l, L = last block.
- An exit at layer l means blocks 1..l ran and the token is predicted from layer l's readout
  (top1 at l); it skips (L - l) / L of the blocks.
- Layer 0 never exits; every rule has a ``min_layer`` (default 1, must be >= 1): no exit before it.
- Layer L always exits: a token no rule stops earlier runs the full model.
- No rule reads layer 0's readout: the top-1 streak of "consecutive" counts changes from layer 1 on.
- A NaN statistic never fires a rule.

Adding a rule kind: one `RuleKind` row (statistic read, comparison, bounds, threshold type, default
grid, realisable or oracle, label, widget range). The simulator, the decoder (realisable kinds),
the trade-off grid and the explorer widget pick it up.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

__all__ = ["RuleKind", "RULE_KINDS", "EXIT_KINDS", "DEFAULT_THRESHOLDS", "REALISABLE", "ORACLES", "WIDGET_RULES",
           "ExitRule",
           "rule_fires", "top1_streak", "update_streak", "as_rule", "parse_rules", "default_rules"]


@dataclass(frozen=True)
class RuleKind:
    """One kind of exit rule.

    reads: the per-layer values `rule_fires` needs (Readout statistics, or the derived "saturated",
    "top1_streak", "target"). comparison: ">=" / "<=" (statistic vs threshold), "static" (layer >= threshold),
    "true" (the statistic is a boolean), "equals_target" (top1 == target), "solver" (exits chosen over the
    whole readout by `eeutils.analysis.oracle`, the threshold being the loss budget). threshold: "int", "float" or
    None (no threshold). bounds: allowed threshold range (inclusive). grid: default trade-off thresholds
    ("layers": 1..L, "streaks": 1..L-1). realisable: a decoder can apply it while generating (oracles
    cannot; realisable=False is the "oracle" family). widget: (lo, hi, step, default) of the explorer's
    threshold slider, or None.
    """

    kind: str
    description: str
    reads: tuple[str, ...]
    comparison: str
    threshold: str | None
    bounds: tuple[float, float] | None
    grid: tuple | str
    realisable: bool
    label: str  # format with {t}
    widget: tuple[float, float, float, float] | None = None
    solver: str | None = None  # whole-readout oracles: the reference `eeutils.analysis.oracle` judges against


RULE_KINDS: dict[str, RuleKind] = {r.kind: r for r in (
    RuleKind("static", "l >= threshold (a fixed exit layer, 1..L)", (), "static", "int", (1, math.inf), "layers",
             True, "static@{t}"),
    RuleKind("saturation", "saturation oracle: exit at the saturation layer, the earliest layer from which top1 equals "
                           "the final top1 at every later layer; changes no prediction (zero loss by construction); "
                           "needs all layers' readouts, so not realisable, and NOT an upper bound on savings under a "
                           "loss budget (see budget_oracle)",
             ("saturated",), "true", None, None, (None,), False, "saturation oracle"),
    RuleKind("budget_oracle", "budget oracle: per-token exits with the largest skip ratio whose relative accuracy loss "
                              "(rel_acc_loss, against the target / answers) is <= threshold; the most any per-token "
                              "exit decision could save within that budget (eeutils.analysis.oracle)",
             ("top1", "target"), "solver", "float", (0.0, 1.0), (0.0, 0.01, 0.02, 0.05, 0.1, 0.2), False,
             "budget oracle (acc. loss<={t:g})", solver="target"),
    RuleKind("budget_oracle_agreement", "budget oracle for agreement: per-token exits with the largest skip "
                                        "ratio whose disagreement with the full model (1 - agreement) is <= threshold",
             ("top1",), "solver", "float", (0.0, 1.0), (0.0, 0.01, 0.02, 0.05, 0.1, 0.2), False,
             "budget oracle (disagreement<={t:g})", solver="final"),
    RuleKind("oracle_correct", "top1_l equals the TARGET next token; tokens never correct exit at L; uses the "
                               "reference, so accuracy >= the full model's (not an upper bound on savings: "
                               "budget_oracle:0 saves at least as much)",
             ("top1", "target"), "equals_target", None, None, (None,), False,
             "oracle_correct (first correct layer)"),
    RuleKind("max_prob", "max_prob_l >= threshold (probability in [0, 1])", ("max_prob",), ">=", "float", (0.0, 1.0),
             (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0), True, "max_prob>={t:g}",
             (0.0, 1.0, 0.05, 0.8)),
    RuleKind("margin", "p(top1) - p(top2) at l >= threshold (probability in [0, 1]; CALM softmax response)",
             ("margin",), ">=", "float", (0.0, 1.0),
             (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0), True, "margin>={t:g}",
             (0.0, 1.0, 0.05, 0.5)),
    RuleKind("entropy", "entropy_l <= threshold (nats, >= 0)", ("entropy",), "<=", "float", (0.0, math.inf),
             (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0), True, "entropy<={t:g}", (0.0, 8.0, 0.1, 1.0)),
    RuleKind("hidden_saturation", "cos(h_l, h_{l-1}) >= threshold (cosine in [-1, 1]; CALM state saturation)",
             ("hidden_cos_prev",), ">=", "float", (-1.0, 1.0),
             (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999), True, "hidden_cos_prev>={t:g}",
             (0.0, 1.0, 0.01, 0.95)),
    RuleKind("consecutive", "top1 unchanged over the last n = threshold layer transitions (n >= 1, counted from layer 1)",
             ("top1_streak",), ">=", "int", (1, math.inf), "streaks", True, "top1 stable x{t}"),
)}

# kind -> what fires the exit at layer l (the first layer >= min_layer where it holds)
EXIT_KINDS: dict[str, str] = {k: r.description for k, r in RULE_KINDS.items()}
# default trade-off grids of the threshold rules (static and consecutive grids depend on L: `default_rules`)
DEFAULT_THRESHOLDS: dict[str, tuple] = {k: r.grid for k, r in RULE_KINDS.items()
                                        if r.threshold == "float" and r.realisable and isinstance(r.grid, tuple)}
ORACLES: tuple[str, ...] = tuple(k for k, r in RULE_KINDS.items() if not r.realisable)
# kinds renamed when the budget oracle arrived: a clear error instead of a silent guess
_RENAMED = {"oracle": "'oracle' is now 'saturation' (the saturation oracle: zero loss, not an upper bound); for "
                      "the most any per-token exit could save within a loss budget use 'budget_oracle:0.05'"}
REALISABLE: tuple[str, ...] = tuple(k for k, r in RULE_KINDS.items() if r.realisable)
WIDGET_RULES: dict[str, tuple] = {k: r.widget for k, r in RULE_KINDS.items() if r.widget is not None}

_COMPARE = {">=": operator.ge, "<=": operator.le}
_THRESHOLD_NAMES = {"static": "static exit layer", "consecutive": "consecutive n"}
_BOUND_HINTS = {"static": "static exit layer must be in 1..L (layer 0 never exits)",
                "consecutive": "consecutive needs n >= 1 unchanged layer transitions",
                "max_prob": "max_prob threshold is a probability and must be in [0, 1]",
                "margin": "margin threshold is a probability and must be in [0, 1]",
                "entropy": "entropy threshold must be >= 0 nats",
                "hidden_saturation": "hidden_saturation threshold is a cosine and must be in [-1, 1]",
                "budget_oracle": "budget_oracle threshold is a relative accuracy loss in [0, 1] (0.05 = 5%)",
                "budget_oracle_agreement": "budget_oracle_agreement threshold is a disagreement share in [0, 1]"}


def _as_int(x, what: str) -> int:
    if isinstance(x, bool) or x is None:
        raise ValueError(f"{what} must be an integer, got {x!r}")
    try:
        f = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {x!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{what} must be an integer, got {x!r}")
    return int(f)


def _is_missing(x) -> bool:
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class ExitRule:
    """An early-exit rule: kind (a row of `RULE_KINDS`), threshold (its meaning depends on the kind) and
    the minimum exit layer.

    threshold: static -> the exit layer (1..L); max_prob, margin -> probability in [0, 1];
    entropy -> nats >= 0; hidden_saturation -> cosine in [-1, 1]; consecutive -> n >= 1 unchanged
    layer transitions; budget_oracle, budget_oracle_agreement -> the loss budget in [0, 1];
    saturation, oracle_correct -> none (None or NaN).
    min_layer (default 1): earliest layer that may exit; layer 0 never exits.
    """

    kind: str
    threshold: float | int | None = None
    min_layer: int = 1

    def __post_init__(self):
        if self.kind in _RENAMED:
            raise ValueError(f"unknown exit rule kind {self.kind!r}: {_RENAMED[self.kind]}")
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown exit rule kind {self.kind!r}; choose one of {sorted(RULE_KINDS)}")
        ml = _as_int(self.min_layer, "min_layer")
        if ml < 1:
            raise ValueError(f"min_layer must be >= 1 (layer 0, the embeddings, never exits), got {self.min_layer!r}")
        object.__setattr__(self, "min_layer", ml)
        row, t = RULE_KINDS[self.kind], self.threshold
        if row.threshold is None:
            if not _is_missing(t):
                raise ValueError(f"rule {self.kind!r} takes no threshold, got {t!r}")
            object.__setattr__(self, "threshold", None)
            return
        if _is_missing(t):
            raise ValueError(f"rule {self.kind!r} needs a threshold: {row.description}")
        if row.threshold == "int":
            v = _as_int(t, _THRESHOLD_NAMES.get(self.kind, f"{self.kind} threshold"))
        else:
            try:
                v = float(t)
            except (TypeError, ValueError):
                raise ValueError(f"threshold of {self.kind!r} must be a number, got {t!r}") from None
        lo, hi = row.bounds
        if not (lo <= v <= hi):  # also rejects NaN
            raise ValueError(f"{_BOUND_HINTS.get(self.kind, f'{self.kind} threshold out of range')}, got {t!r}")
        object.__setattr__(self, "threshold", v)

    @property
    def spec(self) -> RuleKind:
        return RULE_KINDS[self.kind]

    @property
    def label(self) -> str:
        base = self.spec.label.format(t=self.threshold)
        return base if self.min_layer == 1 else f"{base} [min_layer={self.min_layer}]"

    @property
    def required_stats(self) -> tuple[str, ...]:
        """Names `rule_fires` reads from layer_stats for this rule."""
        return self.spec.reads

    @property
    def realisable(self) -> bool:
        return self.spec.realisable

    def validate_for(self, n_layers: int) -> None:
        """Checks that need L: static layer and min_layer within 1..L."""
        if self.kind == "static" and self.threshold > n_layers:
            raise ValueError(f"static exit layer must be in 1..{n_layers}, got {self.threshold}")
        if self.min_layer > n_layers:
            raise ValueError(f"min_layer {self.min_layer} exceeds the number of layers L = {n_layers}")


def top1_streak(top1: np.ndarray) -> np.ndarray:
    """[n, L+1] int: number of consecutive layer transitions ending at l with top1 unchanged,
    counting from layer 1 (layer 0 is never read): streak_0 = streak_1 = 0,
    streak_l = streak_{l-1} + 1 if top1_l == top1_{l-1} else 0.
    """
    top1 = np.asarray(top1)
    out = np.zeros(top1.shape, dtype=np.int64)
    for layer in range(2, top1.shape[1]):
        out[:, layer] = np.where(top1[:, layer] == top1[:, layer - 1], out[:, layer - 1] + 1, 0)
    return out


def update_streak(prev_streak, prev_top1, top1) -> np.ndarray:
    """One decoder step of `top1_streak`: pass prev_top1=None at layer 1 (the streak starts at 0)."""
    top1 = np.atleast_1d(np.asarray(top1))
    if prev_top1 is None:
        return np.zeros(top1.shape, dtype=np.int64)
    return np.where(top1 == np.atleast_1d(prev_top1), np.atleast_1d(prev_streak) + 1, 0).astype(np.int64)


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

    Always False below ``rule.min_layer`` (so at layer 0), always True at layer L; in between,
    the first layer where it is True is the exit layer. NaN statistics never fire.
    """
    if not isinstance(rule, ExitRule):
        raise TypeError(f"expected an ExitRule, got {type(rule).__name__}")
    n_layers = _as_int(n_layers, "n_layers")
    layer = _as_int(layer, "layer")
    if not (0 <= layer <= n_layers):
        raise ValueError(f"layer must be in 0..{n_layers}, got {layer}")
    rule.validate_for(n_layers)
    missing = [s for s in rule.required_stats if s not in layer_stats]
    if missing:
        raise ValueError(f"rule {rule.label!r} needs layer statistic(s) {missing}; got {sorted(layer_stats)}")
    size = _size({s: layer_stats[s] for s in rule.required_stats} or layer_stats)
    if layer >= n_layers:
        return np.ones(size, dtype=bool)
    if layer < rule.min_layer:
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


def as_rule(item, n_layers: int | None = None) -> ExitRule:
    """An ExitRule from an ExitRule, "kind" / "kind:threshold" (static:50% = half depth, rounded, at least 1;
    needs n_layers), a (kind, threshold[, min_layer]) tuple or a dict of ExitRule fields. The one parser
    of rule arguments; checked against L when n_layers is given."""
    if isinstance(item, ExitRule):
        rule = item
    elif isinstance(item, str):
        kind, sep, thr = item.strip().partition(":")
        kind, thr = kind.strip(), thr.strip()
        needs = kind in RULE_KINDS and RULE_KINDS[kind].threshold is not None
        if (sep and not thr) or (not sep and needs):
            raise ValueError(f"rule {item!r}: write kind:threshold, e.g. 'max_prob:0.9' or 'static:50%'")
        if not sep:
            rule = ExitRule(kind)
        elif kind == "static" and thr.endswith("%"):
            try:
                pct = float(thr[:-1])
            except ValueError:
                raise ValueError(f"rule {item!r}: the static depth must be a percentage like 50%") from None
            if n_layers is None:
                raise ValueError(f"rule {item!r}: a percentage depth needs the model's number of layers")
            rule = ExitRule("static", max(1, min(n_layers, round(n_layers * pct / 100))))
        else:
            try:
                value = float(thr)
            except ValueError:
                raise ValueError(f"rule {item!r}: threshold {thr!r} is not a number") from None
            rule = ExitRule(kind, value)
    elif isinstance(item, (tuple, list)):
        rule = ExitRule(*item)
    elif isinstance(item, dict):
        rule = ExitRule(**item)
    else:
        raise TypeError(f"cannot make an exit rule from {item!r}: pass an ExitRule, 'kind:threshold' or "
                        "(kind, threshold)")
    if n_layers is not None:
        rule.validate_for(n_layers)
    return rule


def parse_rules(rules, n_layers: int, default=None) -> list[ExitRule]:
    """Exit rules for a model of `n_layers` blocks.

    rules: a spec string "kind:threshold,..." or an iterable of anything `as_rule` takes; None = `default`
    (the same kinds of input). Duplicate labels (a static percentage may round to the same layer) are refused.
    """
    if rules is None:
        rules = default
    if rules is None:
        raise ValueError("no exit rules given")
    if isinstance(rules, (str, ExitRule)):
        rules = [s for s in rules.split(",") if s.strip()] if isinstance(rules, str) else [rules]
    out = [as_rule(r, n_layers) for r in rules]
    if not out:
        raise ValueError("no exit rules given")
    labels = [r.label for r in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"duplicate exit rules {dup} (a static percentage may round to the same layer)")
    return out


def default_rules(n_layers: int, budget: float | None = None) -> list[ExitRule]:
    """The default trade-off grid: the oracles (budget oracles over their grid, plus `budget` if
    given), static at every layer 1..L, the threshold rules over their table grids, and
    consecutive n = 1..L-1 (n >= L can never fire before L)."""
    L = _as_int(n_layers, "n_layers")
    if L < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers!r}")
    grids = {"layers": range(1, L + 1), "streaks": range(1, max(L - 1, 1) + 1)}
    order = (*ORACLES, "static", *DEFAULT_THRESHOLDS, "consecutive")
    rules = []
    for kind in order:
        grid = RULE_KINDS[kind].grid
        grid = grids[grid] if isinstance(grid, str) else grid
        if RULE_KINDS[kind].solver is not None and budget is not None and float(budget) not in grid:
            grid = tuple(sorted((*grid, float(budget))))
        rules += [ExitRule(kind, t) for t in grid]
    return rules
