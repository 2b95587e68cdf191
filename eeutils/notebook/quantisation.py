"""Quantisation measured (notebook 8): zoo models quantised to the real models' formats and read like the rest.

The two real models are Q4 GGUF files (Gemma 3 270M Q4_K_M, SmolLM2 Q4_1) dequantised on load, while the zoo
is fp16, so part of any zoo-vs-real gap could be the quantisation. Here each zoo model is round-tripped
through both formats (`eeutils.arch.quant`), read with the same pipeline and settings as its fp16 original
(the protocol's workload, documents and tokens), and the change in EAS / ceiling and in each layer's top-1
agreement with the final layer gets a paired document-bootstrap interval (`eeutils.analysis.shift`). The
scale to judge it by: the seed-noise floor (two seeds of one recipe) and the gap between the two real models.
A descriptive table, not a verdict on a claim of the paper.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.eas import eas
from ..analysis.shift import eas_shift, layer_shift
from ..arch.quant import FORMATS, bits_per_weight, quantised_folder, read_plan
from ..lens.result import Readout
from .experiments import cached_readout, label_of

QUANT_MODELS = ("zoo/dense-mid", "zoo/dense-mid-s1", "zoo/moe-mid", "zoo/ssm-mid", "zoo/hybrid-mid",
                "zoo/gpt2-mid-full")
SEED_TWINS = ("dense-mid", "dense-mid-s1")  # the pair whose gap is the seed-noise floor
ORIGINAL = "fp16"


def quantised_readouts(models=QUANT_MODELS, formats=tuple(FORMATS), workload="zoo-prose", *, load: dict,
                       quant_cache=None) -> tuple[dict, dict]:
    """({(label, format): Readout} with format "fp16" for the originals, {(label, format): quantised folder}).

    load: the notebook's cached-readout options (n_docs, max_tokens, cache_dir, dtype, device), the same for
    every model and format, so the readouts hold the same tokens. quant_cache: root of the quantised folders
    (default $EEUTILS_CACHE)."""
    readouts, folders = {}, {}
    for m in models:
        label = label_of(m)
        readouts[(label, ORIGINAL)] = cached_readout(m, workload, **load)
        for fmt in formats:
            folders[(label, fmt)] = quantised_folder(m, fmt, cache_dir=quant_cache)
            readouts[(label, fmt)] = cached_readout(str(folders[(label, fmt)]), workload, **load)
    return readouts, folders


def plan_summary(folder) -> dict:
    """Share of the weights that were quantised, mean stored bits per weight, the types used (by weights) and
    the weighted relative RMS error of a quantised folder."""
    rows = pd.DataFrame(read_plan(folder))
    n = rows.n_weights.sum()
    quantised = rows[~rows.qtype.isin(["keep", "F16"])]
    by_type = quantised.groupby("qtype").n_weights.sum().sort_values(ascending=False)
    return {"quantised_share": float(quantised.n_weights.sum() / n),
            "bits_per_weight": float((rows.n_weights * rows.qtype.map(bits_per_weight)).sum() / n),
            "types": ", ".join(f"{t} {w / n:.0%}" for t, w in by_type.items()),
            "short_block_share": float(rows[rows.short_block].n_weights.sum() / n),
            "rel_rmse": float(np.sqrt((rows.n_weights * rows.rel_rmse ** 2).sum() / quantised.n_weights.sum()))
            if len(quantised) else 0.0}


def shift_table(readouts: dict, folders: dict, *, primary: dict, n_boot: int, seed: int = 0,
                ci: float = 0.95) -> pd.DataFrame:
    """One row per (model, format): fp16 and quantised EAS / ceiling under the primary metric, the shift with its
    paired interval, the mean over blocks of the top-1 agreement shift, and the quantisation plan's summary."""
    rows = []
    for (label, fmt), folder in folders.items():
        base, other = readouts[(label, ORIGINAL)], readouts[(label, fmt)]
        kw = dict(similarity=primary["similarity"], alpha=primary["alpha"])
        s = eas_shift(base, other, value=primary["value"], n_boot=n_boot, ci=ci, seed=seed, **kw)
        per_layer = layer_shift(base, other, similarity="top1", n_boot=1, seed=seed)
        blocks = per_layer[(per_layer.layer >= 1) & (per_layer.layer < base.n_layers)]
        rows.append({"model": label, "format": fmt, "real_model": FORMATS[fmt].real_model,
                     "eas_fp16": s["base"], "eas_quantised": s["other"], "shift": s["shift"], "lo": s["lo"],
                     "hi": s["hi"], "top1_agreement_shift": float(blocks["shift"].mean()),
                     **plan_summary(folder), "n_docs": s["n_docs"], "n_tokens": base.n_tokens, "n_boot": n_boot,
                     "interval_kind": s["interval_kind"], "metric": _metric_name(primary)})
    return pd.DataFrame(rows)


