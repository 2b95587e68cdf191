"""Realised early-exit decoding vs full greedy decoding, next to the readout-based simulation.

A command-line front end to ``eeutils.decoding.evaluation.compare_decoding`` (the measurement lives in the package;
this script picks models and prompts and prints the table). For each model, workload prompt and
(rule, threshold) x strategy, one run reports:

- speed: tokens/s relative to full greedy decoding through the same layer-by-layer driver
  (the header line says how that driver compares with ``model.generate``);
- layers/tok: blocks actually run per generated token, deferred and SSM-state work included
  (K/V-only writes of ``propagate`` are listed apart: kv/tok; ``defer`` work still owed when
  generation stopped, never needed by a later token and not timed, is owed/tok);
- skip: the exits' skip ratio, mean (L - exit) / L, before any cache repair;
- sim skip / sim agree: what ``eeutils.exits.simulate`` predicts for the same rule on a readout of
  the same prompts followed by the full model's own greedy continuation (teacher-forced);
- agree: share of generated tokens equal to full greedy decoding, position by position;
- acc: exact match of the answer where the workload has answers (qa);
- and per model the oracle skip ratio (saturation oracle) of that simulation: the potential.

Each configuration runs once per round, rounds interleave all configurations (rotating their order, so a
background load drifting over time hits all alike), and each speed is the median over --repeats rounds of
the ratio to full decoding in the same round. Only ratios are printed (absolute times and every column of
``eeutils.decoding.evaluation.COLUMNS`` go to --csv). Prompts: ``eeutils.decoding.evaluation.workload_prompts`` (qa: the
last --prompt-tokens tokens of the question and the answer; plain text: its first --prompt-tokens tokens).

Models: zoo/dense-mid, zoo/moe-mid, zoo/ssm-mid when data/zoo has them, otherwise random-init
models of the same shapes (speed is then representative, agreement and accuracy are not: a
random model's predictions mean nothing, and prompts are encoded byte by byte).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decode_bench.py --quick
    .venv/bin/python benchmarks/decode_bench.py --models zoo/dense-mid --rules "max_prob:0.9,static:50%"
    .venv/bin/python benchmarks/decode_bench.py --models shape/gemma-3-270m --rules "margin:1.0,margin:1.0/cand=16"

``shape/<name>`` builds a random-init model in a real model's published shape (`REAL_SHAPES`): the cost of
the checks is representative, agreement is not. Real checkpoints (``real/<name>``) load like any model.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eeutils  # noqa: E402
from eeutils.decoding import evaluation as decode_eval  # noqa: E402

DEFAULT_MODELS = ["zoo/dense-mid", "zoo/moe-mid", "zoo/ssm-mid"]
DEFAULT_RULES = decode_eval.DEFAULT_RULES + ",margin:0.3," + decode_eval.CHEAP_RULES
FALLBACK_PROMPTS = [
    ("Q: 12 + 30 = ?\nA:", " 42"), ("Q: 7 + 8 = ?\nA:", " 15"),
    ("Keys: a=3 b=9 c=1. Q: b?\nA:", " 9"), ("Keys: x=5 y=2 z=8. Q: z?\nA:", " 8"),
    ("In the beginning God created the heaven and the earth. And the earth was", None),
    ("def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n", None),
]


# ---------------------------------------------------------------------------------------------------
# models, prompts
# ---------------------------------------------------------------------------------------------------
def _random_model(kind: str):
    """A random-init model with a zoo model's shape (eeutils.zoo.recipes), or a fixed fallback config."""
    from transformers import AutoConfig, AutoModelForCausalLM
    arch = {"dense": "llama", "moe": "moe", "ssm": "mamba2"}[kind]
    try:
        from eeutils.zoo import recipes as R
        cfg = R.FAMILIES[arch][2](R.MID_WIDTH, R.MID_LAYERS)
    except Exception:  # the recipes module changed shape: a config of the same size
        common = dict(hidden_size=128, num_hidden_layers=6, vocab_size=2048, eos_token_id=1, bos_token_id=0,
                      pad_token_id=2)
        cfg = {"llama": lambda: AutoConfig.for_model("llama", intermediate_size=344, num_attention_heads=4,
                                                     max_position_embeddings=128, **common),
               "moe": lambda: AutoConfig.for_model("qwen3_moe", intermediate_size=344, moe_intermediate_size=172,
                                                   num_attention_heads=4, num_key_value_heads=4, head_dim=32,
                                                   num_experts=8, num_experts_per_tok=2,
                                                   max_position_embeddings=128, **common),
               "mamba2": lambda: AutoConfig.for_model("mamba2", expand=2, head_dim=32, num_heads=8, state_size=32,
                                                      n_groups=1, chunk_size=64, **common)}[arch]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    return eeutils.wrap_model(model, name=f"random/{kind}-mid")


