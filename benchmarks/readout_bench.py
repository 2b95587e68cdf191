#!/usr/bin/env python
"""Side-by-side benchmark: plain forward vs eeutils.readout vs a naive all-layers logit lens (and
TransformerLens / nnsight when installed), on one model and one token sequence.

Every (method, repeat) runs in a fresh subprocess: the model is built (or loaded) there, a short warm-up
forward touches all weights, the peak-RSS mark is reset (/proc/self/clear_refs), and the method runs once.
Peak memory is the process's peak RSS during the method minus its RSS just before it. Repeats are
interleaved (round r runs every method once, in a rotated order) so that machine load hits all methods
alike; the table shows medians.

    .venv/bin/python benchmarks/readout_bench.py --repeats 3 --once tlens,nnsight --out bench.json

Methods:
  forward      model(input_ids).logits
  floor        forward + the L per-layer unembedding matmuls into one reused buffer, no statistics:
               the measured cost of the FLOP bound
  readout      eeutils.readout (the kit's streaming lens; its default kernel: fused from a 16k vocabulary up)
  readout_eager  the same with kernel="eager" (the statistics as separate torch passes)
  readout_v0   the readout loop and statistic kernels as they were before the pass-count work (reference)
  naive        output_hidden_states=True, final norm + head on every layer, all [L+1, T, V] logits kept,
               full log_softmax per layer, the same statistics
  tlens        TransformerLens (TransformerBridge): run_with_cache, accumulated_resid(apply_ln=True),
               unembed every layer, same statistics as naive
  nnsight      nnsight trace saving final norm + head of every block output, same statistics as naive

The methods themselves (model construction, the reference kernels, each lens) are in
`benchmarks/lens_methods.py`; this script runs them in subprocesses and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lens_methods import (LOGIT_STATS, STAT_NAMES, agreement, build_model, peak_rss, reset_peak_rss, rss,  # noqa: E402
                          flop_counts, run_floor, run_forward, run_naive, run_nnsight, run_readout,
                          run_readout_eager, run_readout_v0, run_tlens, warm_readout)

# wall: seconds elapsed; cpu: CPU seconds of this process (all threads), which on a loaded machine counts the
# work done rather than the time spent waiting for a core (use it with --threads 1: no spinning threads)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
METHODS = ("forward", "floor", "readout", "readout_eager", "readout_v0", "naive", "tlens", "nnsight")


def _print_table_head(flops: dict, bound_ratio: float, header: str) -> None:
    """The FLOP accounting, then a table header."""
    print()
    print(f"FLOPs: {flops['formula']}")
    print(f"  forward {flops['forward_flops'] / 1e9:.0f} GFLOP, lens {flops['lens_flops'] / 1e9:.0f} GFLOP, "
          f"bound {flops['bound_flops'] / 1e9:.0f} GFLOP; bound/forward = {bound_ratio:.2f}")
    print()
    print(header)
    print("-" * len(header))

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2048, help="tokens in total")
    ap.add_argument("--doc-len", type=int, default=512, help="tokens per document (tokens / doc-len docs)")
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--arch", choices=("gpt2", "llama", "gemma3"), default="gpt2",
                    help="random-init architecture (gemma3: Gemma-3-270M's shape, 18 layers, d=640)")
    ap.add_argument("--model", default=None, help="a real or zoo model for eeutils.load_model instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=0, help="readout chunk_tokens (0: the readout's choice for the "
                    "vocabulary, 128-256)")
    ap.add_argument("--kernel", default="auto", choices=("auto", "fused", "eager"),
                    help="the readout method's statistic kernel (readout_eager always uses 'eager')")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--variants", default="", help="extra readout runs as name=chunk pairs, e.g. 'readout_c512=512'")
    ap.add_argument("--once", default="", help="comma-separated methods to run in the first round only "
                    "(slow ones, e.g. 'tlens,nnsight')")
    ap.add_argument("--paired", default="", help="instead of the subprocess table: time these methods in ONE "
                    "process, each between two plain forwards, and report time / forward-around-it "
                    "(e.g. 'floor,readout,readout_v0,readout_c512=512'); memory is not measured in this mode")
    ap.add_argument("--vocab-sweep", default="", help="instead: the same model shape (--arch, default gemma3) at "
                    "these vocabularies, e.g. 2048,50257,128256,262144 (see benchmarks/vocab_sweep.py)")
    ap.add_argument("--check-tokens", type=int, default=64, help="vocab sweep: tokens for the naive-lens check")
    ap.add_argument("--mem-tokens", type=int, default=0, help="vocab sweep: tokens for the peak-memory runs "
                    "(0: --tokens)")
    ap.add_argument("--mem-methods", default="forward,readout", help="vocab sweep: methods whose peak memory is "
                    "measured in fresh processes (naive is added where it fits)")
    ap.add_argument("--naive-max-gib", type=float, default=4.0,
                    help="skip the naive lens when its [L+1, T, V] fp32 logits (x2 for the log-softmax) would exceed "
                         "this many GiB (at a 262k vocabulary that is ~2 MB per token per layer); also the vocab "
                         "sweep's limit")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall", help="wall seconds, or CPU seconds of the "
                    "process (steadier on a loaded machine; use with --threads 1)")
    ap.add_argument("--no-check", action="store_true", help="skip comparing the statistics between methods")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    # internal
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stats-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--paired-methods", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def worker(args):
    import torch
    torch.set_num_threads(args.threads)
    name = args.worker
    lm, ids = build_model(args)
    methods = {"forward": run_forward, "floor": run_floor, "readout": run_readout, "readout_eager": run_readout_eager,
               "readout_v0": run_readout_v0, "naive": run_naive, "tlens": run_tlens, "nnsight": run_nnsight}
    chunk = None
    if name not in methods:  # a readout variant name=chunk
        chunk = int(args.variant_chunk)
    with torch.inference_mode():
        lm.model(input_ids=ids[:1, :32], use_cache=False)  # warm-up: touches every weight
        if name == "readout" or chunk:
            warm_readout(lm, ids, args)  # compiles the fused kernel where the readout uses it
        reset_ok = reset_peak_rss()
        base = rss()
        t0 = CLOCKS[args.clock]()
        res = run_readout(lm, ids, args, chunk) if chunk else methods[name](lm, ids, args)
        t1 = CLOCKS[args.clock]()
        if isinstance(res, dict) and "_t0" in res:  # the method loaded things first and started the clock
            base, t0, res = res["_base"], res["_t0"], res["stats"]
    if isinstance(res, str):
        print(json.dumps({"method": name, "skipped": res}))
        return
    peak = peak_rss()
    if args.stats_out and isinstance(res, dict):
        np.savez(args.stats_out, **res)
    print(json.dumps({"method": name, "seconds": t1 - t0, "peak_delta": max(peak - base, 0), "rss_before": base,
                      "peak_reset": reset_ok, "torch_threads": torch.get_num_threads()}))


def paired_worker(args):
    """One process, timing only: every method sandwiched between two plain forwards, so each method's time
    is divided by the forward time measured right around it (load drifts on a shared machine cancel)."""
    import torch
    torch.set_num_threads(args.threads)
    lm, ids = build_model(args)
    names = [m for m in args.paired_methods.split(",") if m]
    fns = {"floor": run_floor, "readout": run_readout, "readout_eager": run_readout_eager,
           "readout_v0": run_readout_v0, "naive": run_naive}
    for name in names:
        if "=" in name:
            label, chunk = name.split("=")
            fns[label] = (lambda c: lambda lm_, ids_, a: run_readout(lm_, ids_, a, c))(int(chunk))
    labels = [n.split("=")[0] for n in names]
    times = {label: [] for label in ["forward"] + labels}
    ratios = {label: [] for label in labels}

    def timed(fn):
        t0 = CLOCKS[args.clock]()
        fn(lm, ids, args)
        return CLOCKS[args.clock]() - t0

    with torch.inference_mode():
        lm.model(input_ids=ids[:1, :32], use_cache=False)
        warm_readout(lm, ids, args)
        f_prev = timed(run_forward)
        times["forward"].append(f_prev)
        for r in range(args.repeats):
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                t = timed(fns[label])
                f_next = timed(run_forward)
                times[label].append(t)
                times["forward"].append(f_next)
                ratios[label].append(t / ((f_prev + f_next) / 2))
                print(json.dumps({"progress": label, "round": r + 1, "seconds": t, "forward_around": [f_prev, f_next]}),
                      flush=True)
                f_prev = f_next
    print(json.dumps({"method": "paired", "times": times, "ratios": ratios}))


# ---------------------------------------------------------------------------------------------- parent
def _run_child(args, method, extra, stats_out=None):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--clock", args.clock] + extra
    if stats_out:
        cmd += ["--stats-out", stats_out]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timed out after {args.timeout}s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        why = "killed (out of memory?)" if p.returncode in (-9, 137) else " | ".join(tail)
        return {"method": method, "error": f"exit {p.returncode}: {why}"}
    return json.loads(lines[-1])


def _fmt_bytes(b):
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def run_paired(args, methods: str, base_args) -> dict:
    """The paired worker in a subprocess, its progress printed: {"times": {...}, "ratios": {...}}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "paired", "--paired-methods", methods,
           "--repeats", str(args.repeats), "--clock", args.clock] + base_args
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    res = None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as p:
        for line in p.stdout:
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            if "progress" in d:
                print(f"  round {d['round']}/{args.repeats}  {d['progress']:12s} {d['seconds']:8.2f} s   forwards "
                      f"around it {d['forward_around'][0]:.2f} / {d['forward_around'][1]:.2f} s", flush=True)
            else:
                res = d
    if res is None:
        raise SystemExit("the paired worker failed")
    return res


