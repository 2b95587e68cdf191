"""The conclusions of a realised-decoding comparison (notebook 11), computed here and only rendered there.

`decoding_summary(frame, batch, ...)` reads `compare_decoding` rows (with "label" and "family" columns, several
models) and the batching frame (`batched_skip_ratio` rows with "label" and "rule"), and returns one row of facts
per model plus the markdown that states them.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["DecodingSummary", "decoding_summary", "equal_agreement", "EQUAL_AGREEMENT_COLUMNS"]

EQUAL_AGREEMENT_COLUMNS = ["label", "level", "rule", "strategy", "check", "agreement", "speed_ratio", "flop_speedup",
                           "skip_ratio", "oracle_speedup", "pays", "full_blocks", "blocks", "repair", "checks",
                           "prediction", "check_cost_share"]


@dataclass
class DecodingSummary:
    """facts: one row per model (oracle skip, best quality-keeping configuration, check cost, ...);
    batching: oracle skip ratio at batch 1 and 8 (NaN without batch rows); markdown: the rendered conclusions."""

    facts: pd.DataFrame
    batching: dict
    markdown: str

    def _repr_markdown_(self) -> str:
        return self.markdown


def equal_agreement(frame: pd.DataFrame, levels=(1.0, 0.95), by: str = "flop_speedup") -> pd.DataFrame:
    """Per model and agreement level: the early-exit configuration with the highest `by` (modelled
    ``flop_speedup`` by default, which timing noise cannot bias toward a lucky round; or measured
    ``speed_ratio``) among those that exit early and agree with full decoding on at
    least that share of the tokens, beside the oracle potential, with its modelled per-token cost split in
    blocks: ``blocks`` run (deferred and SSM-state rows included), cache ``repair`` (K/V writes), ``checks``
    (cheap checks + full readouts beyond the prediction) and the ``prediction`` head, against ``full_blocks``
    = L + head for full decoding. ``pays``: the configuration beats full decoding (`by` > 1). A level no
    configuration reaches gives a row with rule None."""
    need = {"label", "rule", "strategy", "agreement", "skip_ratio", by, "layers_per_token", "kv_writes_per_token",
            "kv_cost_blocks", "lens_calls_per_token", "head_cost_blocks", "oracle_skip_ratio"}
    missing = need - set(frame.columns)
    if missing:
        raise ValueError(f"the comparison frame lacks column(s) {sorted(missing)}")
    rows = []
    for label in dict.fromkeys(frame.label):
        m = frame[frame.label == label]
        full = m[m.rule == "full"]
        ref = full.iloc[0] if len(full) else m.iloc[0]
        h, L = float(ref.head_cost_blocks), float(ref.n_layers)
        e = m[(m.rule != "full") & (m.skip_ratio > 0)]
        for level in levels:
            ok = e[e.agreement >= level - 1e-12]
            row = dict(label=label, level=float(level), oracle_speedup=1 / (1 - float(ref.oracle_skip_ratio)),
                       full_blocks=L + h, rule=None)
            if len(ok):
                b = ok.loc[ok[by].idxmax()]
                checks_cheap = float(b.get("check_blocks_per_token", 0.0) or 0.0)
                lens = float(b.lens_calls_per_token)
                row.update(rule=b.rule, strategy=b.strategy, check=b.get("check"), agreement=float(b.agreement),
                           speed_ratio=float(b.speed_ratio), flop_speedup=float(b.get("flop_speedup", float("nan"))),
                           skip_ratio=float(b.skip_ratio), pays=bool(b[by] > 1.0), blocks=float(b.layers_per_token),
                           repair=float(b.kv_writes_per_token * b.kv_cost_blocks),
                           checks=checks_cheap + max(lens - 1.0, 0.0) * h, prediction=min(lens, 1.0) * h,
                           check_cost_share=float(b.get("check_cost_share", float("nan"))))
            rows.append(row)
    return pd.DataFrame(rows, columns=EQUAL_AGREEMENT_COLUMNS)


def _equal_agreement_text(t: pd.DataFrame) -> list[str]:
    lines = []
    for r in t.itertuples():
        head = f"**{r.label}** at ≥ {r.level:.0%} agreement"
        if r.rule is None:
            lines.append(f"{head}: no configuration exits early (oracle potential {_x(r.oracle_speedup)}).")
            continue
        cost = r.blocks + r.repair + r.checks + r.prediction
        split = (f"per token it costs {cost:.2f} block-equivalents against {r.full_blocks:.2f} for full decoding: "
                 f"{r.blocks:.2f} blocks run, {r.repair:.2f} cache repair, {r.checks:.2f} checks, "
                 f"{r.prediction:.2f} prediction head")
        verdict = "pays" if r.pays else "does not pay"
        lines.append(f"{head}: best {r.rule} / {r.strategy} ({r.check} check) at {_x(r.speed_ratio)} measured, "
                     f"{_x(r.flop_speedup)} modelled, skipping {r.skip_ratio:.0%} of the blocks "
                     f"(oracle potential {_x(r.oracle_speedup)}); it {verdict}: {split}.")
    return lines


def _x(v) -> str:
    return f"{v:.2f}×"


def _model_facts(m: pd.DataFrame, never_label: str, quality: float) -> dict:
    full = m[m.rule == "full"].iloc[0]
    e = m[m.rule != "full"]
    keep = e[(e.agreement >= quality) & (e.skip_ratio > 0)]  # exits early and keeps quality
    best = keep.loc[keep.speed_ratio.idxmax()] if len(keep) else None
    nv = e[e.rule == never_label]
    hs = e[e.kind == "hidden_saturation"]
    st = e[e.kind == "static"]
    return dict(label=m.label.iloc[0], family=m.family.iloc[0], n_layers=int(full.n_layers), full=full, e=e,
                oracle_skip=float(full.oracle_skip_ratio), best=best, never_speed=float(nv.speed_ratio.median()),
                never_flop=float(nv.flop_speedup.median()), hidden=hs, static=st)


def _verdict_on_best(f: dict, quality: float) -> str:
    best = f["best"]
    if best is None:
        return f"No configuration exits early and keeps ≥ {quality:.0%} agreement. "
    what = (f"{best.rule} / {best.strategy} at **{_x(best.speed_ratio)}** (it skips {best.skip_ratio:.0%} of the "
            f"blocks; simulated {best.sim_skip_ratio:.0%})")
    if best.speed_ratio > 1.1:
        return f"The fastest configuration that exits early and keeps ≥ {quality:.0%} agreement is {what}. "
    if best.speed_ratio >= 0.9:
        return (f"No configuration that exits early and keeps ≥ {quality:.0%} agreement is clearly faster than full "
                f"decoding; the best is {what}, within timing noise of 1×. ")
    return (f"Every configuration that exits early and keeps ≥ {quality:.0%} agreement is slower than full "
            f"decoding; the best is {what}. ")


def _model_text(f: dict, never_label: str, quality: float, strategies) -> str:
    full, L = f["full"], f["n_layers"]
    o = f["oracle_skip"]
    text = (f"**{f['label']}** ({f['family']}, L = {L}): the saturation oracle would skip **{o:.0%}** of "
            f"the blocks ({_x(1 / (1 - o))} if time ∝ blocks). ")
    text += _verdict_on_best(f, quality)
    text += (f"Checks alone ({never_label}, which never fires) run at {_x(f['never_speed'])}: one readout "
             f"costs about {full.head_cost_blocks:.2f} blocks of multiply-adds, so checking all {L - 1} "
             f"candidate layers predicts {_x(f['never_flop'])}")
    if f["never_speed"] > 1.1 * f["never_flop"]:
        text += (": measured is better than the multiply-adds predict, since a block costs more wall time than its "
                 "multiply-adds (per-call overheads" + (", expert routing" if f["family"] == "moe" else "") +
                 "), which makes a readout relatively cheaper. ")
    else:
        text += ". "
    hs, st = f["hidden"], f["static"]
    if len(hs):
        text += (f"{hs.rule.iloc[0]} needs no head until it exits: {_x(hs.speed_ratio.median())} at "
                 f"{hs.skip_ratio.median():.0%} skip. ")
    if len(st):
        sp = st.set_index("strategy")
        parts = [f"{s} {_x(sp.loc[s, 'speed_ratio'])}" for s in strategies if s in sp.index]
        text += (f"The check-free {st.rule.iloc[0]} runs at {', '.join(parts)} but agrees with full decoding on "
                 f"{st.agreement.median():.0%} of the tokens (simulated, teacher-forced: {st.sim_agreement.median():.0%}). ")
        if "propagate" in sp.index and full.family != "ssm":
            text += (f"Its propagate repair writes {sp.loc['propagate', 'kv_writes_per_token']:.1f} K/V entries per "
                     f"token (≈ {sp.loc['propagate', 'kv_writes_per_token'] * full.kv_cost_blocks:.2f} blocks). ")
        if "defer" in sp.index:
            text += (f"defer's speed leaves {sp.loc['defer', 'owed_per_token']:.1f} blocks per token owed, unpaid "
                     "inside the run. ")
    if f["family"] == "ssm":
        text += "On this SSM, propagate runs every skipped mixer to advance the state: its block work stays at 100%. "
    text += f"(The driver runs at {_x(full.driver_vs_generate)} the speed of `model.generate`.)"
    return text


def decoding_summary(frame: pd.DataFrame, batch: pd.DataFrame | None, *, never_label: str, quality: float = 0.95,
                     strategies=("propagate", "defer"), repeats: int = 1, n_prompts: int = 1,
                     max_new_tokens: int = 1, dtype: str = "float32") -> DecodingSummary:
    """Facts and markdown conclusions of notebook 11's comparison (see the module docstring).

    never_label: the label of the rule that never fires (its speed is the pure cost of the checks);
    quality: the agreement with full decoding that counts as keeping quality.
    """
    need = {"label", "family", "rule", "kind", "strategy", "speed_ratio", "skip_ratio", "agreement"}
    missing = need - set(frame.columns)
    if missing:
        raise ValueError(f"the comparison frame lacks column(s) {sorted(missing)} (compare_decoding rows with "
                         "'label' and 'family' added)")
    lines = ["### What the numbers say", ""]
    rows = []
    for label in dict.fromkeys(frame.label):
        f = _model_facts(frame[frame.label == label], never_label, quality)
        best = f["best"]
        rows.append(dict(label=label, family=f["family"], n_layers=f["n_layers"], oracle_skip_ratio=f["oracle_skip"],
                         oracle_speedup=1 / (1 - f["oracle_skip"]),
                         best_rule=None if best is None else best.rule,
                         best_strategy=None if best is None else best.strategy,
                         best_speed_ratio=float("nan") if best is None else float(best.speed_ratio),
                         check_speed_ratio=f["never_speed"], check_flop_speedup=f["never_flop"]))
        lines += [_model_text(f, never_label, quality, strategies), ""]
    if {"lens_calls_per_token", "layers_per_token"} <= set(frame.columns):
        lines += ["#### At equal agreement", ""] + _equal_agreement_text(equal_agreement(frame)) + [""]
    batching = {"oracle_batch1": float("nan"), "oracle_batch8": float("nan")}
    if batch is not None and len(batch):
        b8 = batch[(batch.batch_size == 8) & batch.rule.str.contains("saturation")]
        b1 = batch[(batch.batch_size == 1) & batch.rule.str.contains("saturation")]
        if len(b8):
            batching = {"oracle_batch1": float(b1.skip_ratio.mean()), "oracle_batch8": float(b8.skip_ratio.mean())}
            lines += [f"Batching: the oracle's skip ratio of {batching['oracle_batch1']:.0%} (batch 1, mean over "
                      f"models) falls to **{batching['oracle_batch8']:.0%}** at batch 8, when a batch runs until its "
                      "deepest token exits.", ""]
    lines += [f"Timing: {repeats} interleaved round(s), {n_prompts} prompt(s) × {max_new_tokens} tokens per model, "
              f"batch 1, {dtype} on CPU with other jobs possibly running: treat speed differences under about 10% as "
              "noise."]
    return DecodingSummary(facts=pd.DataFrame(rows), batching=batching, markdown="\n".join(lines))
