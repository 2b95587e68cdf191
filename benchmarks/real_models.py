#!/usr/bin/env python
"""Measurements of the real GGUF models (eeutils.arch.real), one model per run, printed as one table:

- convert_s: the one-time GGUF -> fp32 conversion (from the folder's source.json; pass --fresh to redo it
  into a temporary cache), load_s: load_model("real/<name>") from the converted folder,
- readout tok/s: eeutils.readout on ~`--tokens` tokens of zoo-prose, and the last layer vs the model's own
  logits (eeutils.check_last_layer, fp32),
- accuracy: full-model greedy exact match on the real-task workload per subtask (teacher-forced argmax
  on every answer token = greedy decoding of the answer span), tokenised exactly as the readout does.

    .venv/bin/python benchmarks/real_models.py --model real/smollm2-135m-instruct --tokens 256
"""
from __future__ import annotations

import argparse
import collections
import json
import resource
import time

import numpy as np
import torch


def greedy_exact_match(lm, items, batch_size: int = 8) -> dict:
    """{subtask: (n, n_correct)} of full-model exact match on (subtask, prompt, answer) items."""
    from eeutils.lens.readout import tokenize_docs
    from eeutils.workloads import Doc

    docs = [Doc(prompt=p, answer=a) for _, p, a in items]
    ids_list, answer_list, _ = tokenize_docs(lm, docs, None, "error")
    res = collections.defaultdict(lambda: [0, 0])
    first = lm.model.get_input_embeddings().weight.device
    with torch.inference_mode():
        for b in range(0, len(items), batch_size):
            rows = range(b, min(b + batch_size, len(items)))
            T = max(len(ids_list[i]) for i in rows)
            ids = torch.zeros((len(rows), T), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(rows):
                ids[r, :len(ids_list[i])] = torch.tensor(ids_list[i])
                mask[r, :len(ids_list[i])] = 1
            pred = lm.model(input_ids=ids.to(first), attention_mask=mask.to(first), use_cache=False).logits.argmax(-1)
            for r, i in enumerate(rows):
                n = len(ids_list[i])
                pos = np.flatnonzero(answer_list[i])
                ok = bool((pred[r, pos].cpu().numpy() == np.asarray(ids_list[i])[pos + 1]).all()) and n > 0
                res[items[i][0]][0] += 1
                res[items[i][0]][1] += ok
    return {k: tuple(v) for k, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="real/<name>")
    ap.add_argument("--tokens", type=int, default=256, help="tokens for the readout speed measurement")
    ap.add_argument("--fresh", action="store_true", help="time a conversion into a fresh temporary cache")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    torch.manual_seed(0)
    import eeutils
    from eeutils.arch.real import resolve_real
    from eeutils.workloads.real_tasks import real_task_items
    from eeutils.workloads import get_workload

    eeutils.quiet()
    row = {"model": args.model, "threads": torch.get_num_threads()}
    if args.fresh:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            resolve_real(args.model, cache_dir=d, progress=False)
            row["convert_s"] = round(time.perf_counter() - t0, 1)
    folder = resolve_real(args.model)
    row.setdefault("convert_s", json.loads((folder / "source.json").read_text())["convert_seconds"])
    t0 = time.perf_counter()
    lm = eeutils.load_model(args.model)
    row["load_s"] = round(time.perf_counter() - t0, 2)

    text = " ".join(d.text for d in get_workload("zoo-prose", n_docs=3, seed=0).docs)
    ids = lm.encode(text)[:args.tokens]
    row["check_last_layer"] = eeutils.check_last_layer(lm, ids[:64])
    eeutils.readout(lm, [ids], progress=False)  # warm-up on the same shapes
    t0 = time.perf_counter()
    ro = eeutils.readout(lm, [ids], progress=False)
    dt = time.perf_counter() - t0
    row.update(readout_tokens=ro.n_tokens, readout_s=round(dt, 2), readout_tok_per_s=round(ro.n_tokens / dt, 1))

    t0 = time.perf_counter()
    acc = greedy_exact_match(lm, real_task_items("all"))
    row["accuracy_s"] = round(time.perf_counter() - t0, 1)
    n = sum(v[0] for v in acc.values())
    c = sum(v[1] for v in acc.values())
    row["real_task_exact_match"] = round(c / n, 3)
    row["by_subtask"] = {k: f"{v[1]}/{v[0]}" for k, v in sorted(acc.items())}
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    for k, v in row.items():
        print(f"{k:24s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)


if __name__ == "__main__":
    main()