def paired_main(args, base_args, flops):
    bound_ratio = flops["bound_flops"] / flops["forward_flops"]
    res = run_paired(args, args.paired, base_args)
    _print_table_head(flops, bound_ratio, f"{'method':13s} {'median s':>9s} {'x forward (median of per-pair ratios)':>38s} "
                                          f"{'x bound':>8s}  per-pair ratios")
    summary = {"forward": {"seconds": float(np.median(res["times"]["forward"])), "seconds_all": res["times"]["forward"]}}
    print(f"{'forward':13s} {summary['forward']['seconds']:9.2f} {1.0:38.2f} {1 / bound_ratio:8.2f}")
    for label, rs in res["ratios"].items():
        xf = float(np.median(rs))
        summary[label] = {"seconds": float(np.median(res["times"][label])), "x_forward": xf,
                          "x_bound": xf / bound_ratio, "ratios": rs, "seconds_all": res["times"][label]}
        print(f"{label:13s} {summary[label]['seconds']:9.2f} {xf:38.2f} {xf / bound_ratio:8.2f}  "
              + ", ".join(f"{x:.2f}" for x in rs))
    print()
    targets = {}
    if "readout" in summary:
        targets["readout_x_bound"] = summary["readout"]["x_bound"]
        print(f"readout: {summary['readout']['x_forward']:.2f} x forward vs bound/forward FLOPs {bound_ratio:.2f} -> "
              f"{summary['readout']['x_bound']:.2f}x the FLOP bound (target <= 1.3)")
        for other in ("floor", "readout_eager", "readout_v0"):
            if other in summary:
                rr = [a / b for a, b in zip(res["ratios"]["readout"], res["ratios"][other])]
                targets[f"readout_over_{other}"] = float(np.median(rr))
                print(f"readout / {other} (same round) = {np.median(rr):.2f}  ({', '.join(f'{x:.2f}' for x in rr)})")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "mode": "paired", "args": {k: v for k, v in vars(args).items() if k not in ("worker", "model_dir")},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_end": os.getloadavg()},
            "flops": flops, "summary": summary, "targets": targets}, indent=1, default=float))
        print(f"wrote {args.out}")


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "paired":
        paired_worker(args)
        return
    if args.vocab_sweep:
        from vocab_sweep import sweep_main
        return sweep_main(args, _run_child, run_paired)
    if args.worker:
        if args.worker.startswith("variant:"):
            args.variant_chunk = args.worker.split(":", 1)[1]
        worker(args)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    base_args = _base_args(args)

    import torch
    torch.set_num_threads(args.threads)
    lm, ids = build_model(args)
    flops = flop_counts(lm, ids)
    tmp = tempfile.TemporaryDirectory(prefix="readout_bench_")
    model_dir = _save_for_tlens(lm, tmp.name) if "tlens" in methods and not args.model else None
    del lm

    print(f"model {flops['n_layers']} layers, d={flops['d_model']}, V={flops['vocab']}, "
          f"{flops['params_non_embedding'] / 1e6:.1f}M non-embedding params; {flops['tokens']} tokens "
          f"({flops['n_docs']} x {flops['doc_len']}); fp32; {args.threads} threads; chunk {args.chunk}; "
          f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.paired:
        return paired_main(args, base_args, flops)
    runs, stats_files = _run_rounds(args, methods, base_args, model_dir, tmp.name)
    summary = _summarise(runs, flops)
    _print_summary(runs, summary, flops)
    targets = _targets(summary, flops)
    check = _check_statistics(stats_files)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "args": {k: v for k, v in vars(args).items() if k not in ("worker", "model_dir", "stats_out")},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "torch": torch.__version__, "loadavg_end": os.getloadavg()},
            "flops": flops, "runs": runs, "summary": summary, "targets": targets, "check": check,
        }, indent=1, default=float))
        print(f"wrote {args.out}")
    tmp.cleanup()


