"""Checks for notebook 11 (realised decoding): the modelled speed-up of a full-head rule, by hand."""
from __future__ import annotations

import numpy as np

from ..decoding.costs import modelled_speedup
from .core import Hint, exercise

RTOL = 1e-6


def package_speedup(result, cost) -> float:
    """`modelled_speedup` from what the decoder itself counted in `result` (a propagate run of a full-head rule on
    an attention model): blocks run, K/V-only writes and full readouts per token."""
    n = result.n_tokens
    checks = sum(result.check_macs.values()) / n / cost["block_macs"]
    return modelled_speedup(result.n_layers, cost["head_cost_blocks"], cost["kv_cost_blocks"],
                            result.layers_computed / n, result.kv_writes / n, checks,
                            result.lens_calls / n)["flop_speedup"]


def _mistakes(e, L, h, kv) -> dict:
    """What typical slips give for exit layers e (one per token): each names the cost it forgot or misread."""
    blocks, writes, reads = e.mean(), (L - e).mean(), e.mean()
    return {
        "blocks only": L / blocks,
        "no head in full decoding": L / (blocks + writes * kv + reads * h),
        "no K/V writes": (L + h) / (blocks + reads * h),
        "one head per token": (L + h) / (blocks + writes * kv + h),
        "prediction read apart": (L + h) / (blocks + writes * kv + (reads + (e < L).mean()) * h),
    }


HINTS = {
    "blocks only": "that is time proportional to blocks run: a full-head check reads the head (d x vocab, "
                   "`head_cost_blocks` blocks) at every layer it checks, and propagate writes K/V for skipped blocks.",
    "no head in full decoding": "full decoding is not free of the head either: it runs L blocks AND reads the head "
                                "once per token (L + head).",
    "no K/V writes": "propagate still writes the skipped attention blocks' keys and values (kv_cost_blocks each).",
    "one head per token": "a rule checked at every layer reads the head at every layer up to its exit, not once.",
    "prediction read apart": "the readout at the layer where the rule fires doubles as the prediction: "
                             "it is not read a second time.",
}


@exercise("11.flop_speedup", "the modelled speed-up of a full-head rule, from its exit layers")
def flop_speedup(answer, result, cost):
    """answer(exit_layers, n_layers, head, kv_cost) -> float: the FLOP model's speed-up of full decoding's cost
    per token (L blocks + one head) over early exit's (blocks run + K/V writes + head readouts) for a rule checked
    with the full head at every layer 1..L-1, strategy propagate, on an attention model."""
    if result.strategy != "propagate" or result.state_rows or result.rule is None or result.rule.check != "full" \
            or result.rule.subset or result.rule.min_layer != 1:
        raise ValueError("the context must be a propagate run of a full-head rule checked at every layer, "
                         "on an attention model")
    L, h, kv = result.n_layers, cost["head_cost_blocks"], cost["kv_cost_blocks"]
    e = np.asarray(result.exit_layers, dtype=float)
    want = package_speedup(result, cost)
    got = answer(np.asarray(result.exit_layers), L, h, kv)
    if not isinstance(got, (int, float, np.floating, np.integer)) or isinstance(got, bool):
        raise Hint(f"return one number (a float), got {type(got).__name__}.")
    if np.isclose(float(got), want, rtol=RTOL):
        return (f"{float(got):.3f}x: blocks, K/V writes and one head per checked layer, against L + one head; "
                "the decoder's own counters give the same.")
    for name, value in _mistakes(e, L, h, kv).items():
        if np.isclose(float(got), value, rtol=RTOL):
            raise Hint(HINTS[name])
    if np.isclose(float(got), 1.0 / want, rtol=RTOL):
        raise Hint("the speed-up is full decoding's cost divided by early exit's, not the other way round.")
    raise Hint("count per token, then average over tokens: blocks run (the exit layer e), K/V writes (L - e, "
               "kv_cost blocks each) and head readouts (one per checked layer up to e); divide L + head by it.")
