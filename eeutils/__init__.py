"""eeutils: measure how suitable a causal LM is for layer-wise early exit.

Load a model (`load_model`), read out every layer in one streaming pass (`readout`),
score it (`eeutils.metrics`), simulate exit rules (`eeutils.exits`) and benchmark
models x workloads (`eeutils.bench`). Runs offline on an embedded zoo of tiny trained models.
"""
from ._version import __version__
from .adapters import ADAPTERS, ArchSpec, AdapterError, register_adapter
from .loading import LoadedModel, ModelLoadError, load_model, wrap_model
from .readout import check_last_layer, readout
from .result import STATISTICS, Readout
from .workloads import Doc, Workload


def quiet() -> None:
    """Silence transformers' warnings about optional CUDA kernels and similar chatter (errors still show)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def list_zoo():
    """Names of the embedded zoo models, loadable as load_model('zoo/<name>')."""
    from . import zoo
    return zoo.list_zoo()


def list_real():
    """Names of the real pretrained LLMs (GGUF in pip packages), loadable as load_model('real/<name>')."""
    from .arch.real import list_real as _list_real
    return _list_real()


__all__ = [
    "__version__", "ADAPTERS", "ArchSpec", "AdapterError", "register_adapter", "LoadedModel", "ModelLoadError",
    "load_model", "wrap_model", "readout", "check_last_layer", "STATISTICS", "Readout", "Doc", "Workload",
    "list_zoo", "list_real", "quiet",
]
