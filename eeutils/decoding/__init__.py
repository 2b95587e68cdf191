"""Realised early-exit greedy decoding (`generate_early_exit`), its baselines, and the comparison of realised
against potential speed-up (`compare_decoding`).

Modules: `drivers` (per-family block drivers, chosen by `ArchSpec.driver`), `decoder` (the per-token exit loop
and its cache strategies), `checks` (one implementation per exit-check kind and their cost counters),
`baselines` (full greedy, self-speculative), `costs` (the cost model in block-equivalents), `evaluation`
(compare_decoding, batching), `timing` (interleaved timing rounds), `speculative` (self-speculative speed),
`lens_cost` (a check's cost per lens), `summary` (the facts of a comparison; `eeutils.notebook.decoding` words them
for notebook 11), `result` (GenerationResult).
"""
from .baselines import generate_full, generate_self_speculative
from .decoder import DecodeConfig, generate_early_exit
from .drivers import supported_model_types
from .evaluation import compare_decoding, workload_prompts
from .lens_cost import check_cost_table
from .result import STRATEGIES, DecodingUnsupported, GenerationResult
from .speculative import self_speculative_speed

__all__ = ["DecodeConfig", "GenerationResult", "DecodingUnsupported", "check_cost_table", "compare_decoding",
           "generate_early_exit", "generate_full", "generate_self_speculative", "self_speculative_speed",
           "supported_model_types", "workload_prompts", "STRATEGIES"]
