#!/usr/bin/env python
"""The paper's model list on one GPU: plain forward, the measured floor and eeutils.readout, per model.

Random-init models in the published shapes of Llama2-7B, Llama3-8B, Qwen2-7B, Qwen3-8B, GPT-OSS-20B,
Qwen3-30B-A3B and a Mamba2-7B (Mamba-Codestral-7B shape), built on the device in bf16 (benchmarks/
paper_shapes.py), one at a time. For each: tokens/s, achieved TFLOP/s against the bf16 matmul peak, peak
memory, and the time 1M tokens would take; then the whole list's total.

    python benchmarks/gpu_bench.py --device cuda --json $OUT/gpu.json     # 64k tokens per model on a GPU
    python benchmarks/gpu_bench.py --tiny --device cpu                     # same code path, tiny shapes

Methods (each over the same token ids, in batches of --batch documents of --doc-len tokens):
  forward  model(input_ids).logits
  floor    forward + one unembedding matmul per layer 0..L-1 into a reused buffer (benchmarks/_floor.py)
  readout  eeutils.readout (statistics of every layer, chunk_tokens = --chunk-tokens)

FLOPs (printed): forward = 2 * P_active * T (block matrices; routed experts scaled by top_k / n_experts)
  + 4 * width * sum_t min(t + 1, window) per attention layer and document (causal QK^T and AV; window = the
  sliding window or the document) + Mamba2's SSD scan, 2 * (Q * (G * N + H * P) + 2 * H * P * N) per token
  and layer (chunk Q, groups G, state N, heads H, head dim P) + 2 * d * V * T for the head;
  lens = L * 2 * d * V * T (one unembedding per layer 0..L-1; the final layer's logits are the forward's);
  bound = forward + lens. "Lens TFLOP/s" = lens FLOPs / (method time - forward time).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import eeutils  # noqa: E402
from eeutils.arch.loading import parse_dtype  # noqa: E402
from _floor import floor_pass  # noqa: E402
from paper_shapes import PAPER_MODELS, build_model, count_matmul_params, make_config, resolve_names, shape_facts  # noqa: E402

H200_BF16_DENSE_TFLOPS = 989.0  # vendor datasheet, SXM, dense (no sparsity)
METHODS = ("forward", "floor", "readout")
GiB = 2 ** 30


# ------------------------------------------------------------------------------------------ arithmetic
def attention_flops(doc_len: int, width: int, window: int | None = None) -> int:
    """Causal QK^T and AV of one attention layer over one document: 4 * width * (keys summed over queries)."""
    w = doc_len if window is None else min(window, doc_len)
    keys = w * (w + 1) // 2 + (doc_len - w) * w
    return 4 * width * keys


def ssd_flops_per_token(ssd: dict) -> int:
    """Mamba2's chunked SSD scan per token and layer (intra-chunk scores and outputs, chunk states, state outputs)."""
    H, P, G, N, Q = ssd["heads"], ssd["head_dim"], ssd["groups"], ssd["state"], ssd["chunk"]
    return 2 * (Q * (G * N + H * P) + 2 * H * P * N)


def flop_counts(facts: dict, p_active: int, n_docs: int, doc_len: int) -> dict:
    """Forward, lens and bound FLOPs for n_docs documents of doc_len tokens (formula in the module docstring)."""
    T = n_docs * doc_len
    d, V, L = facts["d_model"], facts["vocab"], facts["n_layers"]
    dense = 2 * p_active * T
    attn = n_docs * sum(attention_flops(doc_len, w, win) for w, win in facts["attn"])
    ssd = facts["ssd"]["layers"] * T * ssd_flops_per_token(facts["ssd"]) if facts.get("ssd") else 0
    head = 2 * d * V * T
    forward = dense + attn + ssd + head
    lens = L * 2 * d * V * T
    return {"tokens": T, "dense": dense, "attention": attn, "ssd": ssd, "head": head, "forward": forward,
            "lens": lens, "bound": forward + lens}


def per_million(seconds: float, tokens: int, target: float = 1e6) -> float:
    """Projected seconds for `target` tokens at the measured rate."""
    return seconds * target / tokens


