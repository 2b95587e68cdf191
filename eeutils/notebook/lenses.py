"""Notebook 13 ("Is it the lens?"): the claims of notebooks 4-8 checked under the logit and the tuned lens.

The claims run through `claims.run_claim` under each lens (the tuned lens is the protocol's declared secondary
analysis: same sides, revisions, seeds and verdict rule); `lens_verdicts` sets the two runs of each comparison
side by side and says whether the conclusion holds under both lenses, flips, or depends on the lens.

The notebook's translators ship in data/lenses (`ship`, recorded recipe data/lenses/recipe.json, command
``python -m eeutils.notebook.lenses ship``); `train_lenses` trains them here instead, `lens_origins` says for
each readout whether its translators are the shipped ones.
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from .._version import __version__
from ..arch.loading import load_model
from ..core.resources import data_path
from ..core.spec import parse_model_spec
from ..decoding.summary import equal_agreement
from ..lens.tuned import (SHIPPED, TunedLensSettings, corpus_windows, heldout_kl, key_parts, parts_key, save_lens,
                          shipped_path, tuned_lens)

RECIPE = "recipe.json"  # data/lenses/recipe.json: which translators ship, with which settings and checks


def conclusion_status(logit_verdict: str, tuned_verdict: str) -> str:
    """How a conclusion fares across lenses: "holds under both" (same decisive verdict), "flips" (agree <->
    disagree), "lens-dependent" (decisive under one lens only), "inconclusive under both"."""
    decisive = ("agree", "disagree")
    if logit_verdict in decisive and tuned_verdict in decisive:
        return "holds under both" if logit_verdict == tuned_verdict else "flips"
    if logit_verdict in decisive or tuned_verdict in decisive:
        return "lens-dependent"
    return "inconclusive under both"


def lens_verdicts(runs: dict) -> pd.DataFrame:
    """One row per protocol comparison: effect, noise floor and verdict under each lens, and the status.

    runs: {(claim key, workload): {lens: ClaimRun}} from `claims.run_claim` with the same sides and rule under
    each lens (the lens is the only difference)."""
    rows = []
    for (key, workload), by_lens in runs.items():
        row = {"claim_key": key, "workload": workload}
        for lens, run in by_lens.items():
            f = run.finding
            row.update({"comparison": f.comparison, "paper_direction": f.paper_direction, "headline": f.headline,
                        f"effect_{lens}": f.effect, f"lo_{lens}": f.lo, f"hi_{lens}": f.hi,
                        f"floor_{lens}": f.noise_floor, f"verdict_{lens}": f.verdict, f"reason_{lens}": f.reason})
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table) and {"verdict_logit", "verdict_tuned"} <= set(table):
        table["status"] = [conclusion_status(a, b) for a, b in zip(table.verdict_logit, table.verdict_tuned)]
        table["sign_same"] = (table.effect_logit * table.effect_tuned) > 0
    return table


def decoding_by_lens(frames: dict[str, pd.DataFrame], levels=(1.0, 0.95)) -> pd.DataFrame:
    """Realised early-exit decoding of one model under each lens (`compare_decoding(..., lens=...)` frames):
    per lens and agreement level, the configuration with the highest modelled speed-up that exits early and
    keeps that agreement (`decoding.summary.equal_agreement`), its measured speed and cost split beside."""
    parts = [equal_agreement(f.assign(label=lens), levels) for lens, f in frames.items()]
    out = pd.concat(parts, ignore_index=True).rename(columns={"label": "lens"})
    out["rule"] = out["rule"].astype(object).where(out["rule"].notna(), None)  # a level nobody reaches: None
    return out


def decoding_by_lens_text(table: pd.DataFrame) -> str:
    """One line per agreement level: the best configuration under each lens and whether it pays (modelled
    speed-up > 1), so the notebook's conclusion is computed, not typed."""
    lines = []
    for level, g in table.groupby("level", sort=False):
        parts = []
        for r in g.itertuples():
            if r.rule is None or r.rule != r.rule:
                parts.append(f"{r.lens} lens: no configuration exits early at this agreement")
            else:
                parts.append(f"{r.lens} lens: {r.rule} / {r.strategy}, modelled {r.flop_speedup:.2f}x, measured "
                             f"{r.speed_ratio:.2f}x ({'pays' if r.flop_speedup > 1 else 'does not pay'}; "
                             f"checks {r.checks:.2f} blocks/token)")
        lines.append(f"- agreement >= {level:.0%}: " + "; ".join(parts))
    return "\n".join(lines)


