"""The lenses: the statistic registry, the fused chunk kernel, `readout()` (through a lens object: `LogitLens`,
`TunedLens` or your own `Lens`, or by name via `as_lens`) and the `Readout` object, the tuned lens' translators,
pitfalls."""
from .kernel import NonFiniteLogits
from .lenses import Lens, LogitLens, Unembed, as_lens
from .readout import ReadoutConfig, capture_forward, check_last_layer, readout
from .result import Readout
from .statistics import FLOAT_STATS, INT_STATS, REGISTRY, SPECS, STATISTICS, Statistic
from .tuned import LENSES, SMOKE_LENS, TunedLens, TunedLensSettings, tuned_lens

__all__ = ["FLOAT_STATS", "INT_STATS", "LENSES", "Lens", "LogitLens", "NonFiniteLogits", "REGISTRY", "Readout",
           "ReadoutConfig", "SMOKE_LENS", "SPECS", "STATISTICS", "Statistic", "TunedLens", "TunedLensSettings",
           "Unembed", "as_lens", "capture_forward", "check_last_layer", "readout", "tuned_lens"]
