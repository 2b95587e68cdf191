"""Analysis of a Readout: similarity, the EAS (ceiling, bootstrap, sensitivity), effective depth, the exit-rule
table with its teacher-forced simulation, and the verdict of a group comparison (`compare`)."""
from .bootstrap import EASBootstrap, bootstrap_eas, eas_replicates, layer_curve
from .depth import (depth_summary, kl_settle_layer, saturated_matrix, saturation_layer, saturation_summary,
                    settle_layer)
from .eas import AGGREGATES, EASResult, eas, eas_ceiling
from .exits import evaluate, max_skip_under_budget, simulate, tradeoff
from .reported import reported_eas
from .rule_parse import as_rule, default_rules, parse_rules
from .rules import DEFAULT_THRESHOLDS, EXIT_KINDS, RULE_KINDS, ExitRule, RuleKind, rule_fires
from .sensitivity import choice_stability, kendall_tau, rank_stability, sensitivity, stability_summary
from .similarity import SIMILARITY_KINDS, similarity
from .verdicts import compare

__all__ = ["AGGREGATES", "DEFAULT_THRESHOLDS", "EASBootstrap", "EASResult", "EXIT_KINDS", "ExitRule", "RULE_KINDS",
           "RuleKind", "SIMILARITY_KINDS", "as_rule", "bootstrap_eas", "compare", "default_rules", "depth_summary", "eas",
           "eas_ceiling", "eas_replicates", "evaluate", "kendall_tau", "kl_settle_layer", "layer_curve",
           "max_skip_under_budget", "parse_rules", "rank_stability", "reported_eas", "rule_fires", "saturated_matrix",
           "saturation_layer", "saturation_summary", "sensitivity", "choice_stability", "stability_summary", "settle_layer", "similarity", "simulate",
           "tradeoff"]
