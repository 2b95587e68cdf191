"""``python -m eeutils.zoo plan``: time and size estimate of the zoo build from a short calibration run.

Per distinct model shape it times a few real training steps (the recipe's own objective, optimiser and
batch, on random token windows: the cost does not depend on the text) and a forward pass over validation
windows, with one torch thread. Projected minutes per model = steps x seconds/step + the evaluation windows
the build scores (periodic, final, per source, per checkpoint) x seconds/window. The wall time is the same
greedy schedule the parallel build uses (``parallel.simulate``). Sizes are exact: fp16 bytes of the unique
parameters plus the tokenizer copy and small JSON files, for the main folder and every checkpoint folder.
"""
from __future__ import annotations

import json
import math
import os
import time

import torch

from eeutils.core.zoo_store import TOKENIZER_DIRNAME, zoo_root
from eeutils.zoo import train as TR
from eeutils.zoo.parallel import simulate
from eeutils.zoo.recipes import CONTEXT, ZOO

BUDGET_MINUTES = 120.0
BUDGET_MB = 160.0  # issue 25 (three seeds per side) raised it from 120
DATA_PREP_S = 60.0  # corpus + tokenisation in the parent, then once per worker (measured about 20-30 s)
SMALL_FILES_BYTES = 1_200  # config.json + generation_config.json + tokenizer_config.json
SAFETENSORS_HEADER_BYTES = 8_000  # the JSON header of model.safetensors (dense-mid's: 5,952 bytes)
COMPACT_TOKENIZER_BYTES = 50_100  # tokenizer.json written compact (tokenizer.compact_json) + tokenizer_config.json
CARD_BYTES = 12_000  # card.json + CARD.md of a main folder (history and checkpoint rows included)


def shape_key(r) -> tuple:
    return (r.arch, r.d, r.layers, r.batch, tuple(sorted(r.extra.items())), bool(r.layerskip), bool(r.finetune_of))


def eval_windows(r) -> int:
    """Validation windows the build scores for one model (see build.build_one and train.train)."""
    if r.finetune_of:
        return 2 * 8 * r.batch + TR.N_VAL_WINDOWS_FINAL + 3 * 64  # instruction loss before/after, final scores
    periodic = math.ceil(r.steps / TR.EVAL_EVERY) * TR.N_VAL_WINDOWS_PERIODIC
    return periodic + TR.N_VAL_WINDOWS_FINAL + 3 * 64 + len(r.checkpoints) * TR.N_VAL_WINDOWS_FINAL