def rates(flops: dict, seconds: dict, peak_tflops: float | None) -> dict:
    """TFLOP/s of each method (forward: forward FLOPs, floor/readout: bound FLOPs) and of the lens part alone."""
    out = {}
    t_fwd = seconds.get("forward")
    for m, t in seconds.items():
        if t is None:
            continue
        f = flops["forward"] if m == "forward" else flops["bound"]
        out[f"{m}_tflops"] = f / t / 1e12
        if m != "forward" and t_fwd is not None and t > t_fwd:
            out[f"{m}_lens_tflops"] = flops["lens"] / (t - t_fwd) / 1e12
    if peak_tflops:
        out.update({k.replace("_tflops", "_frac_peak"): v / peak_tflops for k, v in list(out.items())})
    return out


def totals(records: list[dict]) -> dict:
    """Per method: the projected 1M-token seconds summed over the models that have that method's time."""
    out = {}
    for m in METHODS:
        vals = [r["per_1M_s"][m] for r in records if m in r.get("per_1M_s", {})]
        out[m] = {"seconds": sum(vals), "models": len(vals), "complete": len(vals) == len(records)}
    return out


# ---------------------------------------------------------------------------------------- measurement
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:  # reset the kernel's peak-RSS mark (Linux)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def _peak(device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _in_use(device) -> int | None:
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else _peak(device)


def matmul_probe(device, dtype, n: int | None = None, repeats: int = 10) -> float:
    """TFLOP/s of an n x n x n matmul in `dtype` (8192 on a GPU, 512 on a CPU): the practical peak."""
    n = n or (8192 if device.type == "cuda" else 512)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e12


