"""Solutions to notebook 11's exercise (realised decoding). Try it before reading on.

The context is one short early-exit generation of the zoo's dense-mid model (a full-head margin rule, propagate),
so that the tests run fast; the notebook passes its own generation and cost profile to the same check.
"""
from functools import lru_cache

import numpy as np

import eeutils
from eeutils.course import Case
from eeutils.decoding import generate_early_exit
from eeutils.decoding.costs import cost_profile
from eeutils.decoding.evaluation import workload_prompts


@lru_cache(maxsize=None)
def _context():
    lm = eeutils.load_model("zoo/dense-mid")
    prompt = workload_prompts(lm, "zoo-prose", n_prompts=2, prompt_tokens=32, max_new_tokens=8)[1][0]
    result = generate_early_exit(lm, prompt, "margin:0.1", max_new_tokens=8, strategy="propagate",
                                 return_trace=False, stop_at_eos=False)  # exits at layers 1, 3 and 6 (never)
    return {"result": result, "cost": cost_profile(lm)}


def flop_speedup(exit_layers, n_layers, head, kv_cost):
    """Per token that exits at e: e blocks, L - e K/V-only writes, e head readouts (one per checked layer 1..e;
    a token that never exits reads L - 1 checks and the final head, also e = L). Full decoding: L blocks + 1 head."""
    e = np.asarray(exit_layers, dtype=float)
    early = e.mean() + (n_layers - e).mean() * kv_cost + e.mean() * head
    return (n_layers + head) / early


def blocks_only(exit_layers, n_layers, head, kv_cost):  # the potential: time proportional to blocks run
    return n_layers / np.mean(exit_layers)


def one_head_per_token(exit_layers, n_layers, head, kv_cost):  # the checks forgotten: only the prediction's head
    e = np.asarray(exit_layers, dtype=float)
    return (n_layers + head) / (e.mean() + (n_layers - e).mean() * kv_cost + head)


def inverted(exit_layers, n_layers, head, kv_cost):  # early exit's cost over full decoding's
    return 1.0 / flop_speedup(exit_layers, n_layers, head, kv_cost)


CASES = {
    "11.flop_speedup": Case(
        context=_context,
        solution=flop_speedup,
        wrong=((blocks_only, "proportional to blocks run"), (one_head_per_token, "every layer up to its exit"),
               (inverted, "not the other way round"))),
}
