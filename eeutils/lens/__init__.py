"""The lenses: the statistic registry, the fused chunk kernel, `readout()` (logit or tuned lens) and the `Readout`
object, the tuned lens' translators, pitfalls."""
from .kernel import NonFiniteLogits
from .readout import capture_forward, check_last_layer, readout
from .result import Readout
from .statistics import REGISTRY, SPECS, STATISTICS, Statistic, register_statistic, temporary_statistic
from .tuned import LENSES, TunedLens, TunedLensSettings, tuned_lens

__all__ = ["LENSES", "NonFiniteLogits", "REGISTRY", "Readout", "SPECS", "STATISTICS", "Statistic", "TunedLens",
           "TunedLensSettings", "capture_forward", "check_last_layer", "readout", "register_statistic",
           "temporary_statistic", "tuned_lens"]