# random-init models in the published shapes of the real models (no download): check costs are representative,
# agreement is not. `--models shape/gemma-3-270m shape/smollm2-135m`
REAL_SHAPES = {
    "gemma-3-270m": ("gemma3_text", dict(hidden_size=640, num_hidden_layers=18, vocab_size=262144,
                                         intermediate_size=2048, num_attention_heads=4, num_key_value_heads=1,
                                         head_dim=256, max_position_embeddings=2048)),
    "smollm2-135m": ("llama", dict(hidden_size=576, num_hidden_layers=30, vocab_size=49152, intermediate_size=1536,
                                   num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                                   max_position_embeddings=2048)),
}


def _shape_model(name: str):
    from transformers import AutoConfig, AutoModelForCausalLM
    if name not in REAL_SHAPES:
        raise SystemExit(f"unknown shape {name!r}; choose one of {sorted(REAL_SHAPES)}")
    model_type, kw = REAL_SHAPES[name]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kw))
    return eeutils.wrap_model(model, name=f"shape/{name}")


def load_models(names: list[str]):
    have = set(eeutils.list_zoo())
    out = []
    for name in names:
        if name.startswith("shape/"):
            out.append(_shape_model(name[len("shape/"):]))
            continue
        short = name[4:] if name.startswith("zoo/") else name
        if name.startswith("zoo/") and short not in have:
            kind = short.split("-")[0]
            if kind in ("dense", "moe", "ssm"):
                print(f"[bench] {name} not built (data/zoo): using a random-init model of its shape", file=sys.stderr)
                out.append(_random_model(kind))
                continue
            print(f"[bench] {name} not available, skipped", file=sys.stderr)
            continue
        out.append(eeutils.load_model(name))
    return out


def model_prompts(lm, workload: str | None, n_docs: int, prompt_tokens: int, max_new: int):
    """(workload name, [(prompt ids, answer ids or None)]) for one model: eeutils.decoding.evaluation.workload_prompts,
    or the built-in prompts when the workload cannot be loaded."""
    if workload:
        try:
            return workload, decode_eval.workload_prompts(lm, workload, n_prompts=n_docs, prompt_tokens=prompt_tokens,
                                                          max_new_tokens=max_new)
        except Exception as err:  # offline without the workload, or no workloads module
            print(f"[bench] workload {workload!r} unavailable ({err}); using the built-in prompts", file=sys.stderr)
    limit = prompt_tokens if lm.max_length is None else min(prompt_tokens, lm.max_length - max_new)
    pairs = [(decode_eval.encode_text(lm, text)[-limit:],
              None if ans is None else decode_eval.encode_text(lm, ans, special=False))
             for text, ans in FALLBACK_PROMPTS[:n_docs]]
    return "builtin", pairs


def bench_model(lm, workload, rule_spec, strategies, max_new, repeats, n_docs, prompt_tokens):
    """One model's rows: eeutils.decoding.evaluation.compare_decoding on its prompts (interleaved rounds, medians)."""
    wl_name, pairs = model_prompts(lm, workload, n_docs, prompt_tokens, max_new)
    frame = decode_eval.compare_decoding(lm, [p for p, _ in pairs], rule_spec, strategies=strategies,
                                         max_new_tokens=max_new, repeats=repeats, answers=[a for _, a in pairs],
                                         workload=wl_name, hf_baseline=True)
    return frame.to_dict("records")


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------
_COLS = [("rule", "{:<36}"), ("strategy", "{:<9}"), ("speed_ratio", "{:>6.2f}x"), ("flop_speedup", "{:>6.2f}x"),
         ("layers_per_token", "{:>7.2f}"), ("kv_writes_per_token", "{:>6.2f}"), ("owed_per_token", "{:>8.2f}"),
         ("lens_calls_per_token", "{:>8.2f}"), ("check_blocks_per_token", "{:>7.3f}"),
         ("check_cost_share", "{:>7.1%}"), ("skip_ratio", "{:>6.1%}"), ("sim_skip_ratio", "{:>8.1%}"),
         ("agreement", "{:>6.1%}"), ("sim_agreement", "{:>9.1%}"), ("accuracy", "{:>6.1%}")]