def layer_table(readouts: dict, folders: dict, *, n_boot: int, seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Per (model, format, layer): top-1 agreement with the final layer, fp16 and quantised, and the paired shift."""
    frames = []
    for (label, fmt) in folders:
        f = layer_shift(readouts[(label, ORIGINAL)], readouts[(label, fmt)], similarity="top1", n_boot=n_boot,
                        ci=ci, seed=seed)
        frames.append(f.assign(model=label, format=fmt))
    return pd.concat(frames, ignore_index=True)


def _metric_name(primary: dict) -> str:
    return f"EAS/ceiling ({primary['similarity']}, alpha {primary['alpha']})" if primary["value"] == "normalised" \
        else f"EAS ({primary['similarity']}, alpha {primary['alpha']})"


def normalised_eas(readouts: dict[str, Readout], primary: dict) -> dict[str, float]:
    """{label: EAS / ceiling (or raw EAS) under the primary metric}."""
    key = "normalised" if primary["value"] == "normalised" else "value"
    return {m: float(getattr(eas(r, similarity=primary["similarity"], alpha=primary["alpha"]), key))
            for m, r in readouts.items()}


FLOOR = "seed-noise floor |dense-mid - dense-mid-s1| (fp16)"
REAL_GAP = "gap between the two real models"
REAL_TO_ZOO = "highest real model below the lowest fp16 zoo model"


def scale_table(table: pd.DataFrame, real: dict[str, float]) -> pd.DataFrame:
    """The largest |quantisation shift| per format beside its yardsticks: the seed-noise floor (the two seed
    twins' fp16 scores) and, from the real rows' scores under the same metric, the gap between the two real
    models and how far the highest real model lies below the lowest fp16 zoo model."""
    twins = [table.loc[table.model == m, "eas_fp16"] for m in SEED_TWINS]
    a, b = (float(t.iloc[0]) if len(t) else np.nan for t in twins)
    rows = [{"quantity": f"largest |shift|, {fmt} ({len(g)} zoo models)", "value": float(g["shift"].abs().max()),
             "detail": ", ".join(f"{r.model} {r.shift:+.3f}" for r in g.itertuples())}
            for fmt, g in table.groupby("format", sort=False)]
    rows.append({"quantity": FLOOR, "value": abs(a - b), "detail": f"{a:.3f} vs {b:.3f}"})
    ranked = sorted(real.items(), key=lambda kv: kv[1])
    if len(ranked) >= 2:
        rows.append({"quantity": REAL_GAP, "value": ranked[-1][1] - ranked[0][1],
                     "detail": " vs ".join(f"{m} {v:.3f}" for m, v in ranked)})
    if ranked:
        zoo = float(table.drop_duplicates("model").eas_fp16.min())
        rows.append({"quantity": REAL_TO_ZOO, "value": zoo - ranked[-1][1],
                     "detail": f"lowest zoo {zoo:.3f}, {ranked[-1][0]} {ranked[-1][1]:.3f}"})
    return pd.DataFrame(rows)


def _times(a: float, b: float) -> str:
    if not (b > 0 and np.isfinite(a / b)):
        return "not comparable with"
    return f"{a / b:.2g} times" if a / b < 10 else f"{a / b:.0f} times"


def implication(scale: pd.DataFrame) -> str:
    """The scale table in words (Markdown bullets), every number read from it."""
    v = scale.set_index("quantity").value
    largest = float(scale[scale.quantity.str.startswith("largest")].value.max())
    lines = [f"* The largest quantisation shift of the zoo's score is {largest:.3f}, {_times(largest, v[FLOOR])} the "
             f"seed-noise floor ({v[FLOOR]:.3f}): quantisation moves a zoo model's score "
             f"{'less' if largest < v[FLOOR] else 'more'} than retraining it with another seed does."]
    proviso = "provided the real models respond to their format as the zoo models do"
    if REAL_GAP in v:
        gap = float(v[REAL_GAP])
        verb = "is too small to account for" if gap > largest else "could account for"
        lines.append(f"* The two real models differ by {gap:.3f}, {_times(gap, largest)} that shift: a quantisation "
                     f"shift of this size {verb} the gap, {proviso} (the two also differ in family, size, tuning "
                     "and date).")
    if REAL_TO_ZOO in v:
        dist = float(v[REAL_TO_ZOO])
        verb = "does not explain" if abs(dist) > largest else "could explain"
        lines.append(f"* The highest real row lies {dist:.3f} below the lowest fp16 zoo model, "
                     f"{_times(abs(dist), largest)} the largest shift: quantisation {verb} where the real rows sit "
                     f"relative to the zoo, {proviso}.")
    return "\n".join(lines)
