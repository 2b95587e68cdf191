"""Public facade: exit rules simulated on a Readout (`eeutils.exits.tradeoff`, `max_skip_under_budget`, ...).

The rule table lives in `eeutils.analysis.rules`, the simulation in `eeutils.analysis.exits`; this
module re-exports them under their stable name. Nothing inside eeutils imports this facade.
"""
from .analysis.exits import (PAIRED_COLUMNS, TRADEOFF_COLUMNS, evaluate, max_skip_under_budget,  # noqa: F401
                             simulate, skip_tokens, tradeoff)
from .analysis.oracle import budget_oracle_exits  # noqa: F401
from .analysis.paired import mcnemar_exact, paired_loss  # noqa: F401
from .analysis.rule_parse import as_rule, default_rules, parse_rules  # noqa: F401
from .analysis.rules import (CONFIDENCE_RULES, DEFAULT_THRESHOLDS, EXIT_KINDS, ORACLES, REALISABLE,  # noqa: F401
                             RULE_KINDS, ExitRule, RuleKind, register_rule_kind, rule_fires, top1_streak,
                             unregister_rule_kind, update_streak)

__all__ = [
    "EXIT_KINDS", "DEFAULT_THRESHOLDS", "RULE_KINDS", "ExitRule", "rule_fires", "top1_streak", "update_streak",
    "default_rules", "simulate", "evaluate", "tradeoff", "max_skip_under_budget", "as_rule", "parse_rules",
    "budget_oracle_exits", "paired_loss", "mcnemar_exact", "skip_tokens", "ORACLES", "REALISABLE", "CONFIDENCE_RULES",
    "RuleKind", "register_rule_kind", "unregister_rule_kind",
]
