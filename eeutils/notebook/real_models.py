"""The real pretrained LLMs in the notebook series: one token budget per model, shared by every notebook.

Every notebook that reads a real model calls `real_readouts` / `real_task_readouts` with the same
budget, so the readout is computed once per run (`experiments.cached_readout` keys it by weights,
documents and settings) and reused by notebooks 3, 8, 9 and 10. The budgets are chosen so that the
main job (``python -m eeutils.series``) stays within 20 minutes on 2 CPU cores; SMOKE runs read a
few dozen tokens.

Also here: the facts table of the registered models, the per-layer prediction of one prompt
(notebook 1), the real-task accuracy and max skip within a budget (notebook 9; its finding rows, with
thresholds held out, from the protocol claim `max_skip_within_budget`), and the frame that puts measured EAS
beside the paper's reported numbers (notebook 8).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.exits import max_skip_under_budget, tradeoff
from ..analysis.heldout import claim_settings, heldout_table
from ..analysis.protocol import load_protocol
from ..analysis.rules import CONFIDENCE_RULES
from ..analysis.verdicts import verdict
from ..arch.real import REAL_MODELS as REGISTRY, is_real_name, real_spec
from ..lens.result import Readout
from .benchmark import PAPER_MAX_SKIP
from .experiments import cached_readout, label_of
from .findings import Finding, write_finding

REAL_MODELS = ("real/gemma-3-270m", "real/smollm2-135m-instruct")
DOC_TOKENS = 32  # tokens per document of the shared prose readout (many short documents: a tighter bootstrap)
# tokens of the shared prose readout per model, main job: Gemma's 262k-vocabulary head makes each token
# ~4x as costly as SmolLM2's 49k one (see docs/REAL_MODELS.md for the measured speeds)
REAL_TOKENS = {"real/gemma-3-270m": 384, "real/smollm2-135m-instruct": 768}
# items of the real-task readout (exact-answer prompts of ~20 tokens each) per model, main job
REAL_TASK_ITEMS = {"real/gemma-3-270m": 40, "real/smollm2-135m-instruct": 80}
SMOKE_TOKENS = 64
SMOKE_TASK_ITEMS = 6
PROMPT = "The capital of France is Paris. The capital of Germany is"


def real_table() -> pd.DataFrame:
    """One row per registered real model: what it is (from the registry in `eeutils.arch.real`)."""
    rows = []
    for name, s in REGISTRY.items():
        rows.append({"model": f"real/{name}", "title": s.title, "kind": s.kind, "class": s.model_class,
                     "layers": s.n_layers, "d_model": s.d_model, "vocab": s.vocab, "params_M": s.params / 1e6,
                     "released": s.release_year, "weights": f"{s.quantisation} quantised, dequantised to fp32",
                     "licence": s.licence, "upstream": s.upstream})
    return pd.DataFrame(rows)


def budget(model: str, tokens: dict | int | None = None, smoke: bool = False) -> dict:
    """{n_docs, max_tokens} of the shared prose readout of `model`: `tokens` (a per-model dict, an int, or
    None for REAL_TOKENS) split into documents of DOC_TOKENS tokens; SMOKE caps it at SMOKE_TOKENS."""
    real_spec(model)  # unknown names fail here, with the list of known ones
    total = tokens.get(model, REAL_TOKENS.get(model)) if isinstance(tokens, dict) else tokens
    total = REAL_TOKENS[model] if total is None else int(total)
    if smoke:
        total = min(total, SMOKE_TOKENS)
    if total < DOC_TOKENS:
        raise ValueError(f"a token budget of {total} for {model} is below one document ({DOC_TOKENS} tokens)")
    return {"n_docs": total // DOC_TOKENS, "max_tokens": DOC_TOKENS}


def task_items(model: str, items: dict | int | None = None, smoke: bool = False) -> int:
    """Items of the real-task readout of `model` (REAL_TASK_ITEMS by default, SMOKE_TASK_ITEMS in smoke)."""
    real_spec(model)
    n = items.get(model, REAL_TASK_ITEMS.get(model)) if isinstance(items, dict) else items
    n = REAL_TASK_ITEMS[model] if n is None else int(n)
    return min(n, SMOKE_TASK_ITEMS) if smoke else n


def models_for(models=REAL_MODELS, smoke: bool = False) -> list[str]:
    """The real models a notebook reads: all of `models`, or in SMOKE only the cheapest to read out
    (smallest layers x vocabulary: the head is most of the readout's cost)."""
    models = [str(m) for m in models]
    if not smoke or len(models) <= 1:
        return models
    return [min(models, key=lambda m: (real_spec(m).n_layers + 1) * real_spec(m).vocab)]


def readout_settings(model: str, *, n_docs: int | None, max_tokens: int | None, tokens=None, items=None,
                     smoke: bool = False) -> dict:
    """{n_docs, max_tokens, task_items} for a report on `model`: the shared budget for a real model (so its
    cached readouts are reused), else the given n_docs / max_tokens (and n_docs task items)."""
    if isinstance(model, str) and model.startswith("real/"):
        return {**budget(model, tokens, smoke), "task_items": task_items(model, items, smoke)}
    return {"n_docs": n_docs, "max_tokens": max_tokens, "task_items": n_docs}


def real_readouts(models=REAL_MODELS, workload: str | None = "zoo-prose", *, tokens=None, smoke: bool = False,
                  lens="logit", lens_settings=None, **load) -> dict[str, Readout]:
    """{label: Readout} of the real models on `workload` (None: the analysis protocol's workload) with their
    shared budget; lens / lens_settings as in `readout`; load: the other `experiments.cached_readout` options
    (cache_dir, dtype="float32", device, ...)."""
    if workload is None:
        workload = load_protocol().defaults["workload"]
    out = {}
    for m in models:
        b = budget(m, tokens, smoke)
        out[label_of(m)] = cached_readout(m, workload, n_docs=b["n_docs"], max_tokens=b["max_tokens"], lens=lens,
                                          lens_settings=lens_settings, **load)
    return out


def real_task_readouts(models=REAL_MODELS, *, items=None, smoke: bool = False, cache_dir=None,
                       dtype: str = "float32", device=None, workload: str = "real-task") -> dict[str, Readout]:
    """{label: Readout} of the real models on the exact-answer real-task (a seeded subset of its items)."""
    return {label_of(m): cached_readout(m, workload, n_docs=task_items(m, items, smoke), max_tokens=None,
                                        cache_dir=cache_dir, dtype=dtype, device=device)
            for m in models}


def token_counts(readouts: dict[str, Readout]) -> pd.DataFrame:
    """Documents and tokens actually read per model (what the notebooks and the README quote)."""
    return pd.DataFrame([{"model": k, "docs": r.n_docs, "tokens": r.n_tokens} for k, r in readouts.items()])


def layer_predictions(readout: Readout, decode, position: int = -1, doc: int = 0) -> pd.DataFrame:
    """What every layer predicts at one position (default: the last token of the first document).

    Columns: layer, rel_depth, top1 (decoded), p_top1, is_final (top-1 equals the last layer's)."""
    sel = np.flatnonzero(readout.doc == doc)
    if len(sel) == 0:
        raise ValueError(f"the readout has no document {doc}")
    row = sel[position]
    top1 = np.asarray(readout["top1"][row])
    L = readout.n_layers
    return pd.DataFrame({"layer": np.arange(L + 1), "rel_depth": np.arange(L + 1) / L,
                         "top1": [decode(int(t)) for t in top1], "p_top1": np.asarray(readout["max_prob"][row]),
                         "is_final": top1 == top1[-1]})


def settles_at(frame: pd.DataFrame) -> int:
    """First layer from which the top-1 equals the final one at every later layer (a `layer_predictions` frame)."""
    fin = frame.sort_values("layer").is_final.to_numpy()
    wrong = np.flatnonzero(~fin)
    return int(frame.layer.min()) if len(wrong) == 0 else int(frame.sort_values("layer").layer.iloc[wrong[-1] + 1])


def first_final(frame: pd.DataFrame) -> int:
    """First layer whose top-1 equals the final one (it may be lost again above; see `settles_at`)."""
    return int(frame.loc[frame.is_final, "layer"].min())


def task_skip(readouts: dict[str, Readout], budget_: float = 0.05) -> pd.DataFrame:
    """Per model on the exact-answer task: full accuracy (items right / items), and per rule the max skip
    ratio within `budget_` relative accuracy loss (over the answer tokens: `skip_over`). Columns: model, rule,
    skip_ratio, skip_over, threshold, loss, full_accuracy, n_items, n_correct."""
    frames = []
    for label, r in readouts.items():
        tr = tradeoff(r).assign(model=label)
        if tr.accuracy_kind.iloc[0] != "exact_match":
            raise ValueError(f"{label}: the readout has no answers (accuracy is {tr.accuracy_kind.iloc[0]!r}); "
                             "read an exact-answer workload such as 'real-task'")
        best = max_skip_under_budget(tr, budget=budget_, metric="accuracy")
        full = float(tr.full_accuracy.iloc[0])
        best = best.assign(full_accuracy=full, n_items=r.n_docs, n_correct=int(round(full * r.n_docs)))
        frames.append(best)
    cols = ["model", "rule", "skip_ratio", "skip_over", "threshold", "loss", "full_accuracy", "n_items", "n_correct"]
    return pd.concat(frames, ignore_index=True)[cols]


def versus_group(table: pd.DataFrame, labels, group, similarity: str = "top1") -> pd.DataFrame:
    """Each model of `labels` against the models of `group` (an `experiments.eas_table` frame): its normalised
    EAS with interval, the group's range of point values, and where it lies: "above every" / "below every"
    (its whole interval beyond the group's range), else "within the range of"."""
    t = table[table.similarity == similarity].set_index("model")
    g = t.loc[list(group), "normalised"]
    rows = []
    for m in labels:
        lo, hi = float(t.loc[m, "normalised_lo"]), float(t.loc[m, "normalised_hi"])
        where = ("above every" if lo > g.max() else "below every" if hi < g.min() else "within the range of")
        rows.append({"model": m, "normalised": float(t.loc[m, "normalised"]), "lo": lo, "hi": hi,
                     "group_min": float(g.min()), "group_max": float(g.max()), "position": where,
                     "n_layers": int(t.loc[m, "n_layers"])})
    return pd.DataFrame(rows)


def beside_reported(measured: pd.DataFrame, reported: pd.DataFrame, similarity: str = "logit_cos") -> pd.DataFrame:
    """Measured EAS (an `experiments.eas_table` frame) under `similarity` beside the reported EAS, one frame.

    Columns: model, eas, lo, hi, ceiling, source_kind ("reported, secondary source" or "measured here").
    The reported rows have no interval: the source gives none."""
    m = measured[measured.similarity == similarity]
    rep = reported.assign(lo=np.nan, hi=np.nan, ceiling=np.nan, source_kind="reported, secondary source")
    mine = m.assign(source_kind=f"measured here ({similarity})")
    cols = ["model", "eas", "lo", "hi", "ceiling", "source_kind"]
    return pd.concat([rep[cols], mine[cols]], ignore_index=True)


def reported_range_position(value: float, reported: pd.DataFrame) -> dict:
    """Where a measured EAS falls among the reported values: n_below, n_above, reported min and max."""
    v = reported.eas.to_numpy(dtype=float)
    return {"n_below": int((v < value).sum()), "n_above": int((v > value).sum()), "min": float(v.min()),
            "max": float(v.max()), "n": int(len(v))}


CLAIM = "max_skip_within_budget"  # the protocol claim of notebook 9's real-model rows


def confounds(models) -> str:
    """What differs between the real models of a side-by-side row (from the registry), and what that forbids."""
    specs = [real_spec(m) for m in models if is_real_name(m)]
    if len(specs) < 2:
        return ""
    facts = "; ".join(f"{s.title}: {s.model_class.removesuffix('ForCausalLM')}, {s.kind}, {s.release_year}, "
                      f"{s.params / 1e6:.0f}M parameters, {s.vocab // 1000}k vocabulary, {s.quantisation}"
                      for s in specs)
    return (f"{facts}. They differ in family, size, tuning, date and quantisation at once: each row is one model, "
            "and no base-vs-tuned or generation verdict is read from the pair.")


def heldout_skip(readouts: dict[str, Readout], rules=CONFIDENCE_RULES, n_boot: int | None = None,
                 key: str = CLAIM) -> pd.DataFrame:
    """`eeutils.analysis.heldout.heldout_table` of every readout (exact-answer, e.g. real-task) under the
    protocol claim `key`: thresholds chosen on one half of the items, skip and loss on the other, both orders."""
    s = claim_settings(key, n_boot)
    return pd.concat([heldout_table(r, rules, s, model=label) for label, r in readouts.items()], ignore_index=True)


def max_skip_claim(readouts: dict[str, Readout], out_dir=None, *, rules=CONFIDENCE_RULES, n_boot: int | None = None,
                   reported: float = PAPER_MAX_SKIP, workload: str = "real-task", deviations=(),
                   key: str = CLAIM) -> tuple[pd.DataFrame, list[Finding]]:
    """The protocol claim `max_skip_within_budget` on exact-answer readouts: the `heldout_skip` table and, per
    model, two findings (the budget oracle, like for like with the paper's oracle `reported` (reported,
    secondary source), and the best realisable rule chosen on the calibration half), written to
    <out_dir>/findings/09_benchmark_real_<model>_<oracle|rule>.json when out_dir is given."""
    s, protocol_boot = claim_settings(key, n_boot), claim_settings(key)["n_boot"]
    devs = list(deviations)
    if s["n_boot"] != protocol_boot:
        devs.append(f"n_boot {s['n_boot']} (protocol {protocol_boot})")
    table = heldout_skip(readouts, rules, s["n_boot"], key)
    side = confounds(list(readouts))
    out = []
    for model, g in table.groupby("model", sort=False):
        for what, pick in (("oracle", g.rule == s["reference"]), ("rule", g.best)):
            rows = g[pick].set_index("halves")
            f = _heldout_finding(rows.loc["primary"], rows.loc["swapped"], s, reported, key, what,
                                 dict(workload=workload, deviations="; ".join(devs), confounds=side))
            out.append(f)
            if out_dir is not None:
                write_finding(f, out_dir, f"09_benchmark_real_{model.removeprefix('real/')}_{what}")
    return table, out


def _effect(row, reported: float) -> tuple[float, float, float]:
    """(effect, lo, hi) of a held-out row: reported - skip, signed so that positive is the paper's direction."""
    return reported - float(row.skip), reported - float(row.skip_hi), reported - float(row.skip_lo)


def _heldout_finding(row, swapped, s: dict, reported: float, key: str, what: str, ctx: dict) -> Finding:
    """One finding of `max_skip_claim` from the primary row of a model and its swapped-halves twin."""
    effect, lo, hi = _effect(row, reported)
    e_sw, lo_sw, hi_sw = _effect(swapped, reported)
    sw = verdict(lo_sw, hi_sw, e_sw, s["min_effect"])
    name = "budget oracle" if what == "oracle" else f"best confidence rule ({row.rule}, chosen on the calibration half)"
    thr = "none within the budget there: the full model runs" if np.isnan(row.threshold) else f"{row.threshold:g}"
    comparison = ("budget oracle vs the paper's oracle: like for like in kind (other models, task and possibly "
                  "settings); solved on the held-out half (no threshold)" if what == "oracle" else
                  f"realisable rule vs the paper's oracle: not like for like (a rule cannot beat an oracle); "
                  f"threshold {thr}, chosen on the calibration half")
    met = "yes" if row.budget_met_ci else "no"
    how = "the oracle re-solved per replicate, so within the budget by construction; " if what == "oracle" else ""
    notes = (f"{int(row.n_calib)} calibration / {int(row.n_items)} held-out items (split seed {s['split_seed']}); "
             f"held-out full exact match {int(row.full_right)}/{int(row.n_items)}; {how}accuracy loss {row.loss:.1%} "
             f"[{row.loss_lo:.1%}, {row.loss_hi:.1%}], one-sided {1 - s['alpha']:.0%} upper bound "
             f"{row.loss_upper:.1%} (budget met with confidence: {met}); McNemar exact p {row.mcnemar_p:.3g} "
             f"({int(row.n_worse)} items lost, {int(row.n_better)} gained); swapped halves ({swapped.rule}): skip "
             f"{swapped.skip:.1%} [{swapped.skip_lo:.1%}, {swapped.skip_hi:.1%}], {sw}. {ctx['confounds']}").strip()
    v = verdict(lo, hi, effect, s["min_effect"])
    reason = ("zero-width interval: the threshold chosen on the calibration half exits no held-out item early, so "
              "the skip is 0 on every replicate" if row.skip_lo == row.skip_hi == 0 else "")
    over = "" if row.budget_met else f" (held-out loss {row.loss:.1%}: over the {s['budget']:.0%} budget)"
    return Finding(notebook="09_benchmark", claim=load_protocol().claim(key).claim,
                   paper_direction=f"skip ≤ {reported:.2%} (the paper's oracle; reported, secondary source)",
                   measured_direction=(f"{name} skips {row.skip:.1%} [{row.skip_lo:.1%}, {row.skip_hi:.1%}] on "
                                       f"held-out items{over}"),
                   effect=effect, lo=lo, hi=hi, models=row.model, comparison=comparison, notes=notes,
                   metric=(f"{reported:g} (reported, secondary source) − max skip ratio within {s['budget']:.0%} "
                           "relative accuracy loss (answer tokens, held-out half)"),
                   claim_key=key, interval_kind=row.interval_kind, ci=s["ci"], n_boot=s["n_boot"], boot_seed=s["seed"],
                   smallest_effect=s["min_effect"], robustness=f"{int(sw == v)}/1",
                   robustness_counts={x: int(sw == x) for x in ("agree", "disagree", "inconclusive")},
                   workload=ctx["workload"], n_docs=int(row.n_items), protocol_version=s["protocol_version"],
                   deviations=ctx["deviations"], reason=reason)
