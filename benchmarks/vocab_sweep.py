#!/usr/bin/env python
"""Readout vs its floor across vocabulary sizes: one Gemma-3-270M-shaped model (18 layers, d=640, 4 heads,
1 KV head, head_dim 256, random init, fp32), vocabularies 2k / 50k / 128k / 262k, side by side in one run.

    .venv/bin/python benchmarks/vocab_sweep.py --tokens 512 --repeats 2
    .venv/bin/python benchmarks/vocab_sweep.py --baseline /path/to/old/checkout   # adds readout_base
    .venv/bin/python benchmarks/vocab_sweep.py --check-only                        # statistics vs naive lens

Each model is built once per vocabulary and saved to a temporary folder; every (vocabulary, method, repeat)
then runs in a fresh process (load, 32-token warm-up forward, reset of the peak-RSS mark, the method once).
Rounds are interleaved (round r runs every (vocabulary, method) once, in a rotated order) and the table
shows medians, so machine load drifting over minutes hits every column alike.

Methods: forward = model(input_ids).logits; floor = forward with output_hidden_states, then per chunk of
tokens the final norm and one unembedding matmul per layer into one reused buffer (the FLOP bound, measured);
readout = eeutils.readout; readout_base = the same call with --baseline's eeutils on PYTHONPATH; naive =
every layer's logits kept as one [L+1, T, V] tensor, log_softmax, the statistics (run only where its
estimated memory is under --naive-max-gib; the table gives the estimate where it is not run).

--check-only (or the check that runs first by default) compares eeutils.readout with the naive lens on a
few short documents per vocabulary: top-1 identical, rank_of_final identical, max |diff| per statistic and
the max relative difference of the statistics that grow with the vocabulary (entropy, KL, CE).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VOCABS = (2048, 50257, 128256, 262144)
METHODS = ("forward", "floor", "readout", "readout_base", "naive")
STATS = ("top1", "max_prob", "margin", "entropy", "kl_to_final", "ce", "rank_of_final", "logit_cos",
         "hidden_cos", "hidden_cos_prev", "topk_overlap")
RELATIVE = ("entropy", "kl_to_final", "ce")  # values that grow with log V: compared relative to their size


def build_model(vocab: int, seed: int = 0):
    """A random-init Gemma-3-270M-shaped causal LM with this vocabulary (no download)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                           max_position_embeddings=4096, tie_word_embeddings=True)
    return Gemma3ForCausalLM(cfg).float().eval()


