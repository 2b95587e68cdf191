"""Public facade: early-exit suitability metrics (`eeutils.metrics.eas`, `bootstrap_eas`, ...).

The code lives in `eeutils.analysis` (similarity, eas, bootstrap, sensitivity, depth, reported);
this module re-exports it under its stable name. Nothing inside eeutils imports this facade.
"""
from .analysis.bootstrap import EASBootstrap, bootstrap_eas, eas_replicates, layer_curve  # noqa: F401
from .analysis.depth import (depth_summary, kl_settle_layer, saturated_matrix, saturation_layer,  # noqa: F401
                             saturation_summary, settle_layer)
from .analysis.eas import (AGGREGATES, DEFAULT_AGGREGATE, DEFAULT_ALPHA, DEFAULT_INCLUDE_EMBEDDING,  # noqa: F401
                           DEFAULT_INDEX_BASE, EASResult, eas, eas_ceiling)
from .analysis.reported import reported_eas  # noqa: F401
from .analysis.sensitivity import (CHOICES, choice_stability, kendall_tau, rank_stability, sensitivity,  # noqa: F401
                                   stability_summary)
from .analysis.similarity import DEFAULT_SIMILARITY, SIMILARITY_KINDS, similarity  # noqa: F401

__all__ = [
    "SIMILARITY_KINDS", "AGGREGATES", "EASResult", "EASBootstrap",
    "similarity", "eas", "eas_ceiling", "bootstrap_eas", "eas_replicates", "layer_curve",
    "sensitivity", "rank_stability", "kendall_tau", "choice_stability", "stability_summary", "CHOICES",
    "settle_layer", "kl_settle_layer", "saturated_matrix", "saturation_layer",
    "depth_summary", "saturation_summary", "reported_eas",
]
