"""Early-exit rules simulated on one Readout (no model re-run), their trade-off curves, and the
maximum skip ratio under an accuracy budget.

Conventions shared by the simulator and a real decoder:

- Layers follow `eeutils.result`: 0 = embeddings, l = output of block l, L = last block.
- An exit at layer l means blocks 1..l ran and the token is predicted from layer l's readout
  (top1 at l); it skips (L - l) / L of the blocks.
- Layer 0 never exits (no block has run; with tied embeddings it predicts the input token back).
  Every rule has a ``min_layer`` (default 1, must be >= 1): no exit before it.
- Layer L always exits: a token no rule stops earlier runs the full model.
- No rule reads layer 0's readout: the top-1 streak of the "consecutive" rule counts changes from
  layer 1 on, so a decoder never needs a layer-0 logit lens.
- A NaN statistic never fires a rule.

`rule_fires(rule, layer_stats, layer, n_layers)` is the one predicate both use: the simulator
calls it with whole columns of the readout, a decoder with 1-element arrays (or scalars) of the
current layer's statistics for the token being generated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metrics import saturated_matrix
from .result import Readout

__all__ = [
    "EXIT_KINDS", "DEFAULT_THRESHOLDS", "ExitRule", "rule_fires", "top1_streak", "update_streak",
    "default_rules", "simulate", "evaluate", "tradeoff", "max_skip_under_budget",
]

# kind -> what fires the exit at layer l (the first layer >= min_layer where it holds)
EXIT_KINDS = {
    "static": "l >= threshold (a fixed exit layer, 1..L)",
    "oracle": "top1_l equals the final top1 at l and every later layer (saturation event); "
              "needs all layers' readouts: an upper bound, not a realisable rule",
    "oracle_correct": "top1_l equals the TARGET next token; tokens never correct exit at L; uses the "
                      "reference, so accuracy >= the full model's: a loose upper bound",
    "max_prob": "max_prob_l >= threshold (probability in [0, 1])",
    "margin": "p(top1) - p(top2) at l >= threshold (probability in [0, 1]; CALM softmax response)",
    "entropy": "entropy_l <= threshold (nats, >= 0)",
    "hidden_saturation": "cos(h_l, h_{l-1}) >= threshold (cosine in [-1, 1]; CALM state saturation)",
    "consecutive": "top1 unchanged over the last n = threshold layer transitions (n >= 1, counted from layer 1)",
}

# statistics each kind reads in rule_fires (derived ones explained in `rule_fires`)
_REQUIRED = {
    "static": (),
    "oracle": ("saturated",),
    "oracle_correct": ("top1", "target"),
    "max_prob": ("max_prob",),
    "margin": ("margin",),
    "entropy": ("entropy",),
    "hidden_saturation": ("hidden_cos_prev",),
    "consecutive": ("top1_streak",),
}

# Default trade-off grid. Confidence grids are dense near the strict end, where 5% budgets bind;
# entropy in nats; hidden saturation spans the cosines seen between consecutive residual states;
# static and consecutive grids depend on L (see `default_rules`).
DEFAULT_THRESHOLDS = {
    "max_prob": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0),
    "margin": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0),
    "entropy": (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    "hidden_saturation": (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
}


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
    """An early-exit rule: kind, threshold (meaning depends on kind) and the minimum exit layer.

    threshold: static -> the exit layer (1..L); max_prob, margin -> probability in [0, 1];
    entropy -> nats >= 0; hidden_saturation -> cosine in [-1, 1]; consecutive -> n >= 1 unchanged
    layer transitions; oracle, oracle_correct -> none (None or NaN).
    min_layer (default 1): earliest layer that may exit; layer 0 never exits.
    """

    kind: str
    threshold: float | int | None = None
    min_layer: int = 1

    def __post_init__(self):
        if self.kind not in EXIT_KINDS:
            raise ValueError(f"unknown exit rule kind {self.kind!r}; choose one of {sorted(EXIT_KINDS)}")
        ml = _as_int(self.min_layer, "min_layer")
        if ml < 1:
            raise ValueError(f"min_layer must be >= 1 (layer 0, the embeddings, never exits), got {self.min_layer!r}")
        object.__setattr__(self, "min_layer", ml)
        k, t = self.kind, self.threshold
        if k in ("oracle", "oracle_correct"):
            if not _is_missing(t):
                raise ValueError(f"rule {k!r} takes no threshold, got {t!r}")
            object.__setattr__(self, "threshold", None)
            return
        if _is_missing(t):
            raise ValueError(f"rule {k!r} needs a threshold: {EXIT_KINDS[k]}")
        if k == "static":
            v = _as_int(t, "static exit layer")
            if v < 1:
                raise ValueError(f"static exit layer must be in 1..L (layer 0 never exits), got {t!r}")
            object.__setattr__(self, "threshold", v)
        elif k == "consecutive":
            v = _as_int(t, "consecutive n")
            if v < 1:
                raise ValueError(f"consecutive needs n >= 1 unchanged layer transitions, got {t!r}")
            object.__setattr__(self, "threshold", v)
        else:
            try:
                v = float(t)
            except (TypeError, ValueError):
                raise ValueError(f"threshold of {k!r} must be a number, got {t!r}") from None
            if k in ("max_prob", "margin") and not (0.0 <= v <= 1.0):
                raise ValueError(f"{k} threshold is a probability and must be in [0, 1], got {t!r}")
            if k == "entropy" and not v >= 0.0:
                raise ValueError(f"entropy threshold must be >= 0 nats, got {t!r}")
            if k == "hidden_saturation" and not (-1.0 <= v <= 1.0):
                raise ValueError(f"hidden_saturation threshold is a cosine and must be in [-1, 1], got {t!r}")
            object.__setattr__(self, "threshold", v)

    @property
    def label(self) -> str:
        t = self.threshold
        base = {
            "static": f"static@{t}",
            "oracle": "oracle (saturation)",
            "oracle_correct": "oracle_correct (uses target; upper bound)",
            "max_prob": f"max_prob>={t:g}" if t is not None else "",
            "margin": f"margin>={t:g}" if t is not None else "",
            "entropy": f"entropy<={t:g}" if t is not None else "",
            "hidden_saturation": f"hidden_cos_prev>={t:g}" if t is not None else "",
            "consecutive": f"top1 stable x{t}",
        }[self.kind]
        return base if self.min_layer == 1 else f"{base} [min_layer={self.min_layer}]"

    @property
    def required_stats(self) -> tuple[str, ...]:
        """Names `rule_fires` reads from layer_stats for this rule."""
        return _REQUIRED[self.kind]

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
    scalars). Names read (see ``rule.required_stats``): the Readout statistics ``max_prob``,
    ``margin``, ``entropy``, ``hidden_cos_prev``, ``top1``, plus
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

    k, t = rule.kind, rule.threshold
    with np.errstate(invalid="ignore"):
        if k == "static":
            out = np.full(size, layer >= t)
        elif k == "oracle":
            out = get("saturated").astype(bool)
        elif k == "oracle_correct":
            target = get("target")
            out = (get("top1") == target) & (target >= 0)
        elif k == "max_prob":
            out = get("max_prob") >= t
        elif k == "margin":
            out = get("margin") >= t
        elif k == "entropy":
            out = get("entropy") <= t
        elif k == "hidden_saturation":
            out = get("hidden_cos_prev") >= t
        else:  # consecutive
            out = get("top1_streak") >= t
    return np.broadcast_to(np.asarray(out, dtype=bool), (size,)).copy()


# ---------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------
def _check_readout(readout: Readout) -> None:
    if not isinstance(readout, Readout):
        raise TypeError(f"expected an eeutils.result.Readout, got {type(readout).__name__}")
    if readout.n_tokens == 0:
        raise ValueError("the readout has 0 tokens: nothing to simulate (check the workload and any token selection)")
    if readout.n_layers < 1:
        raise ValueError("the readout has no block layers (only layer 0)")


def _rule_inputs(readout: Readout, rule: ExitRule, cache: dict | None = None) -> dict:
    """Per-statistic arrays for `rule`: [n, L+1] matrices, or [n] vectors that apply at every layer."""
    cache = {} if cache is None else cache
    out = {}
    for name in rule.required_stats:
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
    _check_readout(readout)
    if not isinstance(rule, ExitRule):
        raise TypeError(f"expected an ExitRule, got {type(rule).__name__}")
    L = readout.n_layers
    rule.validate_for(L)
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


def evaluate(readout: Readout, exit_layers) -> dict:
    """Savings and quality of given exit layers (one per token) against the full model.

    Returns: n_tokens, n_layers; mean_layers (mean exit layer = blocks run); skip_ratio =
    mean (L - exit)/L; agreement = share of tokens whose exited top1 equals the final top1;
    token_accuracy / full_token_accuracy = exited / final top1 == target over tokens with a target
    (n_scored_tokens); exact_match / full_exact_match over documents with answer positions
    (a document is correct iff every answer-position prediction equals its target; n_answer_docs);
    accuracy / full_accuracy = the exact match if the workload has answers, else token accuracy
    (accuracy_kind says which); rel_acc_loss = (full - accuracy) / full (NaN when full is 0 or
    undefined; negative = the exit improves accuracy).
    """
    _check_readout(readout)
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
    res = dict(n_tokens=readout.n_tokens, n_layers=L, mean_layers=float(e.mean()),
               skip_ratio=float(((L - e) / L).mean()), agreement=float((pred == final).mean()),
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


def default_rules(n_layers: int) -> list[ExitRule]:
    """The default trade-off grid: static at every layer 1..L, both oracles, the confidence rules
    over `DEFAULT_THRESHOLDS`, and consecutive n = 1..L-1 (n >= L can never fire before L)."""
    L = _as_int(n_layers, "n_layers")
    if L < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers!r}")
    rules = [ExitRule("oracle"), ExitRule("oracle_correct")]
    rules += [ExitRule("static", layer) for layer in range(1, L + 1)]
    for kind, grid in DEFAULT_THRESHOLDS.items():
        rules += [ExitRule(kind, t) for t in grid]
    rules += [ExitRule("consecutive", n) for n in range(1, max(L - 1, 1) + 1)]
    return rules


def _as_rule(r) -> ExitRule:
    if isinstance(r, ExitRule):
        return r
    if isinstance(r, dict):
        return ExitRule(**r)
    if isinstance(r, str):
        return ExitRule(r)
    if isinstance(r, (tuple, list)):
        return ExitRule(*r)
    raise TypeError(f"cannot make an ExitRule from {r!r}")


TRADEOFF_COLUMNS = ["model", "rule", "threshold", "label", "min_layer", "mean_layers", "skip_ratio", "agreement",
                    "accuracy", "full_accuracy", "rel_acc_loss", "accuracy_kind", "n_tokens"]


def tradeoff(readout: Readout, rules=None) -> pd.DataFrame:
    """One row per rule (kind and threshold) simulated on `readout`.

    Columns: model, rule (kind), threshold (NaN for oracles), label, min_layer, mean_layers,
    skip_ratio, agreement, accuracy, full_accuracy, rel_acc_loss, accuracy_kind, n_tokens.
    rules: iterable of ExitRule (or (kind, threshold) tuples, or dicts of ExitRule fields);
    None = `default_rules(L)`.
    """
    _check_readout(readout)
    rules = default_rules(readout.n_layers) if rules is None else [_as_rule(r) for r in rules]
    cache: dict = {}
    rows = []
    for rule in rules:
        r = evaluate(readout, simulate(readout, rule, _cache=cache))
        rows.append(dict(model=readout.meta.get("model", ""), rule=rule.kind,
                         threshold=float("nan") if rule.threshold is None else float(rule.threshold),
                         label=rule.label, min_layer=rule.min_layer, mean_layers=r["mean_layers"],
                         skip_ratio=r["skip_ratio"], agreement=r["agreement"], accuracy=r["accuracy"],
                         full_accuracy=r["full_accuracy"], rel_acc_loss=r["rel_acc_loss"],
                         accuracy_kind=r["accuracy_kind"], n_tokens=r["n_tokens"]))
    return pd.DataFrame(rows, columns=TRADEOFF_COLUMNS)


def max_skip_under_budget(tradeoff_frame: pd.DataFrame, budget: float = 0.05, metric: str = "accuracy",
                          by=None) -> pd.DataFrame:
    """Per rule, the largest skip ratio among thresholds whose quality loss is within `budget`.

    metric="accuracy": loss = rel_acc_loss = (full_accuracy - accuracy) / full_accuracy (the
    paper's "at most 5% accuracy loss", read as relative). metric="agreement": loss =
    1 - agreement (share of tokens whose prediction changes). A row is admissible iff
    loss <= budget (NaN losses are not). Ties in skip ratio go to the smaller loss.
    A rule with no admissible threshold gets skip_ratio 0 (run the full model) and threshold NaN.
    by: grouping columns besides "rule"; default: whichever of model, workload the frame has.
    Returns: group columns, rule, skip_ratio, threshold, label, mean_layers, loss, n_admissible,
    budget, metric.
    """
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"budget must be a number in [0, 1), got {budget!r}") from None
    if not (0.0 <= b < 1.0):
        raise ValueError(f"budget must be in [0, 1) (a fraction, e.g. 0.05 for 5%), got {budget!r}")
    if metric not in ("accuracy", "agreement"):
        raise ValueError(f"metric must be 'accuracy' or 'agreement', got {metric!r}")
    need = ["rule", "threshold", "skip_ratio"] + (["rel_acc_loss"] if metric == "accuracy" else ["agreement"])
    missing = [c for c in need if c not in tradeoff_frame]
    if missing:
        raise ValueError(f"the trade-off frame lacks column(s) {missing}")
    groups = [c for c in (("model", "workload") if by is None else by) if c in tradeoff_frame] + ["rule"]
    f = tradeoff_frame.copy()
    f["loss"] = f["rel_acc_loss"] if metric == "accuracy" else 1.0 - f["agreement"]
    f["admissible"] = f["loss"].notna() & (f["loss"] <= b + 1e-12)
    out = []
    for key, g in f.groupby(groups, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(groups, key))
        ok = g[g["admissible"]]
        if ok.empty:
            row.update(skip_ratio=0.0, threshold=float("nan"), label="", mean_layers=float("nan"),
                       loss=float("nan"), n_admissible=0)
        else:
            best = ok.sort_values(["skip_ratio", "loss"], ascending=[False, True], kind="stable").iloc[0]
            row.update(skip_ratio=float(best["skip_ratio"]), threshold=float(best["threshold"]),
                       label=best.get("label", ""), mean_layers=float(best.get("mean_layers", float("nan"))),
                       loss=float(best["loss"]), n_admissible=int(len(ok)))
        row.update(budget=b, metric=metric)
        out.append(row)
    return pd.DataFrame(out)
