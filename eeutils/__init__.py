"""eeutils: measure how suitable a causal LM is for layer-wise early exit.

Load a model (`load_model`), read out every layer in one streaming pass (`readout`),
score it (`eeutils.metrics`), simulate exit rules (`eeutils.exits`), decode with early exit
(`eeutils.decoding`) and benchmark models x workloads (`eeutils.bench`). Runs offline on an
embedded zoo of tiny trained models. The public API is listed in docs/API.md; the package's
layers (core -> arch -> workloads -> lens -> analysis -> decoding -> bench -> notebook / zoo)
are described in docs/DESIGN.md.
"""
from ._version import __version__
from .arch.loading import LoadedModel, ModelLoadError, load_model, quiet, wrap_model
from .core.zoo_store import list_zoo
from .arch.real import list_real
from .arch.table import ADAPTERS, AdapterError, ArchSpec, register_adapter
from .lens.readout import check_last_layer, readout
from .lens.files import ReadoutFileError
from .lens.kernel import NonFiniteLogits
from .lens.result import Readout
from .lens.statistics import STATISTICS
from .workloads.types import Doc, Workload

__all__ = [
    "__version__", "ADAPTERS", "ArchSpec", "AdapterError", "register_adapter", "LoadedModel", "ModelLoadError",
    "load_model", "wrap_model", "readout", "check_last_layer", "STATISTICS", "Readout", "ReadoutFileError",
    "NonFiniteLogits", "Doc", "Workload",
    "list_zoo", "list_real", "quiet",
]
