"""Realised vs potential early-exit decoding: one tidy frame per model.

`compare_decoding(model, prompts, rules)` decodes the same prompts with full greedy decoding and with
every (rule, strategy) of `eeutils.decoding.generate_early_exit`, times them in interleaved rounds,
and sets beside each configuration what the readout-based simulation (`eeutils.exits.simulate`)
predicts for the same rule on the same tokens. The notebooks and `benchmarks/decode_bench.py` call
it; the measurement logic lives here.

Timing: every configuration decodes every prompt once per round; rounds rotate the order of the
configurations, so a background load that drifts over time hits all of them alike. A configuration's
``speed_ratio`` is the median over rounds of (its tokens/s) / (full decoding's tokens/s in the same
round); ``tokens_per_s`` is its tokens over its median decode time. Decode time excludes the prefill
of ``prompt[:-1]`` and, for ``defer``, the end-of-run flush of the owed work (see docs/DECODING.md).
Before the rounds, each configuration decodes ``WARMUP_TOKENS`` tokens of the first prompt, untimed.

Potential: the readout of prompt + the full model's own greedy continuation (teacher-forced), the
rule simulated on the positions that predicted generated tokens (``sim_skip_ratio``,
``sim_agreement``), and the saturation oracle's skip ratio on the same positions
(``oracle_skip_ratio``: the earliest exit that changes no prediction, zero loss by construction;
not an upper bound on savings under a loss budget, see the budget oracle in `eeutils.analysis.oracle`).

Cost model (block-equivalents of weight multiply-adds per token; attention scores, norms, softmax
and Python overheads are not counted): one block = the active parameters of a block (routed
experts weighted top_k / n_experts), the head = d_model x vocab (``head_cost_blocks`` blocks), a
K/V-only write = the block's q/k/v projections (``kv_cost_blocks``). From these the frame gives
modelled speed-ups in steps, each adding one cost the simulation leaves out:
``potential_speedup`` = 1 / (1 - sim_skip_ratio) (time proportional to blocks run, teacher-forced
exits), ``exit_speedup`` = 1 / (1 - skip_ratio) (the exits the decoder actually took),
``repair_speedup`` = L / (blocks run per token incl. deferred and SSM-state rows + K/V writes), and
``flop_speedup`` = (L + head) / (that + cheap checks + full readouts per token x head), where cheap checks
are the checks that are not a full readout (state cosines, candidate-set heads; ``check_blocks_per_token``,
`CHECK_KINDS` costs) and full readouts include the prediction, verifications and full-head checks.
``check_cost_share`` is the part of that modelled cost spent on checking: cheap checks plus every full
readout beyond the one prediction per token. ``speed_ratio`` is measured.
"""
from __future__ import annotations

import statistics
import sys
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from ..analysis.exits import simulate
from ..analysis.rule_parse import parse_rules as _parse_rules
from ..analysis.rules import ExitRule
from ..arch.loading import LoadedModel
from ..core.checks import check_bools, check_int_array, check_integer, check_real
from ..lens.inputs import token_rows
from ..lens.readout import readout
from ..lens.tuned import resolve_lens
from ..workloads.registry import get_workload
from .baselines import generate_full
from .costs import cost_profile, modelled_speedup, shape_cost
from .decoder import generate_early_exit
from .inputs import as_loaded as _as_loaded
from .result import STRATEGIES, DecodingUnsupported

__all__ = ["DEFAULT_RULES", "CHEAP_RULES", "EAGER_BELOW_TOKENS", "WARMUP_TOKENS", "COLUMNS", "parse_rules", "encode_text",
           "workload_prompts", "cost_profile", "shape_cost", "simulate_potential", "compare_decoding", "batched_skip_ratio"]

DEFAULT_RULES = "static:50%,max_prob:0.9,margin:0.5,entropy:1.0,hidden_saturation:0.99,margin:1.0"
# exit checks that cost at most a few percent of a block (see eeutils.decoding.checks): the candidate-set head
# (never firing: its pure cost; and verified confidence rules), checks every other layer, saturation without a head
CHEAP_RULES = ("margin:1.0/cand=16,max_prob:0.9/cand=16,margin:0.5/cand=16,margin:0.3/cand=16,"
               "margin:0.3/cand=16/every=2,hidden_saturation:0.995/every=2,hidden_saturation:0.95/min=3")

# a readout of fewer tokens uses the eager kernel: the fused one's one-off compile (5-20 CPU seconds per process,
# see docs/BUDGET.md) and Gram matrix (d x vocab x d) cost more than it saves on the few hundred tokens decoded here
EAGER_BELOW_TOKENS = 1024
WARMUP_TOKENS = 2  # the untimed warm-up decode: enough to run every code path (prefill, a step, an exit) once