_HEAD = ["rule", "strategy", "speed", "flops", "layers/tok", "kv/tok", "owed/tok", "heads/tok", "chk/tok", "chk %",
         "skip", "sim skip", "agree", "sim agree", "acc"]


def _fmt(fmt, v):
    if isinstance(v, float) and not np.isfinite(v):
        m = re.search(r"[<>](\d+)", fmt)
        width = int(m.group(1)) if m else 6
        return "-".rjust(width + (1 if fmt.endswith("x") else 0))
    return fmt.format(v)


def print_table(rows):
    by_model: dict = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    for model, rs in by_model.items():
        base = rs[0]
        print(f"\n## {model}  (L={base['n_layers']}, workload={base['workload']}, {base['n_prompts']} prompts x "
              f"{base['max_new_tokens']} tokens, median of {base['repeats']})")
        print(f"full decoding: the driver runs at {_fmt('{:.2f}', base['driver_vs_generate'])}x the speed of "
              f"model.generate; oracle skip ratio (simulated, saturation) {base['oracle_skip_ratio']:.1%}; full "
              f"accuracy {_fmt('{:.1%}', base['accuracy'])}")
        widths = [len(f.format(0.0) if "f" in f or "%" in f else f.format("")) for _, f in _COLS]
        print("  ".join(h.rjust(w) if i > 1 else h.ljust(w) for i, (h, w) in enumerate(zip(_HEAD, widths))))
        for r in rs:
            print("  ".join(_fmt(f, r[c]) for c, f in _COLS))
        print(f"head = {base['head_cost_blocks']:.2f} blocks, K/V write = {base['kv_cost_blocks']:.2f} blocks; "
              "heads/tok = full readouts per token (prediction included), chk/tok = cheap checks in blocks, "
              "chk % = share of the modelled cost spent on checking, flops = modelled speed-up")
    print_equal_agreement(rows)


def print_equal_agreement(rows, levels=(1.0, 0.95)):
    """The best configuration per model at each agreement level (by modelled speed-up, which timing noise cannot
    bias), its measured speed and its cost split."""
    import pandas as pd
    from eeutils.decoding.summary import equal_agreement
    frame = pd.DataFrame(rows).assign(label=lambda d: d.model)
    print("\n## At equal agreement with full decoding (best modelled speed-up, its measured speed beside; "
          "cost split in blocks per token)")
    print(f"{'model':<18}{'agree>=':>8}  {'rule':<36}{'strategy':<10}{'speed':>7}{'flops':>7}{'oracle':>8}"
          f"{'full':>7}{'blocks':>7}{'repair':>7}{'checks':>7}{'pred':>6}")
    for r in equal_agreement(frame, levels).itertuples():
        if r.rule is None:
            print(f"{r.label:<18}{r.level:>8.0%}  (no configuration exits early at this agreement)")
            continue
        print(f"{r.label:<18}{r.level:>8.0%}  {r.rule:<36}{r.strategy:<10}{r.speed_ratio:>6.2f}x{r.flop_speedup:>6.2f}x"
              f"{r.oracle_speedup:>7.2f}x{r.full_blocks:>7.2f}{r.blocks:>7.2f}{r.repair:>7.2f}{r.checks:>7.2f}"
              f"{r.prediction:>6.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--workload", default="zoo-task", help="eeutils workload name ('' for the built-in prompts)")
    ap.add_argument("--n-docs", type=int, default=8)
    ap.add_argument("--rules", default=DEFAULT_RULES, help="kind:threshold,...; static:50%% = half depth")
    ap.add_argument("--strategies", default="propagate,defer")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=48, help="keep at most this many prompt tokens")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=None, help="write every row (absolute times included) here")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 prompts, 8 tokens, 1 repeat")
    a = ap.parse_args(argv)
    if a.quick:
        a.n_docs, a.max_new_tokens, a.repeats = min(a.n_docs, 3), min(a.max_new_tokens, 8), 1
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    strategies = [s.strip() for s in a.strategies.split(",") if s.strip()]
    rows = []
    for lm in load_models(a.models):
        rows += bench_model(lm, a.workload or None, a.rules, strategies, a.max_new_tokens, a.repeats, a.n_docs,
                            a.prompt_tokens)
    print_table(rows)
    if a.csv:
        import pandas as pd
        pd.DataFrame(rows).to_csv(a.csv, index=False)
        print(f"\nrows written to {a.csv}")
    print(f"\n({time.perf_counter() - t0:.0f} s; speed = tokens/s relative to full decoding with the same driver)")
    return rows


if __name__ == "__main__":
    main()
