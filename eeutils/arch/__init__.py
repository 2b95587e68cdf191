"""Architectures: the ArchSpec table (every family fact), model names, loading and parameter counts."""
from .discovery import discover, resolve
from .loading import LoadedModel, ModelLoadError, load_model, parse_dtype, wrap_model
from ..core.zoo_store import ZooError, list_zoo, load_card
from .names import model_folder
from .params import count_params, hidden_size, moe_shape
from .table import (ADAPTERS, FAMILIES, AdapterError, ArchSpec, Resolved, apply_logit_ops, families, make_logit_fn,
                    model_types, register_adapter)

__all__ = ["ADAPTERS", "FAMILIES", "AdapterError", "ArchSpec", "LoadedModel", "ModelLoadError", "Resolved", "ZooError",
           "apply_logit_ops", "count_params", "discover", "families", "hidden_size", "list_zoo", "load_card", "load_model",
           "make_logit_fn", "model_folder", "model_types", "moe_shape", "parse_dtype", "register_adapter", "resolve",
           "wrap_model"]