def _timed(fn, device) -> tuple[float, int | None]:
    _sync(device)
    _reset_peak(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn()
    _sync(device)
    return time.perf_counter() - t0, _peak(device)


def _fmt_n(n):
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _fmt_s(x):
    return "-" if x is None else f"{x:.1f}s"


def _fmt_b(b):
    return "n/a" if b is None else f"{b / GiB:.2f} GiB" if b >= GiB else f"{b / 2 ** 20:.0f} MiB"


def bench_model(name: str, args, device, dtype, peak_tflops) -> dict:
    """Build one model, time forward / floor / readout on the same ids, free it; one JSON-able record."""
    spec = PAPER_MODELS[name]
    rec = {"model": name, "family": spec.family, "source": spec.source, "tiny": args.tiny}
    t0 = time.perf_counter()
    model = build_model(name, tiny=args.tiny, device=str(device), dtype=dtype, seed=args.seed,
                        experts_implementation=args.experts_impl, attn_implementation=args.attn)
    _sync(device)
    rec["build_s"] = time.perf_counter() - t0
    lm = eeutils.wrap_model(model, name=name)
    total, active = count_matmul_params(model)
    facts = shape_facts(make_config(name, args.tiny))
    rec.update(params_total=sum(p.numel() for p in model.parameters()), matmul_params_total=total,
               matmul_params_active=active, n_layers=lm.n_layers, d_model=facts["d_model"], vocab=facts["vocab"],
               after_build_bytes=_in_use(device), attn_implementation=model.config._attn_implementation,
               experts_implementation=getattr(model.config, "_experts_implementation", None))
    n_docs = args.tokens // args.doc_len
    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, lm.vocab_size, (n_docs, args.doc_len), generator=g)
    batches = [ids[i:i + args.batch].to(device) for i in range(0, n_docs, args.batch)]
    flops = flop_counts(facts, active, n_docs, args.doc_len)
    rec["flops"] = flops
    print(f"  built in {rec['build_s']:.1f} s: {_fmt_n(rec['params_total'])} params "
          f"({_fmt_n(active)} active in block matmuls), {lm.n_layers} layers, d={facts['d_model']}, "
          f"V={facts['vocab']}, {'weights' if device.type == 'cuda' else 'RSS'} {_fmt_b(rec['after_build_bytes'])}; {flops['tokens']} tokens "
          f"({n_docs} x {args.doc_len}), bound/forward FLOPs {flops['bound'] / flops['forward']:.2f}", flush=True)

    buf = [None]

    def run_forward():
        for b in batches:
            lm.model(input_ids=b, use_cache=False)

    def run_floor():
        for b in batches:
            buf[0] = floor_pass(lm, b, args.chunk_tokens, buf[0])

    def run_readout():
        eeutils.readout(lm, ids, k=args.k, batch_size=args.batch, chunk_tokens=args.chunk_tokens, progress=False)

    fns = {"forward": run_forward, "floor": run_floor, "readout": run_readout}
    errors, times, peaks = {}, {m: [] for m in METHODS}, {}
    if not args.no_check:
        try:
            rec["last_layer_max_abs_diff"] = float(eeutils.check_last_layer(lm, ids[0, :min(args.doc_len, 128)]))
        except Exception as e:  # noqa: BLE001 - recorded, the timing still runs
            errors["check"] = f"{type(e).__name__}: {e}"
    with torch.inference_mode():  # warm-up: kernels, cuBLAS handles, allocator pools
        for m, warm in (("forward", lambda: lm.model(input_ids=batches[0], use_cache=False)),
                        ("floor", lambda: floor_pass(lm, batches[0][:1], args.chunk_tokens)),
                        ("readout", lambda: eeutils.readout(lm, ids[:1], k=args.k, batch_size=1,
                                                            chunk_tokens=args.chunk_tokens, progress=False))):
            try:
                warm()
            except Exception as e:  # noqa: BLE001
                errors[m] = f"{type(e).__name__}: {e}"
    for r in range(args.repeats):
        for m in METHODS:
            if m in errors:
                continue
            try:
                t, p = _timed(fns[m], device)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory: recorded, the next method runs
                errors[m] = f"{type(e).__name__}: {e}"
                continue
            times[m].append(t)
            peaks[m] = max(peaks.get(m) or 0, p or 0) or None
            print(f"  {m:8s} {t:8.2f} s  {flops['tokens'] / t:10.0f} tok/s  peak {_fmt_b(p)}", flush=True)
    seconds = {m: statistics.median(v) for m, v in times.items() if v}
    base = rec["after_build_bytes"] or 0
    rec.update(seconds=seconds, seconds_all=times, peak_bytes=peaks, errors=errors,
               peak_over_build_bytes={m: p - base for m, p in peaks.items() if p is not None},
               tokens_per_s={m: flops["tokens"] / t for m, t in seconds.items()},
               per_1M_s={m: per_million(t, flops["tokens"]) for m, t in seconds.items()},
               rates=rates(flops, seconds, peak_tflops))
    if "readout" in seconds and "floor" in seconds:
        rec["readout_x_floor"] = seconds["readout"] / seconds["floor"]
    if "forward" in seconds:
        rec["x_forward"] = {m: t / seconds["forward"] for m, t in seconds.items()}
    for m, e in errors.items():
        print(f"  {m:8s} ERROR {e.splitlines()[0][:300]}", flush=True)
    del lm, model, batches, buf
    _free(device)
    return rec


