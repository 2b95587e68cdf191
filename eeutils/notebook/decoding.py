"""Notebook 11's conclusions in prose: `decoding_summary` writes the facts `eeutils.decoding.summary` computes
from a realised-decoding comparison as markdown (the numbers stay in `eeutils.decoding`, the words here)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..decoding.summary import decoding_facts, equal_agreement

__all__ = ["DecodingSummary", "TimingSetup", "decoding_summary"]


@dataclass
class DecodingSummary:
    """facts: one row per model (oracle skip, best quality-keeping configuration, check cost, ...);
    batching: oracle skip ratio at batch 1 and 8 (NaN without batch rows); markdown: the rendered conclusions."""

    facts: pd.DataFrame
    batching: dict
    markdown: str

    def _repr_markdown_(self) -> str:
        return self.markdown


@dataclass(frozen=True)
class TimingSetup:
    """How the comparison was timed, for the closing sentence: interleaved rounds, prompts and tokens per
    model, dtype."""

    repeats: int = 1
    n_prompts: int = 1
    max_new_tokens: int = 1
    dtype: str = "float32"


def _x(v) -> str:
    return f"{v:.2f}×"


def _equal_agreement_text(t: pd.DataFrame) -> list[str]:
    lines = []
    for r in t.itertuples():
        head = f"**{r.label}** at ≥ {r.level:.0%} agreement"
        if pd.isna(r.rule):  # None, or NaN once another level's row has a rule
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


def _static_text(st: pd.DataFrame, full, strategies) -> str:
    sp = st.set_index("strategy")
    parts = [f"{s} {_x(sp.loc[s, 'speed_ratio'])}" for s in strategies if s in sp.index]
    text = (f"The check-free {st.rule.iloc[0]} runs at {', '.join(parts)} but agrees with full decoding on "
            f"{st.agreement.median():.0%} of the tokens (simulated, teacher-forced: {st.sim_agreement.median():.0%}). ")
    if "propagate" in sp.index and full.family != "ssm":
        text += (f"Its propagate repair writes {sp.loc['propagate', 'kv_writes_per_token']:.1f} K/V entries per "
                 f"token (≈ {sp.loc['propagate', 'kv_writes_per_token'] * full.kv_cost_blocks:.2f} blocks). ")
    if "defer" in sp.index:
        text += (f"defer's speed leaves {sp.loc['defer', 'owed_per_token']:.1f} blocks per token owed, unpaid "
                 "inside the run. ")
    return text


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
    hs = f["hidden"]
    if len(hs):
        text += (f"{hs.rule.iloc[0]} needs no head until it exits: {_x(hs.speed_ratio.median())} at "
                 f"{hs.skip_ratio.median():.0%} skip. ")
    if len(f["static"]):
        text += _static_text(f["static"], full, strategies)
    if f["family"] == "ssm":
        text += "On this SSM, propagate runs every skipped mixer to advance the state: its block work stays at 100%. "
    text += f"(The driver runs at {_x(full.driver_vs_generate)} the speed of `model.generate`.)"
    return text


def decoding_summary(frame: pd.DataFrame, batch: pd.DataFrame | None, *, never_label: str, quality: float = 0.95,
                     strategies=("propagate", "defer"), timing: TimingSetup = TimingSetup()) -> DecodingSummary:
    """Facts (`eeutils.decoding.summary.decoding_facts`) and markdown conclusions of notebook 11's comparison.

    frame: `compare_decoding` rows with "label" and "family" columns; batch: `batched_skip_ratio` rows with
    "label" and "rule", or None. never_label: the label of the rule that never fires (its speed is the pure cost
    of the checks); quality: the agreement with full decoding that counts as keeping quality; strategies: the
    order the static rule's speeds are listed in; timing: how the comparison was timed.
    """
    facts = decoding_facts(frame, batch, never_label=never_label, quality=quality)
    lines = ["### What the numbers say", ""]
    for f in facts.per_model:
        lines += [_model_text(f, never_label, quality, strategies), ""]
    if {"lens_calls_per_token", "layers_per_token"} <= set(frame.columns):
        lines += ["#### At equal agreement", ""] + _equal_agreement_text(equal_agreement(frame)) + [""]
    b = facts.batching
    if not math.isnan(b["oracle_batch8"]):
        lines += [f"Batching: the oracle's skip ratio of {b['oracle_batch1']:.0%} (batch 1, mean over "
                  f"models) falls to **{b['oracle_batch8']:.0%}** at batch 8, when a batch runs until its "
                  "deepest token exits.", ""]
    lines += [f"Timing: {timing.repeats} interleaved round(s), {timing.n_prompts} prompt(s) × {timing.max_new_tokens} "
              f"tokens per model, batch 1, {timing.dtype} on CPU with other jobs possibly running: treat speed "
              "differences under about 10% as noise."]
    return DecodingSummary(facts=facts.table, batching=b, markdown="\n".join(lines))
