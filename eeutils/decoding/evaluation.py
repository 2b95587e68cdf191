"""Realised vs potential early-exit decoding: one tidy frame per model.

`compare_decoding(model, prompts, rules)` decodes the same prompts with full greedy decoding and with
every (rule, strategy) of `eeutils.decoding.generate_early_exit`, times them in interleaved rounds,
and sets beside each configuration what the readout-based simulation (`eeutils.exits.simulate`)
predicts for the same rule on the same tokens. The notebooks and `benchmarks/decode_bench.py` call
it; the measurement logic lives here.

Timing (`eeutils.decoding.timing`): every configuration decodes every prompt once per round; rounds rotate
the order of the configurations, so a background load that drifts over time hits all of them alike. A configuration's
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

import sys
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..analysis.exits import simulate
from ..analysis.rule_parse import parse_rules
from ..analysis.rules import CHEAP_CHECKS, DECODE_DEFAULTS, ExitRule
from ..arch.loading import LoadedModel
from ..core.checks import check_bools, check_count, check_int_array, check_integer, check_real
from ..lens.inputs import token_rows
from ..lens.readout import readout
from ..lens.lenses import as_lens
from ..workloads.registry import get_workload
from .baselines import generate_full
from .costs import DecoderShape, cost_profile, modelled_speedup, shape_cost
from .decoder import generate_early_exit
from .inputs import as_loaded as _as_loaded
from .result import STRATEGIES, DecodingUnsupported
from .timing import Rounds, timed_rounds

__all__ = ["DEFAULT_RULES", "CHEAP_RULES", "EAGER_BELOW_TOKENS", "WARMUP_TOKENS", "COLUMNS", "DecodeSettings",
           "parse_rules", "encode_text", "workload_prompts", "cost_profile", "shape_cost", "DecoderShape",
           "simulate_potential", "compare_decoding", "batched_skip_ratio"]

# the rule table's default decoding comparison: each realisable kind at its `decode` threshold, then the rule that
# never fires (its speed is the pure cost of the checks); `compare_decoding` decodes these when given no rules
DEFAULT_RULES = ",".join(DECODE_DEFAULTS)
# exit checks that cost at most a few percent of a block (see eeutils.decoding.checks), the table's `cheap` variants:
# the candidate-set head (never firing: its pure cost; and verified confidence rules), checks every other layer,
# saturation without a head
CHEAP_RULES = ",".join(CHEAP_CHECKS)

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
# prompts (rules: `parse_rules`, the one parser of `eeutils.analysis.rule_parse`)
# ---------------------------------------------------------------------------------------------------
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
    prompt_tokens = check_count("prompt_tokens", prompt_tokens)
    check_count("max_new_tokens", max_new_tokens, 0)
    check_count("n_prompts", n_prompts, 1, allow_none=True)
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
@dataclass(frozen=True)
class DecodeSettings:
    """The settings of one `compare_decoding` run (its keyword arguments may give them one by one).

    strategies: any of "propagate", "defer". max_new_tokens: tokens generated per prompt. repeats: interleaved
    timing rounds (medians). workload: the name written in the frame. hf_baseline: also time model.generate, to
    report how the layer-by-layer driver compares (``driver_vs_generate``). stop_at_eos=False keeps every
    generation at max_new_tokens, so all configurations time the same number of tokens. include_full: the
    baseline row (rule "full", strategy "driver", speed_ratio 1). lens: the early-exit decoders' lens, "logit"
    or "tuned" (`generate_early_exit`; the simulation reads the same lens; the full baseline is the model itself
    either way); lens_settings: the tuned lens' training budget.
    """

    strategies: tuple[str, ...] = ("propagate", "defer")
    max_new_tokens: int = 16
    repeats: int = 3
    workload: str = ""
    hf_baseline: bool = True
    stop_at_eos: bool = False
    include_full: bool = True
    lens: object = "logit"
    lens_settings: object = None

    def __post_init__(self):
        object.__setattr__(self, "repeats", check_count("repeats", self.repeats))
        object.__setattr__(self, "max_new_tokens", check_count("max_new_tokens", self.max_new_tokens))
        check_bools(hf_baseline=self.hf_baseline, stop_at_eos=self.stop_at_eos, include_full=self.include_full)
        if not isinstance(self.strategies, (str, list, tuple)):
            raise TypeError(f"strategies must be a list of {STRATEGIES}, got {type(self.strategies).__name__}")
        strategies = [self.strategies] if isinstance(self.strategies, str) else list(self.strategies)
        bad = [s for s in strategies if s not in STRATEGIES]
        if bad or not strategies:
            raise ValueError(f"strategies must be a non-empty subset of {STRATEGIES}, got {strategies!r}")
        object.__setattr__(self, "strategies", tuple(strategies))


@dataclass(frozen=True)
class _Cell:
    """One timed configuration: rule None is a full-decoding baseline (strategy "driver" or "hf");
    decode(prompt, n=max_new_tokens) -> GenerationResult."""

    rule: ExitRule | None
    strategy: str
    decode: Callable

    @property
    def label(self) -> str:
        return "full" if self.rule is None else self.rule.label


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


def _prompt_ids(lm, prompts, answers) -> tuple[list[list[int]], list]:
    """Token ids of the prompts and of their answers (None where a prompt has none); a list of (prompt, answer)
    pairs is split when `answers` is None."""
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
    return ids, [None if a is None else _as_ids(lm, a, special=False, what=f"answers[{i}]")
                 for i, a in enumerate(answers or [None] * len(ids))]


def _cells(lm, rule_list, settings: DecodeSettings, lens) -> list[_Cell]:
    """The full baselines (driver, and model.generate with hf_baseline), then every (rule, strategy)."""
    n_new, kw = settings.max_new_tokens, dict(stop_at_eos=settings.stop_at_eos)
    cells = [_Cell(None, "driver", lambda p, n=n_new: generate_full(lm, p, n, **kw))]
    if settings.hf_baseline:
        cells.append(_Cell(None, "hf", lambda p, n=n_new: generate_full(lm, p, n, backend="hf", **kw)))
    for rule in rule_list:
        for strategy in settings.strategies:
            cells.append(_Cell(rule, strategy, lambda p, n=n_new, rule=rule, strategy=strategy: generate_early_exit(
                lm, p, rule, max_new_tokens=n, strategy=strategy, return_trace=False, lens=lens,
                lens_settings=None, **kw)))
    return cells


def _warm_up(cells: list[_Cell], prompt, n: int, warn, name: str) -> list[_Cell]:
    """Each configuration decodes `n` tokens of `prompt`, untimed (allocator, first-call overheads); those the
    decoder refuses (DecodingUnsupported) are left out with a warning, except the full driver (raised)."""
    kept = []
    for cell in cells:
        try:
            cell.decode(prompt, n)
            kept.append(cell)
        except DecodingUnsupported as err:
            if cell.rule is None and cell.strategy == "driver":
                raise
            warn(f"{name}: {cell.label} / {cell.strategy} left out: {err}")
    return kept


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


def _speedup(skip: float) -> float:
    return 1.0 / (1.0 - skip) if skip < 1 else float("inf")


# frame column -> the GenerationResult counter it averages per generated token
_PER_TOKEN = {"layers_per_token": "layers_computed", "deferred_per_token": "deferred_rows",
              "state_rows_per_token": "state_rows", "kv_writes_per_token": "kv_writes", "owed_per_token": "owed_rows",
              "lens_calls_per_token": "lens_calls", "verify_calls_per_token": "verify_calls",
              "failed_verifies_per_token": "failed_verifies", "host_syncs_per_token": "host_syncs"}


def _work(res, n_layers: int, cost: dict) -> dict:
    """Exits, per-token work and checks of one configuration's results, and the modelled speed-ups they give."""
    L, n = n_layers, sum(r.n_tokens for r in res)
    out = {col: sum(getattr(r, attr) for r in res) / n for col, attr in _PER_TOKEN.items()}
    exits = np.concatenate([np.asarray(r.exit_layers) for r in res])
    skip = float(np.mean((L - exits) / L))
    blocks, kv, kvc = out["layers_per_token"], out["kv_writes_per_token"], cost["kv_cost_blocks"]
    checks = sum(sum(r.check_macs.values()) for r in res) / n / cost["block_macs"]
    model = modelled_speedup(L, cost["head_cost_blocks"], kvc, blocks, kv, checks, out["lens_calls_per_token"])
    return dict(out, n_tokens=n, mean_exit_layer=float(np.mean(exits)), skip_ratio=skip, compute_ratio=blocks / L,
                check_blocks_per_token=checks, exit_speedup=_speedup(skip), repair_speedup=L / (blocks + kv * kvc),
                flop_speedup=model["flop_speedup"], check_cost_share=model["check_cost_share"])