COLUMNS = [
    "model", "workload", "lens", "rule", "kind", "threshold", "strategy", "n_layers", "n_prompts", "n_tokens",
    "max_new_tokens", "repeats",
    # measured
    "tokens_per_s", "speed_ratio", "driver_vs_generate", "decode_seconds",
    # exits and work
    "mean_exit_layer", "skip_ratio", "layers_per_token", "compute_ratio", "deferred_per_token",
    "state_rows_per_token", "kv_writes_per_token", "owed_per_token", "lens_calls_per_token",
    # checks
    "check", "check_blocks_per_token", "verify_calls_per_token", "failed_verifies_per_token", "host_syncs_per_token",
    # quality
    "agreement", "accuracy",
    # potential (readout-based simulation)
    "sim_skip_ratio", "sim_agreement", "oracle_skip_ratio",
    # cost model
    "head_cost_blocks", "kv_cost_blocks", "potential_speedup", "exit_speedup", "repair_speedup", "flop_speedup",
    "check_cost_share",
]

# ---------------------------------------------------------------------------------------------------
# rules and prompts
# ---------------------------------------------------------------------------------------------------
def parse_rules(rules, n_layers: int) -> list[ExitRule]:
    """Exit rules for a model of `n_layers` blocks (`eeutils.analysis.rule_parse.parse_rules`); None = DEFAULT_RULES.

    rules: a spec string "kind:threshold,..." (static:50% = half depth, rounded, at least 1), or an
    iterable of ExitRule, "kind:threshold" strings, (kind, threshold) tuples or dicts.
    """
    return _parse_rules(rules, n_layers, default=DEFAULT_RULES)


def encode_text(lm: LoadedModel, text: str, special: bool = True) -> list[int]:
    """Token ids of `text`; a model without a tokenizer (random-init) gets its UTF-8 bytes modulo the vocabulary."""
    if lm.tokenizer is not None:
        return lm.encode(text, add_special_tokens=special)
    return [b % lm.vocab_size for b in text.encode("utf-8")]


def workload_prompts(model, workload, n_prompts: int | None = 8, prompt_tokens: int = 48,
                     max_new_tokens: int = 0, seed: int = 0) -> list[tuple[list[int], list[int] | None]]:
    """(prompt ids, answer ids or None) pairs from a workload, for `compare_decoding`.

    workload: a registered name or a Workload (`eeutils.workloads.get_workload`, first n_prompts of
    its seeded subset). Documents with an answer (qa) give their prompt, cut to its last
    `prompt_tokens` tokens (the question stays next to where the answer starts), and the answer's ids;
    plain documents (lm) give their first `prompt_tokens` tokens and no answer. The prompt also
    leaves room for `max_new_tokens` within the model's context.
    """
    lm = _as_loaded(model)
    if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, int) or prompt_tokens < 1:
        raise ValueError(f"prompt_tokens must be a positive int, got {prompt_tokens!r}")
    check_integer("max_new_tokens", max_new_tokens, 0, integral_floats=False)
    if n_prompts is not None:
        check_integer("n_prompts", n_prompts, 1, integral_floats=False)
    wl = get_workload(workload, n_docs=n_prompts, seed=seed)
    limit = prompt_tokens
    if lm.max_length is not None:
        limit = min(limit, lm.max_length - max(int(max_new_tokens), 1) + 1)
        if limit < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the context of "
                             f"{lm.max_length} tokens")
    pairs = []
    for d in wl.docs:
        if d.has_answer:
            ids = encode_text(lm, d.prompt)[-limit:]
            pairs.append((ids, encode_text(lm, d.answer, special=False)))
        else:
            ids = encode_text(lm, d.text)[:limit]
            pairs.append((ids, None))
    pairs = [(ids, ans) for ids, ans in pairs if ids]
    if not pairs:
        raise ValueError(f"workload {wl.name!r} gave no usable prompt")
    return pairs


