"""The lenses: the statistic registry, the fused chunk kernel, `readout()` (through a lens object: `LogitLens`,
`TunedLens` or your own `Lens`, or by name via `as_lens`) and the `Readout` object, the tuned lens' translators,
pitfalls."""
from .kernel import NonFiniteLogits
from .lenses import Lens, LogitLens, Unembed, as_lens
from .readout import ReadoutConfig, capture_forward, check_last_layer, readout
from .result import Readout
from .statistics import REGISTRY, SPECS, STATISTICS, Statistic, register_statistic, temporary_statistic
from .tuned import LENSES, SMOKE_LENS, TunedLens, TunedLensSettings, tuned_lens

__all__ = ["LENSES", "Lens", "LogitLens", "NonFiniteLogits", "REGISTRY", "Readout", "ReadoutConfig", "SMOKE_LENS",
           "SPECS", "STATISTICS", "Statistic", "TunedLens", "TunedLensSettings", "Unembed", "as_lens",
           "capture_forward", "check_last_layer", "readout", "register_statistic", "temporary_statistic",
           "tuned_lens"]
