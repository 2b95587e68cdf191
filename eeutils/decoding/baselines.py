"""Baselines for the early-exit decoder: full greedy decoding (the same driver, or model.generate) and
transformers' own LayerSkip-style self-speculative decoding."""
from __future__ import annotations

import inspect
import time

import numpy as np
import torch

from ..arch.loading import LoadedModel
from ..core.checks import check_bool, check_count
from .decoder import generate_early_exit
from .inputs import as_loaded, check_lengths, eos_ids, prompt_ids
from .result import DecodingUnsupported, GenerationResult


@torch.inference_mode()
def generate_full(model, prompt, max_new_tokens: int = 32, *, backend: str = "driver",
                  stop_at_eos: bool = True) -> GenerationResult:
    """Plain greedy decoding with a cache: the baseline.

    backend="driver" runs the same layer-by-layer driver as generate_early_exit with no exits (every
    token runs all L blocks, no per-layer readouts), so ratios against it isolate what exiting
    changes; backend="hf" calls model.generate(do_sample=False) (its own loop and overheads).
    """
    lm = as_loaded(model)
    check_bool("stop_at_eos", stop_at_eos)
    if backend == "driver":
        return generate_early_exit(lm, prompt, None, max_new_tokens=max_new_tokens, strategy="propagate",
                                   return_trace=True, stop_at_eos=stop_at_eos)
    if backend != "hf":
        raise ValueError(f"backend must be 'driver' or 'hf', got {backend!r}")
    ids = prompt_ids(lm, prompt)
    n_new = check_lengths(lm, ids, max_new_tokens)
    x = torch.tensor([ids], dtype=torch.long, device=lm.model.get_input_embeddings().weight.device)
    kw = {} if stop_at_eos else {"eos_token_id": None}
    t0 = time.perf_counter()
    out = lm.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n_new,
                            return_dict_in_generate=True, pad_token_id=_pad_id(lm), **kw)
    t1 = time.perf_counter()
    return _hf_result(lm, ids, out, t1 - t0, "hf")


def _pad_id(lm):
    gc = getattr(lm.model, "generation_config", None)
    pad = getattr(gc, "pad_token_id", None)
    if pad is None:
        eos = eos_ids(lm)
        pad = min(eos) if eos else 0
    return pad


def _hf_result(lm, ids, out, seconds, backend, rule=None):
    tokens = [int(t) for t in out.sequences[0, len(ids):].tolist()]
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    text = lm.tokenizer.decode(tokens) if lm.tokenizer is not None else None
    L = lm.n_layers
    return GenerationResult(tokens=tokens, prompt_ids=ids, exit_layers=np.full(len(tokens), L), n_layers=L,
                            strategy=backend, rule=rule, text=text, prefill_seconds=0.0, decode_seconds=seconds,
                            layers_run=L * len(tokens), cache=cache, backend=backend,
                            meta=dict(model=lm.name, family=lm.family, model_type=lm.config.model_type))


def _supports_layer_truncation(lm: LoadedModel) -> bool:
    """Whether the base model's forward loops over `self.layers[: self.config.num_hidden_layers]`, which is
    what transformers' assistant_early_exit relies on (it lowers num_hidden_layers while drafting)."""
    base = lm.model.base_model
    fwd = type(base).forward
    try:
        src = inspect.getsource(inspect.unwrap(fwd))
    except (OSError, TypeError):
        return False
    return "[: self.config.num_hidden_layers]" in src.replace(" ", "").replace("[:self", "[: self")


@torch.inference_mode()
def generate_self_speculative(model, prompt, max_new_tokens: int = 32, early_exit_layer: int = 1, *,
                              num_assistant_tokens: int | None = None) -> GenerationResult:
    """LayerSkip-style self-speculative greedy decoding with transformers' own `assistant_early_exit`:
    the first `early_exit_layer` blocks (+ final norm and head) draft tokens, the full model verifies
    them in one pass. Greedy verification makes the output equal to full greedy decoding; the gain
    depends on how often drafts are accepted. Needs a model whose forward can be truncated by
    config.num_hidden_layers (Llama-like); others raise DecodingUnsupported.
    """
    lm = as_loaded(model)
    L = lm.n_layers
    early_exit_layer = check_count("early_exit_layer", early_exit_layer, 1, L - 1, hint=" (the draft's depth)")
    if not _supports_layer_truncation(lm):
        raise DecodingUnsupported(
            f"{lm.name} ({lm.config.model_type}) does not support transformers' assistant_early_exit: its forward "
            "runs every block regardless of config.num_hidden_layers, so the draft would be the full model. "
            "Use generate_early_exit instead, or a Llama-like model.")
    ids = prompt_ids(lm, prompt)
    n_new = check_lengths(lm, ids, max_new_tokens)
    x = torch.tensor([ids], dtype=torch.long, device=lm.model.get_input_embeddings().weight.device)
    check_count("num_assistant_tokens", num_assistant_tokens, 1, allow_none=True)
    kw = {} if num_assistant_tokens is None else {"num_assistant_tokens": int(num_assistant_tokens)}
    t0 = time.perf_counter()
    out = lm.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n_new,
                            assistant_early_exit=int(early_exit_layer), return_dict_in_generate=True,
                            pad_token_id=_pad_id(lm), **kw)
    t1 = time.perf_counter()
    res = _hf_result(lm, ids, out, t1 - t0, "self_speculative")
    res.strategy = "self_speculative"
    res.meta["early_exit_layer"] = int(early_exit_layer)
    return res