# ---------------------------------------------------------------------------------------------------
# potential: the readout-based simulation on the same tokens
# ---------------------------------------------------------------------------------------------------
def simulate_potential(model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                       rules: Iterable[ExitRule], lens="logit", lens_settings=None) -> tuple[dict, float]:
    """What `exits.simulate` predicts on the tokens a full greedy decoder produced.

    One readout of every prompt followed by its full-model continuation (teacher-forced: the full
    model's own states); the positions that predicted the generated tokens are scored. Returns
    ({rule label: (skip ratio, agreement of the exited top-1 with the final top-1)}, the saturation
    oracle's skip ratio on the same positions).
    """
    lm = _as_loaded(model)
    seqs, masks = [], []
    for ids, cont in zip(prompts, continuations):
        ids, cont = list(ids), list(cont)
        seq = ids + cont[:-1]
        m = np.zeros(len(seq), dtype=bool)
        m[len(ids) - 1:len(ids) - 1 + len(cont)] = True
        seqs.append(seq)
        masks.append(m)
    kernel = "eager" if sum(map(len, seqs)) < EAGER_BELOW_TOKENS else "auto"
    ro = readout(lm, seqs, progress=False, k=2, lens=lens, lens_settings=lens_settings, kernel=kernel)
    mask = np.concatenate(masks)
    rows = np.flatnonzero(mask)
    L = ro.n_layers
    top1 = ro["top1"]
    cache: dict = {}

    def stats(rule):
        e = simulate(ro, rule, _cache=cache)[rows]
        return float(np.mean((L - e) / L)), float(np.mean(top1[rows, e] == top1[rows, L]))

    out = {rule.label: stats(rule) for rule in rules}
    return out, stats(ExitRule("saturation"))[0]


# ---------------------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------------------
def _as_ids(lm, item, special=True, what="prompt") -> list[int]:
    """Token ids of a prompt or answer: text (not empty) or one sequence of integer ids in the vocabulary."""
    if isinstance(item, str):
        if not item.strip():
            raise ValueError(f"{what} is empty{' (only whitespace)' if item else ''}: give it some text")
        return encode_text(lm, item, special=special)
    rows = token_rows(item, lm.vocab_size, what)
    if len(rows) != 1:
        raise ValueError(f"{what} must be one sequence of token ids, got {len(rows)} rows")
    return rows[0]


def _accuracy(results, answers) -> float:
    scored = [(r.tokens, a) for r, a in zip(results, answers) if a is not None]
    if not scored:
        return float("nan")
    return float(np.mean([list(tok[:len(a)]) == list(a) for tok, a in scored]))


def _agreement(results, full) -> float:
    same = total = 0
    for r, f in zip(results, full):
        same += sum(1 for a, b in zip(r.tokens, f.tokens) if a == b)
        total += len(f.tokens)
    return same / total if total else float("nan")