# ---------------------------------------------------------------------------------------------- driver
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--models", default="all", help="comma-separated subset of " + ", ".join(PAPER_MODELS))
    ap.add_argument("--tokens", type=int, default=None, help="tokens per model (default 65536; --tiny 128)")
    ap.add_argument("--doc-len", type=int, default=None, help="tokens per document (default 2048; --tiny 32)")
    ap.add_argument("--batch", type=int, default=None, help="documents per forward batch (default 8; --tiny 2)")
    ap.add_argument("--chunk-tokens", type=int, default=None, help="readout/floor token chunk (default 2048; --tiny 32)")
    ap.add_argument("--dtype", default=None, help="bfloat16 (default on cuda) or float32 (default on cpu)")
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    ap.add_argument("--tiny", action="store_true", help="scaled-down shapes: same families and code path, CPU-sized")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help=f"the device's dense peak in the run's dtype (default on cuda: {H200_BF16_DENSE_TFLOPS:g}, "
                         "H200/H100 SXM bf16 datasheet); a measured matmul's rate is reported beside it")
    ap.add_argument("--no-matmul-probe", action="store_true", help="skip measuring an 8192^3 matmul's TFLOP/s")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per method (median reported)")
    ap.add_argument("--k", type=int, default=5, help="readout top-k")
    ap.add_argument("--experts-impl", default=None, help="transformers experts_implementation for the MoE models "
                    "(eager, batched_mm, grouped_mm; default: transformers' choice, grouped_mm where it can)")
    ap.add_argument("--attn", default=None, help="attn_implementation (default: transformers' choice per model)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="skip the remaining models once this much wall time has passed (default 480 on cuda)")
    ap.add_argument("--no-check", action="store_true", help="skip the readout-vs-model last-layer check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here (rewritten after every model)")
    ap.add_argument("--list", action="store_true", help="print the shapes table (built on the meta device) and exit")
    args = ap.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here (torch {torch.__version__}, built for "
                         f"CUDA {torch.version.cuda}). Run on a GPU machine, or use --tiny --device cpu.")
    if dev.type == "cpu" and not args.tiny and not args.list:
        raise SystemExit("the published shapes (7-30B parameters) are GPU-sized; on a CPU use --tiny")
    small = args.tiny
    for name, full, tiny in (("tokens", 65536, 128), ("doc_len", 2048, 32), ("batch", 8, 2), ("chunk_tokens", 2048, 32)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if small else full)
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be a positive integer")
    if args.tokens < args.doc_len:
        raise SystemExit(f"--tokens {args.tokens} is less than one document of --doc-len {args.doc_len}")
    args.dtype = args.dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    if args.peak_tflops is None and dev.type == "cuda":
        args.peak_tflops = H200_BF16_DENSE_TFLOPS
    if args.max_seconds is None and dev.type == "cuda":
        args.max_seconds = 480.0
    return args


def print_shapes(names):
    from transformers import AutoModelForCausalLM
    print(f"{'model':14s} {'family':6s} {'layers':>6s} {'d':>5s} {'vocab':>7s} {'params':>8s} {'active':>8s}  source")
    for n in names:
        cfg = make_config(n)
        with torch.device("meta"):
            m = AutoModelForCausalLM.from_config(cfg)
        total = sum(p.numel() for p in m.parameters())
        _, active = count_matmul_params(m)
        print(f"{n:14s} {PAPER_MODELS[n].family:6s} {cfg.num_hidden_layers:6d} {cfg.hidden_size:5d} "
              f"{cfg.vocab_size:7d} {total / 1e9:7.2f}B {active / 1e9:7.2f}B  {PAPER_MODELS[n].source}")


def _write_json(path, payload):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    os.replace(tmp, path)


def _environment(device) -> dict:
    import transformers
    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpus": os.cpu_count(), "eeutils": eeutils.__version__}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_bytes=p.total_memory, cuda=torch.version.cuda)
    return env


def main(argv=None) -> dict:
    args = parse_args(argv)
    names = resolve_names(args.models)
    if args.list:
        print_shapes(names)
        return {}
    device, dtype = torch.device(args.device), parse_dtype(args.dtype)
    eeutils.quiet()
    result = {"args": vars(args), "environment": _environment(device), "models": [], "skipped": []}
    if not args.no_matmul_probe:
        result["matmul_tflops"] = matmul_probe(device, dtype)
    result["peak_tflops_spec"] = args.peak_tflops
    print(f"device {device} ({result['environment'].get('gpu', platform.processor() or 'cpu')}), {args.dtype}, "
          f"{'tiny shapes' if args.tiny else 'published shapes'}; {args.tokens} tokens per model as documents of "
          f"{args.doc_len}, batch {args.batch}, chunk {args.chunk_tokens}; matmul probe "
          f"{result.get('matmul_tflops', float('nan')):.3g} TFLOP/s, spec peak {args.peak_tflops or 'n/a'}", flush=True)
    t_start = time.perf_counter()
    for i, name in enumerate(names):
        if args.max_seconds and time.perf_counter() - t_start > args.max_seconds:
            result["skipped"].append(name)
            print(f"[{i + 1}/{len(names)}] {name}: skipped (--max-seconds {args.max_seconds:g} passed)", flush=True)
            continue
        print(f"[{i + 1}/{len(names)}] {name}", flush=True)
        try:
            rec = bench_model(name, args, device, dtype, args.peak_tflops)
        except Exception as e:  # noqa: BLE001 - one model's failure (e.g. OOM at build) must not lose the others
            rec = {"model": name, "errors": {"build": f"{type(e).__name__}: {e}"}}
            print(f"  ERROR {rec['errors']['build'].splitlines()[0][:300]}", flush=True)
        _free(device)  # outside the except block, whose traceback would keep the failed model's tensors alive
        result["models"].append(rec)
        result["totals_per_1M"] = totals(result["models"])
        if args.json:
            _write_json(args.json, result)
    result["wall_s"] = time.perf_counter() - t_start
    summarize(result)
    if args.json:
        _write_json(args.json, result)
        print(f"wrote {args.json}")
    return result


def summarize(result: dict) -> None:
    """The side-by-side table, the 1M-token totals and the issue's two targets."""
    peak, probe = result.get("peak_tflops_spec"), result.get("matmul_tflops")
    print(f"\n{'model':14s} {'fwd s':>7s} {'floor s':>8s} {'readout s':>9s} {'ro/floor':>8s} {'fwd TF/s':>8s} "
          f"{'lens TF/s floor':>15s} {'lens TF/s ro':>12s} {'peak mem':>10s} {'1M tok ro':>10s}")
    lens_fracs = []
    for r in result["models"]:
        s, rt = r.get("seconds", {}), r.get("rates", {})
        pk = max((v for v in r.get("peak_bytes", {}).values() if v), default=None)
        cells = [f"{s[m]:7.2f}" if m in s else f"{'-':>7s}" for m in METHODS]
        lens_ro = rt.get("readout_lens_tflops")
        if lens_ro is not None:
            lens_fracs.append(lens_ro)
        print(f"{r['model']:14s} {cells[0]} {cells[1]:>8s} {cells[2]:>9s} "
              f"{r.get('readout_x_floor', float('nan')):8.2f} {rt.get('forward_tflops', float('nan')):8.3g} "
              f"{rt.get('floor_lens_tflops', float('nan')):15.3g} {rt.get('readout_lens_tflops', float('nan')):12.3g} "
              f"{_fmt_b(pk):>10s} {_fmt_s(r.get('per_1M_s', {}).get('readout')):>10s}"
              + (f"   errors: {', '.join(r['errors'])}" if r.get("errors") else ""))
    tot = result.get("totals_per_1M", {})
    for m in METHODS:
        if m in tot:
            t = tot[m]
            print(f"1M tokens per model, {m}: {t['seconds'] / 60:.1f} min over {t['models']} model(s)"
                  + ("" if t["complete"] and not result["skipped"] else " (INCOMPLETE list)"))
    targets = {}
    if "readout" in tot:
        targets["list_x_1M_readout_min"] = tot["readout"]["seconds"] / 60
        targets["list_complete"] = tot["readout"]["complete"] and not result["skipped"]
        verdict = ("met" if targets["list_x_1M_readout_min"] <= 30 else "NOT met") if targets["list_complete"] \
            else f"not judged: {tot['readout']['models']} of {len(result['models']) + len(result['skipped'])} models measured"
        print(f"target: whole list x 1M tokens <= 30 min -> {targets['list_x_1M_readout_min']:.1f} min ({verdict})")
    if lens_fracs:
        worst = min(lens_fracs)
        for label, ref in (("spec peak", peak), ("measured matmul", probe)):
            if ref:
                targets[f"lens_frac_of_{label.replace(' ', '_')}_worst"] = worst / ref
                print(f"target: lens arithmetic >= 50% of bf16 matmul peak -> worst model {worst:.3g} TFLOP/s = "
                      f"{worst / ref:.0%} of the {label} ({ref:.3g})")
    result["targets"] = targets


if __name__ == "__main__":
    main()
