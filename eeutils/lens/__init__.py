"""The logit lens: the statistic registry, the fused chunk kernel, `readout()` and the `Readout` object, pitfalls."""
from .kernel import NonFiniteLogits
from .readout import capture_forward, check_last_layer, readout
from .result import Readout
from .statistics import FLOAT_STATS, INT_STATS, REGISTRY, SPECS, STATISTICS, Statistic

__all__ = ["FLOAT_STATS", "INT_STATS", "NonFiniteLogits", "REGISTRY", "Readout", "SPECS", "STATISTICS", "Statistic",
           "capture_forward", "check_last_layer", "readout"]