def compare_decoding(model, prompts, rules=None, strategies=("propagate", "defer"), max_new_tokens: int = 16,
                     repeats: int = 3, answers=None, *, workload: str = "", hf_baseline: bool = True,
                     stop_at_eos: bool = False, include_full: bool = True, warn=None, lens="logit",
                     lens_settings=None) -> pd.DataFrame:
    """Realised early-exit decoding vs full greedy decoding vs the simulated potential, one run.

    model: a LoadedModel or a name. prompts: texts or token-id lists (e.g. from `workload_prompts`;
    pairs (prompt, answer) are accepted too, their answers used when `answers` is None). rules: see
    `parse_rules` (None = DEFAULT_RULES). strategies: any of "propagate", "defer". answers: per prompt
    the expected continuation (text or ids) or None; accuracy = exact match of the first tokens.
    repeats: interleaved timing rounds (medians). hf_baseline: also time model.generate, to report
    how the layer-by-layer driver compares (``driver_vs_generate``). stop_at_eos=False keeps every
    generation at max_new_tokens, so all configurations time the same number of tokens.
    include_full: the baseline row (rule "full", strategy "driver", speed_ratio 1).
    lens: the early-exit decoders' lens, "logit" or "tuned" (`generate_early_exit`; the simulation reads the same
    lens; the full baseline is the model itself either way); lens_settings: the tuned lens' training budget.
    Configurations the decoder cannot run (DecodingUnsupported) are left out with a warning.

    Returns one row per (model, rule, strategy); columns `COLUMNS` (see the module docstring).
    """
    lm = _as_loaded(model)
    check_bools(hf_baseline=hf_baseline, stop_at_eos=stop_at_eos, include_full=include_full)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
        raise TypeError(f"prompts must be a list of prompts (texts or token-id lists), got {type(prompts).__name__}"
                        + (": wrap one prompt in a list, [prompt]" if isinstance(prompts, str) else ""))
    warn = warn or (lambda msg: print(f"[decode_eval] {msg}", file=sys.stderr))
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if isinstance(strategies, str):
        strategies = [strategies]
    if not isinstance(strategies, (list, tuple)):
        raise TypeError(f"strategies must be a list of {STRATEGIES}, got {type(strategies).__name__}")
    strategies = list(strategies)
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ValueError(f"strategies must be a non-empty subset of {STRATEGIES}, got {strategies!r}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    if answers is None and all(isinstance(p, tuple) and len(p) == 2 and not isinstance(p[0], (int, np.integer))
                               for p in prompts):
        prompts, answers = [p for p, _ in prompts], [a for _, a in prompts]
    if answers is not None:
        if isinstance(answers, (str, bytes)) or not isinstance(answers, Iterable):
            raise TypeError(f"answers must be a list (one expected continuation or None per prompt), got "
                            f"{type(answers).__name__}")
        answers = list(answers)
        if len(answers) != len(prompts):
            raise ValueError(f"answers has {len(answers)} entries for {len(prompts)} prompts")
    ids = [_as_ids(lm, p, what=f"prompts[{i}]") for i, p in enumerate(prompts)]
    ans = [None if a is None else _as_ids(lm, a, special=False, what=f"answers[{i}]")
           for i, a in enumerate(answers or [None] * len(ids))]
    L = lm.n_layers
    rule_list = parse_rules(rules, L)
    kw = dict(stop_at_eos=stop_at_eos)
    # translators resolved once (trained or read from the cache), then passed to every run as a TunedLens
    translator, lens_meta = resolve_lens(lm, lens, lens_settings)
    lens, lens_settings = (translator if translator is not None else "logit"), None

    n_new = max_new_tokens
    cells = [("full", "driver", lambda p, n=n_new: generate_full(lm, p, n, **kw))]
    if hf_baseline:
        cells.append(("full", "hf", lambda p, n=n_new: generate_full(lm, p, n, backend="hf", **kw)))
    for rule in rule_list:
        for strategy in strategies:
            cells.append((rule, strategy, lambda p, n=n_new, rule=rule, strategy=strategy: generate_early_exit(
                lm, p, rule, max_new_tokens=n, strategy=strategy, return_trace=False, lens=lens,
                lens_settings=lens_settings, **kw)))
    # warm-up (allocator, first-call overheads) on a short decode; configurations the decoder refuses drop out here
    kept = []
    for cell in cells:
        try:
            cell[2](ids[0], min(WARMUP_TOKENS, max_new_tokens))
            kept.append(cell)
        except DecodingUnsupported as err:
            if cell[0] == "full" and cell[1] == "driver":
                raise
            warn(f"{lm.name}: {cell[0] if isinstance(cell[0], str) else cell[0].label} / {cell[1]} left out: {err}")
    cells = kept
    times: list[list[float]] = [[] for _ in cells]
    results: list[list] = [[] for _ in cells]
    for rep in range(repeats):
        k = rep % len(cells)
        for i in list(range(k, len(cells))) + list(range(k)):
            res = [cells[i][2](p) for p in ids]
            times[i].append(sum(r.decode_seconds for r in res))
            results[i] = res
    full = results[0]
    n_full = sum(r.n_tokens for r in full)

    def ratio(i):
        n = sum(r.n_tokens for r in results[i])
        return statistics.median((n / t) / (n_full / tf) for t, tf in zip(times[i], times[0]))

    hf_i = next((i for i, c in enumerate(cells) if c[1] == "hf"), None)
    driver_vs_generate = 1.0 / ratio(hf_i) if hf_i is not None else float("nan")
    sim, oracle = simulate_potential(lm, ids, [r.tokens for r in full], rule_list, lens=lens)
    cost = cost_profile(lm)
    h, kvc = cost["head_cost_blocks"], cost["kv_cost_blocks"]
    common = dict(model=lm.name, workload=workload, lens=lens_meta["lens"], n_layers=L, n_prompts=len(ids),
                  max_new_tokens=max_new_tokens, repeats=repeats, driver_vs_generate=driver_vs_generate,
                  oracle_skip_ratio=oracle, head_cost_blocks=h, kv_cost_blocks=kvc)

    def row(i, rule_label, kind, threshold, strategy, sim_skip, sim_agree, check="none"):
        res = results[i]
        n = sum(r.n_tokens for r in res)
        blocks = sum(r.layers_computed for r in res) / n
        kv = sum(r.kv_writes for r in res) / n
        lens = sum(r.lens_calls for r in res) / n
        checks = sum(sum(r.check_macs.values()) for r in res) / n / cost["block_macs"]
        model = modelled_speedup(L, h, kvc, blocks, kv, checks, lens)
        skip = float(np.mean(np.concatenate([(L - np.asarray(r.exit_layers)) / L for r in res])))
        t_med = statistics.median(times[i])
        return dict(
            common, rule=rule_label, kind=kind, threshold=threshold, strategy=strategy, n_tokens=n,
            tokens_per_s=n / t_med, speed_ratio=1.0 if i == 0 else ratio(i), decode_seconds=t_med,
            mean_exit_layer=float(np.mean(np.concatenate([np.asarray(r.exit_layers) for r in res]))),
            skip_ratio=skip, layers_per_token=blocks, compute_ratio=blocks / L,
            deferred_per_token=sum(r.deferred_rows for r in res) / n,
            state_rows_per_token=sum(r.state_rows for r in res) / n, kv_writes_per_token=kv,
            owed_per_token=sum(r.owed_rows for r in res) / n, lens_calls_per_token=lens,
            agreement=_agreement(res, full), accuracy=_accuracy(res, ans),
            sim_skip_ratio=sim_skip, sim_agreement=sim_agree,
            potential_speedup=1.0 / (1.0 - sim_skip) if sim_skip < 1 else float("inf"),
            exit_speedup=1.0 / (1.0 - skip) if skip < 1 else float("inf"),
            repair_speedup=L / (blocks + kv * kvc),
            check=check, check_blocks_per_token=checks,
            verify_calls_per_token=sum(r.verify_calls for r in res) / n,
            failed_verifies_per_token=sum(r.failed_verifies for r in res) / n,
            host_syncs_per_token=sum(r.host_syncs for r in res) / n,
            flop_speedup=model["flop_speedup"], check_cost_share=model["check_cost_share"])

    rows = []
    if include_full:
        rows.append(row(0, "full", "full", float("nan"), "driver", 0.0, 1.0))
    for i, cell in enumerate(cells):
        rule, strategy = cell[0], cell[1]
        if isinstance(rule, str):
            continue
        s_skip, s_agree = sim[rule.label]
        rows.append(row(i, rule.label, rule.kind, float(rule.threshold), strategy, s_skip, s_agree, rule.check))
    return pd.DataFrame(rows, columns=COLUMNS)


