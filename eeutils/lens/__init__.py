"""The lenses: the statistic registry, the fused chunk kernel, `readout()` (logit or tuned lens) and the `Readout`
object, the tuned lens' translators, pitfalls."""
from .kernel import NonFiniteLogits
from .readout import capture_forward, check_last_layer, readout
from .result import Readout
from .statistics import FLOAT_STATS, INT_STATS, REGISTRY, SPECS, STATISTICS, Statistic
from .tuned import LENSES, TunedLens, TunedLensSettings, tuned_lens

__all__ = ["FLOAT_STATS", "INT_STATS", "LENSES", "NonFiniteLogits", "REGISTRY", "Readout", "SPECS", "STATISTICS",
           "Statistic", "TunedLens", "TunedLensSettings", "capture_forward", "check_last_layer", "readout",
           "tuned_lens"]