def lens_gain(table: pd.DataFrame, lenses=("logit", "tuned")) -> pd.DataFrame:
    """Per model and similarity, normalised EAS under each lens and the tuned lens' gain, from an `eas_table`
    with a "lens" column: the gain's interval is conservative (lower bound of the tuned interval minus the upper
    bound of the logit one, and vice versa), since the two readouts share their documents but are bootstrapped
    apart. "clear" when that interval excludes zero."""
    rows = []
    for (model, sim), g in table.groupby(["model", "similarity"], sort=False):
        by = {r.lens: r for r in g.itertuples()}
        if not all(lens in by for lens in lenses):
            raise KeyError(f"{model} lacks a readout under one of {lenses}")
        a, b = by[lenses[0]], by[lenses[1]]
        lo, hi = b.normalised_lo - a.normalised_hi, b.normalised_hi - a.normalised_lo
        rows.append({"model": model, "similarity": sim, f"normalised_{lenses[0]}": a.normalised,
                     f"normalised_{lenses[1]}": b.normalised, "gain": b.normalised - a.normalised,
                     "gain_lo": lo, "gain_hi": hi, "clear": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ shipped translators
def shipped_recipe() -> dict:
    """The recorded recipe of the shipped translators: models, settings, held-out check, fp16 tolerance."""
    return json.loads(data_path(SHIPPED, RECIPE).read_text())


def ship_lens(name: str, revision: str | None, settings: TunedLensSettings, heldout: dict, fp16: dict,
              root=None, dtype: str = "float32") -> dict:
    """Train (or reuse this exact key's cached training) one model's translators and write its shipped file.

    Stored in fp16 when that moves the held-out KL (``heldout``: split, windows) by at most fp16's rtol/atol
    at every layer, else fp32. Metadata: model, revision, the key and its parts (weights digest, text,
    settings), held-out KL per layer (as stored, fp32, logit lens), kit version. Returns a summary row."""
    model = load_model(name, revision=revision, dtype=dtype)
    windows = corpus_windows(model, "train", settings.n_windows, settings.context, settings.seed)
    lens = tuned_lens(model, settings, windows, shipped=False, progress=False)
    va = corpus_windows(model, heldout["split"], heldout["windows"], settings.context)
    kl32, kl_logit = heldout_kl(model, va, lens), heldout_kl(model, va)
    kl16 = heldout_kl(model, va, copy.deepcopy(lens).half().float())
    half = bool(np.allclose(kl16, kl32, rtol=fp16["rtol"], atol=fp16["atol"]))
    parts = key_parts(model, windows, settings)
    meta = {"model": name, "revision": revision or "", "key": parts_key(parts), "weights": parts["weights"],
            "windows": parts["windows"], "settings": parts["settings"], "heldout": heldout,
            "heldout_kl": (kl16 if half else kl32).tolist(), "heldout_kl_fp32": kl32.tolist(),
            "heldout_kl_logit": kl_logit.tolist(), "kit_version": __version__,
            "recipe": "python -m eeutils.notebook.lenses ship (data/lenses/recipe.json)"}
    path = shipped_path(name, revision, root)
    save_lens(path, lens, meta, torch.float16 if half else torch.float32)
    return {"model": name, "revision": revision, "dtype": "float16" if half else "float32",
            "kl_change_fp16": float(np.abs(kl16 - kl32).max()), "heldout_kl_l0": float(kl32[0]),
            "logit_kl_l0": float(kl_logit[0]), "bytes": path.stat().st_size, "file": str(path)}


def ship(only=None, root=None) -> pd.DataFrame:
    """Regenerate the shipped translators from the recorded recipe (all, or the models named in ``only``)."""
    r = shipped_recipe()
    rows = [ship_lens(e["model"], e.get("revision"), TunedLensSettings(**e["settings"]), r["heldout"], r["fp16"],
                      root=root)
            for e in r["lenses"] if not only or e["model"] in only]
    return pd.DataFrame(rows)


def ships(spec, settings: TunedLensSettings) -> bool:
    """Whether the package ships translators for ``spec`` (name, 'name@rev' or (name, rev)) trained with
    ``settings`` (the file's recorded settings; `tuned_lens` still checks its weights digest and checksum)."""
    path = shipped_path(*parse_model_spec(spec))
    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {}).get("settings", "null")) == asdict(settings)


def lens_budget(specs, full: TunedLensSettings, smoke_budget: TunedLensSettings, smoke: bool,
                train: bool) -> TunedLensSettings:
    """The translators' settings a notebook asks for: ``full`` (the shipped recipe's), except in a smoke run
    that would train: when training here (``train``) or when some model ships no translators for ``full``,
    the small ``smoke_budget`` (a smoke run never trains a full budget)."""
    if not smoke or (not train and all(ships(s, full) for s in specs)):
        return full
    return smoke_budget


def train_lenses(specs, settings: TunedLensSettings, dtype: str = "float32", device=None) -> list[str]:
    """Train here, into the cache the readouts read, the translators of each spec (name, 'name@rev' or
    (name, rev)) with ``settings``, ignoring the shipped ones; returns their digests."""
    out = []
    for spec in specs:
        name, rev = parse_model_spec(spec)
        model = load_model(name, revision=rev, dtype=dtype, device=device)
        out.append(tuned_lens(model, settings, shipped=False, progress=False).digest())
    return out


def lens_origins(readouts: dict) -> pd.DataFrame:
    """Per tuned-lens readout: whether its translators are the shipped ones (their recorded checksum equals
    the readout's lens digest) or were trained on this machine (now or cached), and the shipped file's
    recorded held-out KL at layer 0."""
    rows = []
    for label, r in readouts.items():
        path = shipped_path(r.meta["model"], r.meta.get("revision"))
        meta = {}
        if path.is_file():
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        same = meta.get("sha256") == r.meta["lens_digest"]
        rows.append({"model": label, "translators": "shipped" if same else "trained on this machine",
                     "file": f"data/{SHIPPED}/{path.relative_to(data_path(SHIPPED))}" if same else "",
                     "stored_as": meta.get("dtype", "") if same else "",
                     "shipped_heldout_kl_l0": json.loads(meta["heldout_kl"])[0] if same else float("nan")})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m eeutils.notebook.lenses",
                                 description="Regenerate the shipped tuned-lens translators (data/lenses).")
    ap.add_argument("command", choices=["ship"])
    ap.add_argument("--only", nargs="*", help="model names to regenerate (default: all in the recipe)")
    args = ap.parse_args(argv)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(ship(args.only))


if __name__ == "__main__":
    main()