# ---------------------------------------------------------------------------------------------------
# batching
# ---------------------------------------------------------------------------------------------------
def batched_skip_ratio(exit_layers, n_layers: int, batch_sizes=(1, 2, 4, 8, 16, 32), n_draws: int = 500,
                       seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Skip ratio left when tokens are decoded in batches that run until their deepest token exits.

    exit_layers: per-token exit layers (1..L), e.g. ``exits.simulate(readout, rule)``. A batch of B
    tokens (one per concurrent sequence, drawn at random without replacement from the pool) runs
    its blocks as one tensor, so it can stop only after max(exit) over its tokens: its skip ratio
    is (L - max exit) / L. Without regrouping tokens between layers (as most serving stacks), this
    is what exits save at batch size B; B = 1 gives the per-token skip ratio.
    Returns batch_size, skip_ratio (mean over n_draws batches), lo, hi (the ci range of the
    per-batch values), n_tokens.
    """
    L = check_integer("n_layers", n_layers, 1, integral_floats=False)
    check_integer("n_draws", n_draws, 1, integral_floats=False)
    check_integer("seed", seed, 0, integral_floats=False)
    check_real("ci", ci, 0, 1, lo_open=True, hi_open=True)
    e = check_int_array("exit_layers", exit_layers).reshape(-1)
    if e.size == 0:
        raise ValueError("no exit layers given")
    if e.min() < 0 or e.max() > L:
        raise ValueError(f"exit layers must lie in 0..{L}, got {e.min()}..{e.max()}")
    rng = np.random.default_rng(seed)
    q = (1 - ci) / 2
    rows = []
    for b in batch_sizes if isinstance(batch_sizes, (list, tuple, np.ndarray)) else [batch_sizes]:
        b = check_integer("batch_sizes", b, 1, integral_floats=False)
        if b < 1:
            raise ValueError(f"batch sizes must be >= 1, got {b}")
        if b > e.size:
            continue
        draws = np.stack([rng.choice(e, size=b, replace=False) for _ in range(n_draws)]) if b > 1 else e[:, None]
        skip = (L - draws.max(axis=1)) / L
        rows.append(dict(batch_size=b, skip_ratio=float(skip.mean()), lo=float(np.quantile(skip, q)),
                         hi=float(np.quantile(skip, 1 - q)), n_tokens=int(e.size)))
    return pd.DataFrame(rows, columns=["batch_size", "skip_ratio", "lo", "hi", "n_tokens"])