def _base_args(args) -> list[str]:
    """The model and readout arguments every child process gets (so each builds the same model)."""
    base_args = ["--tokens", str(args.tokens), "--doc-len", str(args.doc_len), "--vocab", str(args.vocab),
                 "--layers", str(args.layers), "--d-model", str(args.d_model), "--arch", args.arch,
                 "--threads", str(args.threads), "--chunk", str(args.chunk), "--k", str(args.k),
                 "--naive-max-gib", str(args.naive_max_gib)]
    if args.model:
        base_args += ["--model", args.model]
    return base_args


def _save_for_tlens(lm, tmp_dir: str) -> str:
    """The random-init model saved as a folder with a stand-in tokenizer (TransformerLens loads from one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    model_dir = os.path.join(tmp_dir, "model")
    lm.model.save_pretrained(model_dir)
    tk = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<unk>", eos_token="<unk>",
                            pad_token="<unk>").save_pretrained(model_dir)
    return model_dir


def _run_rounds(args, methods, base_args, model_dir, tmp_dir: str) -> tuple[dict, dict]:
    """Every method (and readout variant) once per round in a fresh process, the order rotated each round:
    (runs per label, the first round's statistics files)."""
    once = {m.strip() for m in args.once.split(",") if m.strip()}
    variants = dict(v.split("=") for v in args.variants.split(",") if v.strip())
    jobs = [(m, m) for m in methods] + [(name, f"variant:{c}") for name, c in variants.items()]
    runs = {label: [] for label, _ in jobs}
    stats_files = {}
    for r in range(args.repeats):
        rot = jobs[r % len(jobs):] + jobs[:r % len(jobs)]
        for label, worker_name in rot:
            extra = list(base_args)
            if label == "tlens" and model_dir:
                extra += ["--model-dir", model_dir]
            sf = None
            if r == 0 and not args.no_check and label not in ("forward", "floor"):
                sf = stats_files[label] = os.path.join(tmp_dir, f"{label}.npz")
            res = _run_child(args, worker_name, extra, sf)
            runs[label].append(res)
            msg = (res.get("skipped") or res.get("error")
                   or f"{res['seconds']:8.2f} s  peak +{_fmt_bytes(res['peak_delta'])}")
            print(f"  round {r + 1}/{args.repeats}  {label:12s} {msg}", flush=True)
            if "skipped" in res or label in once:  # no point repeating
                jobs = [j for j in jobs if j[0] != label]
    return runs, stats_files


def _summarise(runs: dict, flops: dict) -> dict:
    """Per label: median seconds, tokens/s and peak memory of its successful runs (or why there are none)."""
    summary = {}
    for label, rs in runs.items():
        ok = [x for x in rs if "seconds" in x]
        if not ok:
            summary[label] = {"note": (rs[0].get("skipped") or rs[0].get("error")) if rs else "not run"}
            continue
        t = float(np.median([x["seconds"] for x in ok]))
        summary[label] = {"seconds": t, "seconds_all": [x["seconds"] for x in ok],
                          "tokens_per_s": flops["tokens"] / t,
                          "peak_delta": int(np.median([x["peak_delta"] for x in ok]))}
    return summary


def _print_summary(runs: dict, summary: dict, flops: dict) -> None:
    """The table of medians; adds each label's x_forward and x_bound to `summary`."""
    fwd = summary.get("forward", {}).get("seconds")
    bound_ratio = flops["bound_flops"] / flops["forward_flops"]
    _print_table_head(flops, bound_ratio, f"{'method':12s} {'median s':>9s} {'tok/s':>8s} {'x forward':>9s} "
                                          f"{'x bound':>8s} {'peak +RSS':>10s}  runs (s)")
    for label in runs:
        s = summary[label]
        if "seconds" not in s:
            print(f"{label:12s} {s['note']}")
            continue
        xf = s["seconds"] / fwd if fwd else float("nan")
        xb = xf / bound_ratio if fwd else float("nan")
        s.update(x_forward=xf, x_bound=xb)
        print(f"{label:12s} {s['seconds']:9.2f} {s['tokens_per_s']:8.1f} {xf:9.2f} {xb:8.2f} "
              f"{_fmt_bytes(s['peak_delta']):>10s}  " + ", ".join(f"{x:.1f}" for x in s["seconds_all"]))
    print()


def _targets(summary: dict, flops: dict) -> dict:
    """The ratios the benchmark is judged by (readout vs the FLOP bound, the floor, the naive lens, v0), printed."""
    targets = {}
    fwd = summary.get("forward", {}).get("seconds")
    bound_ratio = flops["bound_flops"] / flops["forward_flops"]
    ro, nv = summary.get("readout", {}), summary.get("naive", {})
    if fwd and "seconds" in ro:
        targets["readout_x_bound"] = ro["x_bound"]
        print(f"readout time / forward time = {ro['x_forward']:.2f}  vs  bound/forward FLOPs = {bound_ratio:.2f}  "
              f"->  {ro['x_bound']:.2f}x the FLOP bound (target <= 1.3)")
    if "seconds" in summary.get("floor", {}) and "seconds" in ro:
        targets["readout_x_floor"] = ro["seconds"] / summary["floor"]["seconds"]
        print(f"readout time / measured floor (forward + lens matmuls) = {targets['readout_x_floor']:.2f}")
    if "seconds" in ro and "seconds" in nv:
        targets["naive_over_readout_memory"] = nv["peak_delta"] / max(ro["peak_delta"], 1)
        targets["naive_over_readout_time"] = nv["seconds"] / ro["seconds"]
        print(f"peak memory naive / readout = {targets['naive_over_readout_memory']:.1f}x (target >= 5); "
              f"time naive / readout = {targets['naive_over_readout_time']:.2f}x")
    if "seconds" in ro:
        logits_bytes = (flops["n_layers"] + 1) * flops["tokens"] * flops["vocab"] * 4
        targets["all_logits_tensor_over_readout_memory"] = logits_bytes / max(ro["peak_delta"], 1)
        print(f"the [L+1, T, V] fp32 logits tensor alone is {_fmt_bytes(logits_bytes)} = "
              f"{targets['all_logits_tensor_over_readout_memory']:.1f}x the readout's peak")
    if "seconds" in ro and "seconds" in summary.get("readout_v0", {}):
        targets["v0_over_readout_time"] = summary["readout_v0"]["seconds"] / ro["seconds"]
        print(f"time readout_v0 / readout = {targets['v0_over_readout_time']:.2f}x")
    return targets


def _check_statistics(stats_files: dict) -> dict:
    """Each method's statistics against the readout's (first round): the largest difference per statistic."""
    check = {}
    if "readout" in stats_files and os.path.exists(stats_files["readout"]):
        ref = np.load(stats_files["readout"])
        for label, f in stats_files.items():
            if label == "readout" or not os.path.exists(f):
                continue
            other = np.load(f)
            names = STAT_NAMES if label.startswith("readout") else LOGIT_STATS
            diffs = {n: v.get("differ", v.get("max_abs")) for n, v in agreement(ref, other, names).items()}
            check[label] = diffs
            worst = max((v, n) for n, v in diffs.items() if n not in ("top1", "rank_of_final"))
            print(f"statistics vs readout, {label}: max |diff| {worst[0]:.2e} ({worst[1]}); top1 differs on "
                  f"{diffs['top1']:.2%}, rank_of_final on {diffs['rank_of_final']:.2%} of (token, layer)")
    return check


if __name__ == "__main__":
    main()