def calibrate(recipes, steps: int = 10, warmup: int = 2, vocab_size: int = 2048) -> dict:
    """{shape_key: {"step_s", "eval_window_s", "params", "fp16_bytes"}} from timed steps (one thread)."""
    out = {}
    g = torch.Generator().manual_seed(0)
    for r in recipes:
        k = shape_key(r)
        if k in out:
            continue
        model = TR.build_model(r, vocab_size)
        params = sum(p.numel() for p in model.parameters())  # unique tensors: tied weights counted once
        opt = TR.make_optimizer(model, r)
        objective = TR.make_objective(model, r)
        x = torch.randint(3, vocab_size, (r.batch, CONTEXT), generator=g)
        t0 = None
        for i in range(warmup + steps):
            if i == warmup:
                t0 = time.perf_counter()
            loss = objective(x, r.steps // 2 + i)  # mid-run: LayerSkip dropout and exits as they typically are
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        step_s = (time.perf_counter() - t0) / steps
        objective.close()
        val = torch.randint(3, vocab_size, (32, CONTEXT), generator=g)
        t1 = time.perf_counter()
        TR.evaluate(model, val)
        out[k] = {"step_s": step_s, "eval_window_s": (time.perf_counter() - t1) / len(val), "params": params,
                  "fp16_bytes": 2 * params}
        print(f"[plan] {r.arch} d={r.d} L={r.layers} batch={r.batch}{' layerskip' if r.layerskip else ''}"
              f"{' finetune' if r.finetune_of else ''}: {step_s:.3f} s/step", flush=True)
    return out


def tokenizer_bytes() -> int:
    """Bytes of one tokenizer copy as the build writes it (compact JSON)."""
    d = zoo_root() / TOKENIZER_DIRNAME
    if not (d / "tokenizer.json").is_file():
        return COMPACT_TOKENIZER_BYTES
    compact = json.dumps(json.loads((d / "tokenizer.json").read_text(encoding="utf-8")), ensure_ascii=False,
                         separators=(",", ":"))
    return len(compact.encode()) + sum(f.stat().st_size for f in d.iterdir() if f.is_file() and f.name != "tokenizer.json")


def estimate(recipes, cal: dict, workers: int = 2) -> dict:
    """Per-model rows and totals (minutes, MB) from a calibration."""
    tok = tokenizer_bytes()
    rows = []
    for r in recipes:
        c = cal[shape_key(r)]
        seconds = r.steps * c["step_s"] + eval_windows(r) * c["eval_window_s"]
        folders = 1 + len([s for s in r.checkpoints if s != r.steps])
        size = folders * (c["fp16_bytes"] + SAFETENSORS_HEADER_BYTES + tok + SMALL_FILES_BYTES) + CARD_BYTES
        rows.append({"name": r.name, "class": r.class_name, "shape": f"{r.layers}x{r.d}", "params_M": c["params"] / 1e6,
                     "steps": r.steps, "tokens_M": r.steps * r.batch * CONTEXT / 1e6, "s_per_step": c["step_s"],
                     "minutes": seconds / 60, "folders": folders, "MB": size / 1e6})
    minutes = {row["name"]: row["minutes"] for row in rows}
    wall, _ = simulate(list(recipes), minutes, workers)
    wall += DATA_PREP_S / 60 * 2  # parent prepares, then each worker builds its data once (in parallel)
    total_mb = sum(row["MB"] for row in rows) + (tok + 1_000) / 1e6  # + data/zoo/tokenizer/
    return {"rows": rows, "worker_minutes": sum(minutes.values()), "wall_minutes": wall, "workers": workers,
            "total_MB": total_mb, "budget_minutes": BUDGET_MINUTES, "budget_MB": BUDGET_MB}


def format_table(est: dict) -> str:
    cols = ["name", "class", "shape", "params_M", "steps", "tokens_M", "s_per_step", "minutes", "folders", "MB"]
    fmt = {"params_M": "{:.2f}", "tokens_M": "{:.3f}", "s_per_step": "{:.3f}", "minutes": "{:.1f}", "MB": "{:.1f}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in est["rows"]:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(row[c]) for c in cols) + " |")
    ok_t = "within" if est["wall_minutes"] <= est["budget_minutes"] else "OVER"
    ok_s = "within" if est["total_MB"] <= est["budget_MB"] else "OVER"
    wall = (f"wall with {est['workers']} workers (greedy schedule, data preparation included): "
            f"{est['wall_minutes']:.1f} min ({ok_t} the {est['budget_minutes']:.0f}-minute budget)")
    size = (f"size of data/zoo (fp16, checkpoints and tokenizer copies included): {est['total_MB']:.1f} MB "
            f"({ok_s} the {est['budget_MB']:.0f} MB budget)")
    lines += ["", f"worker-minutes (sum): {est['worker_minutes']:.1f}", wall, size]
    return "\n".join(lines)


def main(steps: int = 10, workers: int = 2, json_path: str | None = None, recipes=None) -> dict:
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("[plan] note: run with OMP_NUM_THREADS=1 for timings comparable with a one-thread-per-worker build")
    torch.set_num_threads(1)
    plan = list(recipes or ZOO)
    cal = calibrate(plan, steps=steps)
    est = estimate(plan, cal, workers=workers)
    print(format_table(est))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({**est, "calibration_steps": steps}, f, indent=1)
    return est

