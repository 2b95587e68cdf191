"""The vocabulary sweep of `readout_bench.py --vocab-sweep`: one model shape (default Gemma-3-270M's: 18 layers,
d=640, random init, fp32) at several vocabulary sizes, so the readout's ratio to its floor is seen across sizes
in one run.

    .venv/bin/python benchmarks/readout_bench.py --vocab-sweep 2048,50257,128256,262144 \\
        --tokens 512 --doc-len 128 --repeats 2 --out sweep.json

Per vocabulary, three parts (all with the methods of `lens_methods.py`):
  check   eeutils.readout vs the naive lens on --check-tokens tokens, in this process: top-1 and rank_of_final
          identical?, max |diff| per statistic, max relative diff of entropy / KL / CE (they grow with log V)
  time    the paired mode: ONE process times floor, readout and readout_eager each between two plain forwards,
          --repeats rounds; readout / floor is taken per round from the ratios to the forwards around each
          method, so load drifting over minutes cancels. naive (where it fits) is timed once in a process of its
          own: in the same rotation its GiBs of logits, allocated and freed, slowed the forwards and the method
          after it (at 50k the floor followed it in three rounds of five)
  memory  one fresh process per method at --mem-tokens (default --tokens): peak RSS above the RSS after a
          warm-up forward (`readout_bench.worker`)
naive runs only where two [L+1, T, V] fp32 tensors fit in --naive-max-gib; elsewhere its estimate is printed.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np

from lens_methods import STAT_NAMES, agreement, build_model, run_naive, run_readout


def naive_bytes(layers: int, tokens: int, vocab: int) -> int:
    """The naive lens's two [L+1, T, V] fp32 tensors (the per-layer list and its torch.stack)."""
    return 2 * (layers + 1) * tokens * vocab * 4


def _fmt(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def _check(args) -> dict:
    import torch
    a = copy.copy(args)
    a.tokens, a.doc_len = args.check_tokens, min(args.doc_len, args.check_tokens)
    lm, ids = build_model(a)
    with torch.inference_mode():
        ro, nv = run_readout(lm, ids, a), run_naive(lm, ids, a)
    return agreement(ro, nv, STAT_NAMES)


def sweep_main(args, run_child, run_paired):
    import torch
    torch.set_num_threads(args.threads)
    if args.arch == "gpt2" and "--arch" not in " ".join(os.sys.argv):
        args.arch = "gemma3"
    vocabs = [int(v) for v in args.vocab_sweep.split(",") if v.strip()]
    mem_tokens = args.mem_tokens or args.tokens
    layers = 18 if args.arch == "gemma3" else args.layers
    print(f"vocabulary sweep, {args.arch} shape, random init, fp32, {args.clock} clock; {args.tokens} tokens ({args.tokens // args.doc_len}"
          f" x {args.doc_len}); chunk {'auto' if not args.chunk else args.chunk}; {args.threads} threads; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()}", flush=True)
    out = {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "vocabs": {}}
    for V in vocabs:
        args.vocab = V
        row = out["vocabs"][V] = {"loadavg_start": os.getloadavg()}
        base = ["--tokens", str(args.tokens), "--doc-len", str(args.doc_len), "--vocab", str(V), "--layers",
                str(args.layers), "--d-model", str(args.d_model), "--arch", args.arch, "--threads",
                str(args.threads), "--chunk", str(args.chunk), "--k", str(args.k), "--kernel", args.kernel]
        if args.check_tokens:
            c = row["check"] = _check(args)
            worst = max((v["max_abs"], n) for n, v in c.items() if "max_abs" in v)
            rel = max((v["max_rel"], n) for n, v in c.items() if "max_rel" in v)
            print(f"V={V:>6} check ({args.check_tokens} tokens): top1 differs on {c['top1']['differ']:.2%}, "
                  f"rank_of_final on {c['rank_of_final']['differ']:.2%}; max |diff| {worst[0]:.1e} ({worst[1]}); "
                  f"max rel diff {rel[0]:.1e} ({rel[1]})", flush=True)
        naive_ok = naive_bytes(layers, args.tokens, V) <= args.naive_max_gib * 2**30
        res = run_paired(args, "floor,readout,readout_eager", base)
        if naive_ok:  # in a process of its own: its GiBs of logits, allocated and freed, slow the next forwards
            a = copy.copy(args)
            a.repeats = 1
            nv = run_paired(a, "naive", base)
            res["times"]["naive"], res["ratios"]["naive"] = nv["times"]["naive"], nv["ratios"]["naive"]
        rr = [a / b for a, b in zip(res["ratios"]["readout"], res["ratios"]["floor"])]
        row["paired"] = res
        row["readout_over_floor"] = {"median": float(np.median(rr)), "rounds": rr}
        re = [a / b for a, b in zip(res["ratios"]["readout_eager"], res["ratios"]["floor"])]
        row["eager_over_floor"] = {"median": float(np.median(re)), "rounds": re}
        # plain seconds too: on a quiet machine the forward normalisation only adds the forwards' own noise
        sec = {m: float(np.median(res["times"][m])) for m in ("floor", "readout", "readout_eager")}
        row["seconds"] = sec
        # readout / floor from the seconds of the same round (the two run within seconds of each other, so slow drift
        # cancels without dividing by a forward: at 50k a 0.6 s forward's +-10% otherwise dominates the ratio)
        sr = [a / b for a, b in zip(res["times"]["readout"], res["times"]["floor"])]
        row["same_round_seconds"] = {"median": float(np.median(sr)), "rounds": sr}
        row["loadavg_after_timing"] = os.getloadavg()
        print(f"V={V:>6} readout / floor, same-round seconds = {np.median(sr):.3f}  (rounds: "
              f"{', '.join(f'{x:.3f}' for x in sr)})", flush=True)
        print(f"V={V:>6} readout / floor = {np.median(rr):.3f}  (rounds: {', '.join(f'{x:.3f}' for x in rr)}); "
              f"eager kernel / floor = {np.median(re):.3f}; median seconds floor {sec['floor']:.2f}, readout "
              f"{sec['readout']:.2f} ({sec['readout'] / sec['floor']:.3f}x), eager {sec['readout_eager']:.2f} "
              f"({sec['readout_eager'] / sec['floor']:.3f}x); "
              f"load {row['loadavg_after_timing'][0]:.1f}", flush=True)
        mem_naive_ok = naive_bytes(layers, mem_tokens, V) <= args.naive_max_gib * 2**30
        row["memory"] = {}
        for m in [m for m in args.mem_methods.split(",") if m] + (["naive"] if mem_naive_ok and args.mem_methods else []):
            r = run_child(args, m, base + ["--tokens", str(mem_tokens)])
            row["memory"][m] = r
            print(f"V={V:>6} memory at {mem_tokens} tokens  {m:8s} "
                  + (r.get("error") or f"peak +{_fmt(r['peak_delta'])} ({r['seconds']:.1f} s)"), flush=True)
        for t in sorted({mem_tokens, 2048}):
            row.setdefault("naive_estimate", {})[t] = naive_bytes(layers, t, V)
    _table(out, vocabs, mem_tokens, layers)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, default=float))
        print(f"wrote {args.out}")


