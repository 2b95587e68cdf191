"""The facts of a realised-decoding comparison (notebook 11), computed here; the notebook layer
(`eeutils.notebook.decoding.decoding_summary`) writes them as prose.

`decoding_facts(frame, batch, ...)` reads `compare_decoding` rows (with "label" and "family" columns, several
models) and the batching frame (`batched_skip_ratio` rows with "label" and "rule"), and returns one row of facts
per model, the facts the prose reads per model, and the oracle's skip ratio at batch 1 and 8.
`equal_agreement` compares configurations at equal agreement with full decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["DecodingFacts", "decoding_facts", "model_facts", "equal_agreement", "EQUAL_AGREEMENT_COLUMNS"]

EQUAL_AGREEMENT_COLUMNS = ["label", "level", "rule", "strategy", "check", "agreement", "speed_ratio", "flop_speedup",
                           "skip_ratio", "oracle_speedup", "pays", "full_blocks", "blocks", "repair", "checks",
                           "prediction", "check_cost_share"]
_NEEDED = {"label", "family", "rule", "kind", "strategy", "speed_ratio", "skip_ratio", "agreement"}


@dataclass
class DecodingFacts:
    """table: one row per model (oracle skip, best quality-keeping configuration, check cost, ...); per_model:
    the same facts with the frame rows behind them (`model_facts`), in model order; batching: the oracle's skip
    ratio at batch 1 and 8 (NaN without batch-8 rows)."""

    table: pd.DataFrame
    per_model: list[dict]
    batching: dict


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


def model_facts(m: pd.DataFrame, never_label: str, quality: float) -> dict:
    """One model's comparison rows read for the summary: its full row, the early-exit rows (e), the fastest
    configuration that exits early and keeps `quality` agreement (best, or None), the never-firing rule's
    measured and modelled speed (the pure cost of the checks), the hidden_saturation and static rows."""
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


def _table_row(f: dict) -> dict:
    best = f["best"]
    return dict(label=f["label"], family=f["family"], n_layers=f["n_layers"], oracle_skip_ratio=f["oracle_skip"],
                oracle_speedup=1 / (1 - f["oracle_skip"]), best_rule=None if best is None else best.rule,
                best_strategy=None if best is None else best.strategy,
                best_speed_ratio=float("nan") if best is None else float(best.speed_ratio),
                check_speed_ratio=f["never_speed"], check_flop_speedup=f["never_flop"])


def _batching(batch: pd.DataFrame | None) -> dict:
    """The saturation oracle's mean skip ratio over models at batch 1 and at batch 8 (NaN without batch-8 rows)."""
    out = {"oracle_batch1": float("nan"), "oracle_batch8": float("nan")}
    if batch is not None and len(batch):
        b8 = batch[(batch.batch_size == 8) & batch.rule.str.contains("saturation")]
        b1 = batch[(batch.batch_size == 1) & batch.rule.str.contains("saturation")]
        if len(b8):
            out = {"oracle_batch1": float(b1.skip_ratio.mean()), "oracle_batch8": float(b8.skip_ratio.mean())}
    return out


def decoding_facts(frame: pd.DataFrame, batch: pd.DataFrame | None, *, never_label: str,
                   quality: float = 0.95) -> DecodingFacts:
    """The facts of notebook 11's comparison (see the module docstring).

    never_label: the label of the rule that never fires (its speed is the pure cost of the checks);
    quality: the agreement with full decoding that counts as keeping quality.
    """
    missing = _NEEDED - set(frame.columns)
    if missing:
        raise ValueError(f"the comparison frame lacks column(s) {sorted(missing)} (compare_decoding rows with "
                         "'label' and 'family' added)")
    per_model = [model_facts(frame[frame.label == label], never_label, quality) for label in dict.fromkeys(frame.label)]
    return DecodingFacts(table=pd.DataFrame([_table_row(f) for f in per_model]), per_model=per_model,
                         batching=_batching(batch))
