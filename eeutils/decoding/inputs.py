"""Input checks shared by the decoder and the baselines: the model, the prompt, lengths, EOS ids."""
from __future__ import annotations

import torch

from ..arch.loading import LoadedModel, load_model, wrap_model
from ..core.checks import check_count
from ..lens.inputs import token_rows
from ..workloads.types import surrogate_problem


def as_loaded(model) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return load_model(model)
    if isinstance(model, torch.nn.Module):
        return wrap_model(model)
    raise TypeError(f"model must be a LoadedModel, a model name or a torch.nn.Module, got {type(model).__name__}")


def prompt_ids(lm: LoadedModel, prompt) -> list[int]:
    """The prompt's token ids: text (not empty or only whitespace: that would generate from BOS alone) encoded
    by the model's tokenizer, or one sequence of integer ids in the vocabulary (`lens.inputs.token_rows`)."""
    if isinstance(prompt, str):
        if lm.tokenizer is None:
            raise ValueError(f"{lm.name} has no tokenizer: pass the prompt as a list of token ids")
        if not prompt.strip():
            raise ValueError(f"prompt is empty{' (only whitespace)' if prompt else ''}: pass some text, or token ids "
                             "to start from (e.g. [tokenizer.bos_token_id])")
        problem = surrogate_problem(prompt)
        if problem:
            raise ValueError(f"prompt {problem}")
        return lm.encode(prompt)
    rows = token_rows(prompt, None, "prompt")
    if len(rows) != 1:
        raise ValueError(f"prompt must be one sequence (batch size 1), got {len(rows)} rows")
    V = lm.vocab_size
    bad = [t for t in rows[0] if not 0 <= t < V]
    if bad:
        raise ValueError(f"prompt token ids must be in [0, {V}); got {bad[:5]}")
    return rows[0]


def check_lengths(lm: LoadedModel, ids: list[int], max_new_tokens) -> int:
    n = check_count("max_new_tokens", max_new_tokens, 1)
    ctx = lm.max_length
    if ctx is not None:
        if len(ids) > ctx:
            raise ValueError(f"the prompt has {len(ids)} tokens, longer than the model's context of {ctx}: "
                             f"shorten it to at most {ctx - 1} tokens")
        if len(ids) + n - 1 > ctx:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({n}) exceeds the model's context of "
                             f"{ctx} positions: lower max_new_tokens to {ctx - len(ids) + 1} or shorten the prompt")
    return n


def eos_ids(lm: LoadedModel) -> set[int]:
    gc = getattr(lm.model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None) if gc is not None else None
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}
