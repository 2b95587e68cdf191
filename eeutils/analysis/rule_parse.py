"""The one parser of exit-rule arguments: `as_rule` ("kind:threshold/key=value", tuples, dicts), `parse_rules`
(a spec string or a list, duplicates refused) and `default_rules` (the trade-off grid), all lookups into the
rule table of `eeutils.analysis.rules`."""
from __future__ import annotations

from ..core.checks import check_integer, check_real
from .rules import DEFAULT_THRESHOLDS, ORACLES, RULE_KINDS, RULE_OPTIONS, ExitRule

__all__ = ["as_rule", "parse_rules", "default_rules"]


def _parse_options(item: str, opts: list[str]) -> dict:
    fields = {}
    for opt in opts:
        key, sep, value = opt.strip().partition("=")
        key = key.strip()
        if not sep or key not in RULE_OPTIONS or not value.strip():
            raise ValueError(f"rule {item!r}: option {opt!r} must be key=value with key one of "
                             f"{sorted(RULE_OPTIONS)} (e.g. 'max_prob:0.9/every=2/cand=16', 'margin:0.5/layers=2+4')")
        field_name, conv = RULE_OPTIONS[key]
        try:
            fields[field_name] = conv(value.strip())
        except ValueError:
            raise ValueError(f"rule {item!r}: option {key}={value!r} is not an integer"
                             + (" list like 2+4" if key == "layers" else "")) from None
    return fields


def as_rule(item, n_layers: int | None = None) -> ExitRule:
    """An ExitRule from an ExitRule, "kind" / "kind:threshold" (static:50% = half depth, rounded, at least 1;
    needs n_layers) with optional "/key=value" options (`RULE_OPTIONS`: min=3, every=2, layers=2+4, cand=16),
    a (kind, threshold[, min_layer, every, layers, candidates]) tuple or a dict of ExitRule fields. The one
    parser of rule arguments; checked against L when n_layers is given."""
    if isinstance(item, ExitRule):
        rule = item
    elif isinstance(item, str):
        head, *opts = item.strip().split("/")
        if opts:
            fields = _parse_options(item, opts)
            return as_rule(dict(as_rule(head, n_layers).__dict__, **fields), n_layers)
        kind, sep, thr = head.strip().partition(":")
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
            if not 0 < pct <= 100:
                raise ValueError(f"rule {item!r}: the static depth must be a percentage in (0%, 100%]")
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
    n_layers = check_integer("n_layers", n_layers, 1)
    if rules is None:
        rules = default
    if rules is None:
        raise ValueError("no exit rules given")
    if isinstance(rules, (str, ExitRule, dict)):
        rules = [s for s in rules.split(",") if s.strip()] if isinstance(rules, str) else [rules]
    elif isinstance(rules, (bytes, bytearray)) or not hasattr(rules, "__iter__"):
        raise TypeError(f"rules must be a spec string 'kind:threshold,...' or a list of exit rules, got "
                        f"{type(rules).__name__}")
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
    L = check_integer("n_layers", n_layers)
    if L < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers!r}")
    if budget is not None:
        budget = check_real("budget", budget, 0, 1, hi_open=True, hint=" (a relative accuracy loss, e.g. 0.05)")
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