def _table(out, vocabs, mem_tokens, layers):
    print()
    print("| vocab | readout / floor (same-round seconds, median; rounds) | readout / floor (paired with forwards, median; rounds) | floor x forward | readout x forward | naive x forward "
          f"| peak +RSS forward / readout / naive ({mem_tokens} tokens) | naive at 2048 tokens (est.) | "
          "readout / naive@2048 | top-1 vs naive | max abs diff | max rel diff (entropy, KL, CE) | load |")
    print("|---" * 13 + "|")
    for V in vocabs:
        row = out["vocabs"][V]
        ratios = row["paired"]["ratios"]
        xf = {m: float(np.median(v)) for m, v in ratios.items()}
        rr = row["readout_over_floor"]
        sr = row["same_round_seconds"]
        mem = {m: r.get("peak_delta") for m, r in row["memory"].items()}
        ro_mem = mem.get("readout")
        est2k = naive_bytes(layers, 2048, V)
        c = row.get("check", {})
        worst = max(((v["max_abs"], n) for n, v in c.items() if "max_abs" in v), default=(float("nan"), ""))
        rel = max(((v["max_rel"], n) for n, v in c.items() if "max_rel" in v), default=(float("nan"), ""))
        head = (f"| {V} | **{sr['median']:.2f}** ({', '.join(f'{x:.2f}' for x in sr['rounds'])}) | {rr['median']:.2f} "
                f"({', '.join(f'{x:.2f}' for x in rr['rounds'])}) | {xf['floor']:.2f} | {xf['readout']:.2f} |")
        print(head + (f" {xf['naive']:.2f} |" if "naive" in xf else " not run |"), end="")
        print(f" {_fmt(mem['forward']) if mem.get('forward') else '-'} / {_fmt(ro_mem) if ro_mem else '-'} / "
              f"{_fmt(mem['naive']) if mem.get('naive') else 'not run'} | {_fmt(est2k)} | "
              f"1/{est2k / ro_mem:.0f} |" if ro_mem else " - | - | - |", end="")
        top = c.get("top1", {}).get("differ", float("nan"))
        print(f" {'identical' if top == 0 else f'{top:.2%} differ'} | {worst[0]:.1e} ({worst[1]}) | {rel[0]:.1e} "
              f"({rel[1]}) | {row['loadavg_start'][0]:.1f}-{row['loadavg_after_timing'][0]:.1f} |")