def input_ids(vocab: int, tokens: int, doc_len: int):
    import torch
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (max(tokens // doc_len, 1), doc_len), generator=g)


def naive_bytes(vocab: int, tokens: int, layers: int = 18) -> int:
    """The naive lens's two [L+1, T, V] fp32 tensors (the per-layer list and its torch.stack)."""
    return 2 * (layers + 1) * tokens * vocab * 4


# ------------------------------------------------------------------------------------------ methods
def run_forward(lm, ids, chunk):
    lm.model(input_ids=ids, use_cache=False).logits


def run_floor(lm, ids, chunk):
    import torch
    out = lm.model(input_ids=ids, use_cache=False, output_hidden_states=True)
    states = [h.reshape(-1, h.shape[-1]) for h in out.hidden_states[:lm.n_layers]]
    weight = lm.head.weight
    buf = torch.empty(chunk, lm.vocab_size)
    for c in range(0, ids.numel(), chunk):
        for h in states:
            x = lm.final_norm(h[c:c + chunk])
            torch.mm(x, weight.t(), out=buf[:x.shape[0]])


def run_readout(lm, ids, chunk):
    import eeutils
    r = eeutils.readout(lm, ids.tolist(), k=5, batch_size=ids.shape[0], chunk_tokens=chunk, progress=False)
    return {n: r[n] for n in STATS}


def run_naive(lm, ids, chunk, k: int = 5):
    """Every layer's logits at once, log_softmax, the statistics as result.STATISTICS defines them."""
    import torch
    import torch.nn.functional as F
    out = lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    T, L = ids.numel(), lm.n_layers
    Z = torch.stack([lm.layer_logits(h).reshape(T, -1) for h in out.hidden_states[:L]]
                    + [out.logits.float().reshape(T, -1)])
    H = torch.stack([h.reshape(T, -1).float() for h in out.hidden_states])
    tgt = torch.full_like(ids, -1)
    tgt[:, :-1] = ids[:, 1:]
    tgt = tgt.reshape(-1)
    res = {n: np.empty((T, L + 1), dtype=np.int32 if n in ("top1", "rank_of_final") else np.float32)
           for n in STATS}
    logp_f = torch.log_softmax(Z[-1], -1)
    top_f = torch.topk(Z[-1], k, -1).indices
    for layer in range(L + 1):
        z = Z[layer]
        logp = torch.log_softmax(z, -1)
        p = logp.exp()
        ids_l = torch.topk(z, k, -1).indices
        top_p = p.gather(1, ids_l[:, :2])
        st = {"top1": ids_l[:, 0], "max_prob": top_p[:, 0], "margin": top_p[:, 0] - top_p[:, 1],
              "entropy": -(p * logp).sum(-1), "kl_to_final": (logp_f.exp() * (logp_f - logp)).sum(-1),
              "ce": torch.where(tgt >= 0, -logp.gather(1, tgt.clamp_min(0)[:, None])[:, 0], float("nan")),
              "rank_of_final": (z > z.gather(1, top_f[:, :1])).sum(-1),
              "logit_cos": F.cosine_similarity(z, Z[-1], -1, eps=1e-30),
              "hidden_cos": F.cosine_similarity(H[layer], H[-1], -1, eps=1e-30),
              "hidden_cos_prev": (torch.ones(T) if layer == 0
                                  else F.cosine_similarity(H[layer], H[layer - 1], -1, eps=1e-30)),
              "topk_overlap": (ids_l[:, :, None] == top_f[:, None, :]).any(-1).sum(-1).float() / k}
        for n, v in st.items():
            res[n][:, layer] = v.numpy()
    return res


RUN = {"forward": run_forward, "floor": run_floor, "readout": run_readout, "readout_base": run_readout,
       "naive": run_naive}


# ------------------------------------------------------------------------------------------- worker
def _status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def worker(args):
    import torch
    import eeutils
    torch.set_num_threads(args.threads)
    lm = eeutils.load_model(args.model_dir, tokenizer=False)
    ids = input_ids(lm.vocab_size, args.tokens, args.doc_len)
    with torch.inference_mode():
        lm.model(input_ids=ids[:1, :32], use_cache=False)  # touches every weight
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
        except OSError:
            pass
        base, t0 = _status("VmRSS"), time.perf_counter()
        RUN[args.worker](lm, ids, args.chunk)
        seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_delta": max(_status("VmHWM") - base, 0),
                      "eeutils": eeutils.__file__}))


def check(lm, tokens: int, doc_len: int) -> dict:
    """eeutils.readout vs the naive lens on `tokens` tokens: agreement of every statistic."""
    import torch
    ids = input_ids(lm.vocab_size, tokens, doc_len)
    with torch.inference_mode():
        a, b = run_readout(lm, ids, 256), run_naive(lm, ids, 256)
    res = {}
    for n in STATS:
        x, y = a[n].astype(np.float64), b[n].astype(np.float64)
        if n in ("top1", "rank_of_final"):
            res[n] = {"differ": float(np.mean(x != y))}
            continue
        both_nan = np.isnan(x) & np.isnan(y)
        d = np.where(both_nan, 0.0, np.abs(x - y))
        res[n] = {"max_abs": float(d.max())}
        if n in RELATIVE:
            res[n]["max_rel"] = float(np.max(np.where(both_nan, 0.0, d / np.maximum(np.abs(y), 1e-3))))
    return res