def _row(i: int, cell: _Cell, rounds: Rounds, sim: dict, answers, common: dict, cost: dict) -> dict:
    """One frame row: `common` (the model's facts), then configuration i's identity, measured timing, work,
    quality and simulated potential."""
    rule = cell.rule
    s_skip, s_agree = (0.0, 1.0) if rule is None else sim[rule.label]
    res = rounds.results[i]
    return dict(common, rule=cell.label, kind="full" if rule is None else rule.kind,
                threshold=float("nan") if rule is None else float(rule.threshold), strategy=cell.strategy,
                check="none" if rule is None else rule.check, tokens_per_s=rounds.tokens_per_s(i),
                speed_ratio=1.0 if i == 0 else rounds.speed_ratio(i), decode_seconds=rounds.median_seconds(i),
                agreement=_agreement(res, rounds.results[0]), accuracy=_accuracy(res, answers),
                sim_skip_ratio=s_skip, sim_agreement=s_agree, potential_speedup=_speedup(s_skip),
                **_work(res, common["n_layers"], cost))


def compare_decoding(model, prompts, rules=None, *, answers=None, settings: DecodeSettings | None = None, warn=None,
                     **options) -> pd.DataFrame:
    """Realised early-exit decoding vs full greedy decoding vs the simulated potential, one run.

    model: a LoadedModel or a name. prompts: texts or token-id lists (e.g. from `workload_prompts`;
    pairs (prompt, answer) are accepted too, their answers used when `answers` is None). rules: see
    `parse_rules` (None = DEFAULT_RULES). answers: per prompt the expected continuation (text or ids) or
    None; accuracy = exact match of the first tokens. settings: a `DecodeSettings`, or its fields as keyword
    arguments (strategies=, max_new_tokens=, repeats=, workload=, hf_baseline=, stop_at_eos=, include_full=,
    lens=, lens_settings=; they override `settings`). warn: called with a message for each configuration the
    decoder cannot run (DecodingUnsupported), which is left out.

    Returns one row per (model, rule, strategy); columns `COLUMNS` (see the module docstring).
    """
    s = replace(settings or DecodeSettings(), **options)  # validated again (DecodeSettings.__post_init__)
    lm = _as_loaded(model)
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
        raise TypeError(f"prompts must be a list of prompts (texts or token-id lists), got {type(prompts).__name__}"
                        + (": wrap one prompt in a list, [prompt]" if isinstance(prompts, str) else ""))
    warn = warn or (lambda msg: print(f"[decode_eval] {msg}", file=sys.stderr))
    ids, ans = _prompt_ids(lm, prompts, answers)
    L = lm.n_layers
    rule_list = parse_rules(rules, L, default=DEFAULT_RULES)
    # the lens resolved once (translators trained or read from the cache), then passed to every run as an object
    lens = as_lens(lm, s.lens, s.lens_settings)
    lens_meta = lens.record()
    cells = _warm_up(_cells(lm, rule_list, s, lens), ids[0], min(WARMUP_TOKENS, s.max_new_tokens), warn, lm.name)
    rounds = timed_rounds([c.decode for c in cells], ids, s.repeats)
    hf_i = next((i for i, c in enumerate(cells) if c.strategy == "hf"), None)
    sim, oracle = simulate_potential(lm, ids, [r.tokens for r in rounds.results[0]], rule_list, lens=lens)
    cost = cost_profile(lm)
    common = dict(model=lm.name, workload=s.workload, lens=lens_meta["lens"], n_layers=L, n_prompts=len(ids),
                  max_new_tokens=s.max_new_tokens, repeats=s.repeats, oracle_skip_ratio=oracle,
                  driver_vs_generate=1.0 / rounds.speed_ratio(hf_i) if hf_i is not None else float("nan"),
                  head_cost_blocks=cost["head_cost_blocks"], kv_cost_blocks=cost["kv_cost_blocks"])
    rows = [_row(i, c, rounds, sim, ans, common, cost) for i, c in enumerate(cells)
            if c.rule is not None or (c.strategy == "driver" and s.include_full)]
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
