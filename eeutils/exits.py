"""Public facade: exit rules simulated on a Readout (`eeutils.exits.tradeoff`, `max_skip_under_budget`, ...).

The rule table lives in `eeutils.analysis.rules`, the simulation in `eeutils.analysis.exits`; this
module re-exports them under their stable name. Nothing inside eeutils imports this facade.
"""
from .analysis.exits import evaluate, max_skip_under_budget, simulate, tradeoff, TRADEOFF_COLUMNS  # noqa: F401
from .analysis.rules import (DEFAULT_THRESHOLDS, EXIT_KINDS, REALISABLE, RULE_KINDS, ExitRule, RuleKind,  # noqa: F401
                             as_rule, default_rules, parse_rules, rule_fires, top1_streak, update_streak)

__all__ = [
    "EXIT_KINDS", "DEFAULT_THRESHOLDS", "RULE_KINDS", "ExitRule", "rule_fires", "top1_streak", "update_streak",
    "default_rules", "simulate", "evaluate", "tradeoff", "max_skip_under_budget", "as_rule", "parse_rules",
]