# ------------------------------------------------------------------------------------------- parent
def _fmt_bytes(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def _child(args, method: str, model_dir: str, pythonpath: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--model-dir", model_dir,
           "--tokens", str(args.tokens), "--doc-len", str(args.doc_len), "--chunk", str(args.chunk),
           "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-2:])
        return {"error": f"exit {p.returncode}: {'killed (out of memory?)' if p.returncode in (-9, 137) else tail}"}
    return json.loads(lines[-1])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocabs", default=",".join(map(str, VOCABS)))
    ap.add_argument("--methods", default="forward,floor,readout,naive")
    ap.add_argument("--baseline", default=None, help="a checkout whose eeutils runs as 'readout_base'")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--doc-len", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--naive-max-gib", type=float, default=4.0, help="run naive only below this estimate")
    ap.add_argument("--check-tokens", type=int, default=64, help="tokens for the agreement check (0: skip)")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import torch
    import eeutils
    torch.set_num_threads(args.threads)
    vocabs = [int(v) for v in args.vocabs.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    if args.baseline:
        methods.insert(methods.index("readout") + 1 if "readout" in methods else len(methods), "readout_base")
    here = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    paths = {m: (str(Path(args.baseline).resolve()) if m == "readout_base" else here) for m in methods}
    tmp = tempfile.TemporaryDirectory(prefix="vocab_sweep_")
    dirs, checks = {}, {}
    print(f"Gemma-3-270M shape, random init, fp32; {args.tokens} tokens ({args.tokens // args.doc_len} x "
          f"{args.doc_len}); chunk {args.chunk}; {args.threads} threads; {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    for V in vocabs:
        model = build_model(V)
        dirs[V] = os.path.join(tmp.name, f"v{V}")
        model.save_pretrained(dirs[V])
        if args.check_tokens:
            lm = eeutils.wrap_model(model, name=f"gemma3-shape-V{V}")
            checks[V] = c = check(lm, args.check_tokens, min(args.doc_len, args.check_tokens))
            worst = max((v["max_abs"], n) for n, v in c.items() if "max_abs" in v)
            rel = max((v["max_rel"], n) for n, v in c.items() if "max_rel" in v)
            print(f"  check V={V:>6}: top1 differs on {c['top1']['differ']:.2%}, rank_of_final on "
                  f"{c['rank_of_final']['differ']:.2%} of (token, layer); max |diff| {worst[0]:.1e} ({worst[1]}); "
                  f"max rel diff {rel[0]:.1e} ({rel[1]})", flush=True)
        del model
    if args.check_only:
        return
    jobs, skipped = [], {}
    for V in vocabs:
        for m in methods:
            est = naive_bytes(V, args.tokens)
            if m == "naive" and est > args.naive_max_gib * 2**30:
                skipped[(V, m)] = f"not run: needs ~{_fmt_bytes(est)}"
            else:
                jobs.append((V, m))
    runs = {j: [] for j in jobs}
    for r in range(args.repeats):
        rot = jobs[r % len(jobs):] + jobs[:r % len(jobs)] if r else jobs
        for V, m in rot:
            res = _child(args, m, dirs[V], paths[m])
            runs[(V, m)].append(res)
            msg = res.get("error") or f"{res['seconds']:8.2f} s  peak +{_fmt_bytes(res['peak_delta'])}"
            print(f"  round {r + 1}/{args.repeats}  V={V:>6} {m:13s} {msg}", flush=True)
    print()
    head = f"{'vocab':>7s} {'method':13s} {'median s':>9s} {'x forward':>9s} {'x floor':>8s} {'peak +RSS':>10s}  runs (s)"
    print(head + "\n" + "-" * len(head))
    summary = []
    for V in vocabs:
        med = {}
        for m in methods:
            ok = [x for x in runs.get((V, m), []) if "seconds" in x]
            if ok:
                med[m] = (float(np.median([x["seconds"] for x in ok])),
                          float(np.median([x["peak_delta"] for x in ok])), [x["seconds"] for x in ok])
        for m in methods:
            if m not in med:
                note = skipped.get((V, m)) or next((x["error"] for x in runs.get((V, m), []) if "error" in x), "")
                print(f"{V:>7d} {m:13s} {note}")
                summary.append({"vocab": V, "method": m, "note": note})
                continue
            s, mem, all_s = med[m]
            xf = s / med["forward"][0] if "forward" in med else float("nan")
            xl = s / med["floor"][0] if "floor" in med else float("nan")
            print(f"{V:>7d} {m:13s} {s:9.2f} {xf:9.2f} {xl:8.2f} {_fmt_bytes(mem):>10s}  "
                  + ", ".join(f"{x:.1f}" for x in all_s))
            summary.append({"vocab": V, "method": m, "seconds": s, "x_forward": xf, "x_floor": xl,
                            "peak_delta": mem, "seconds_all": all_s})
        if "readout" in med:
            est = naive_bytes(V, 2048)
            print(f"{'':7s} naive lens at 2048 tokens needs >= {_fmt_bytes(est)} (two [L+1, T, V] fp32 tensors); "
                  f"1/10 of that is {_fmt_bytes(est / 10)}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary,
                                              "checks": {str(k): v for k, v in checks.items()},
                                              "loadavg_end": os.getloadavg()}, indent=1))
        print(f"wrote {args.out}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
