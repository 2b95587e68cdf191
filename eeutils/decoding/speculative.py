"""Timing transformers' self-speculative decoding (`assistant_early_exit`, the LayerSkip paper's inference
method) against full greedy `model.generate` on the same prompts: speed-up, agreement and draft depth.

Greedy verification makes self-speculative output equal to full greedy decoding (agreement 1 up to ties), so
its speed-up is measured at full agreement; a LayerSkip-trained model should accept more drafts and gain more.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.checks import check_count
from .baselines import generate_full, generate_self_speculative
from .inputs import as_loaded, prompt_ids
from .result import DecodingUnsupported
from .timing import timed_rounds


def agreement(tokens, reference) -> float:
    """Share of the reference's generated tokens matched at the same position (a shorter output misses the rest)."""
    if not len(reference):
        raise ValueError("the reference generated no token")
    n = min(len(tokens), len(reference))
    return float(np.sum(np.asarray(tokens[:n]) == np.asarray(reference[:n])) / len(reference))


def self_speculative_speed(model, prompts, layers=None, max_new_tokens: int = 16, repeats: int = 3) -> pd.DataFrame:
    """One row per draft depth (``early_exit_layer``, default 1..L-1): tokens/s relative to full greedy
    ``model.generate`` (median over interleaved rounds, `timed_rounds`), agreement with it, and timing facts.

    Raises DecodingUnsupported for families whose forward cannot be truncated (see generate_self_speculative)."""
    lm = as_loaded(model)
    L = lm.n_layers
    layers = list(range(1, L)) if layers is None else [int(x) for x in layers]
    repeats = check_count("repeats", repeats)
    ids = [prompt_ids(lm, p) for p in prompts]
    if not ids:
        raise ValueError("no prompts given")
    cells = [("full", lambda p: generate_full(lm, p, max_new_tokens, backend="hf"))]
    cells += [(e, lambda p, e=e: generate_self_speculative(lm, p, max_new_tokens, early_exit_layer=e)) for e in layers]
    for _, fn in cells[1:2]:
        fn(ids[0])  # warm-up; raises DecodingUnsupported on a family without layer truncation
    cells[0][1](ids[0])
    rounds = timed_rounds([fn for _, fn in cells], ids, repeats)
    rows = []
    for i, (layer, _) in enumerate(cells):
        agree = float(np.mean([agreement(r.tokens, f.tokens) for r, f in zip(rounds.results[i], rounds.results[0])]))
        rows.append({"model": lm.name, "method": "generate" if layer == "full" else "self_speculative",
                     "early_exit_layer": L if layer == "full" else layer, "n_layers": L, "n_prompts": len(ids),
                     "n_tokens": rounds.n_tokens(i), "tokens_per_s": rounds.tokens_per_s(i),
                     "speed_ratio": rounds.speed_ratio(i), "agreement": agree, "repeats": repeats})
    return pd.DataFrame(rows)


__all__ = ["DecodingUnsupported", "agreement", "self_speculative_speed"]
