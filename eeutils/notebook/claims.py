"""Run a protocol claim (data/protocol.yaml) on the zoo or on models given by the notebook, and write its record.

`run_claim(key, out_dir, load)` resolves the claim's sides (revisions at matched loss, borrowed twins), reads
the readouts (cached), computes the primary verdict and every secondary variant (`eeutils.analysis.verdicts`),
and writes a `Finding`. A model missing from the zoo (e.g. a twin not built yet) never crashes a notebook: the
row is inconclusive and says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..analysis.matching import (
    closest_revision,
    final_loss,
    revision_losses,
    unigram_loss,
)
from ..analysis.protocol import Claim, load_protocol
from ..analysis.trend import checkpoint_scores, trend_effect
from ..analysis.verdicts import Effect, Rule, compare, robustness
from ..arch.names import ZooError, list_revisions
from ..core.spec import parse_model_spec
import eeutils.notebook.experiments as ex
from .findings import Finding, direction_word, write_finding
from .records import write_scores

__all__ = [
    "ClaimRun",
    "checkpoint_choices",
    "claim_specs",
    "claim_workloads",
    "describe",
    "deviations",
    "keys_for",
    "lens_of",
    "load_options",
    "loss_table",
    "primary",
    "raw_vs_normalised",
    "run_claim",
    "step_of",
    "summary",
    "variant_table",
]


def step_of(revision: str) -> int:
    """Training step of a revision name: "step-264" -> 264, Pythia's "step1000" -> 1000."""
    digits = "".join(ch for ch in str(revision) if ch.isdigit())
    if not digits:
        raise ValueError(f"revision {revision!r} names no training step")
    return int(digits)


def keys_for(notebook: str) -> list[str]:
    """The protocol's claim keys for a notebook ("05" -> dense_vs_moe, ...)."""
    return [c.key for c in load_protocol().for_notebook(notebook)]


def claim_workloads(key: str) -> list[str]:
    """The workloads a claim is checked on (its own list, else the protocol's default workload)."""
    proto = load_protocol()
    return list(proto.claim(key).workloads) or [proto.defaults["workload"]]


def primary() -> dict:
    """The protocol's primary metric: {similarity, value, alpha}."""
    return load_protocol().primary


@dataclass
class ClaimRun:
    """What a notebook shows for one claim: the record, the primary and variant effects, the readouts used."""

    finding: Finding
    primary: Effect | None
    variants: list = field(default_factory=list)
    readouts: dict = field(default_factory=dict)
    sides: dict = field(default_factory=dict)
    table: object = None  # trend claims: the per-checkpoint scores
    labels: dict = field(default_factory=dict)  # trend claims: {(run, step): readout label}
    blocked: bool = False  # matched loss with no revision close enough: the row is inconclusive


def load_options(load: dict) -> dict:
    """The notebook's readout options with n_docs / max_tokens left at None filled from the protocol."""
    d = load_protocol().defaults
    out = dict(load)
    for k in ("n_docs", "max_tokens"):
        if out.get(k) is None:
            out[k] = d[k]
    return out


def deviations(load: dict, n_boot: int, workload: str | None = None) -> list[str]:
    """Where this run departs from the protocol (a smoke run, a changed workload), for the record."""
    d = load_protocol().defaults
    out = [f"{k} {load.get(k)} (protocol {d[k]})" for k in ("n_docs", "max_tokens") if load.get(k) != d[k]]
    if n_boot != d["n_boot"]:
        out.append(f"n_boot {n_boot} (protocol {d['n_boot']})")
    if workload is not None and workload != d["workload"]:
        out.append(f"workload {workload} (protocol {d['workload']})")
    return out


def _read(specs, workload, load) -> tuple[dict, list]:
    """{label: Readout} of the specs that exist, and the labels of those that do not."""
    got, missing = {}, []
    for s in specs:
        try:
            got[ex.label_of(s)] = ex.cached_readout(s, workload, **load)
        except ZooError:
            missing.append(ex.label_of(s))
    return got, missing


def _with_rev(spec: str, rev: str | None) -> str:
    name, _ = parse_model_spec(spec)
    return name if rev in (None, "main") else f"{name}@{rev}"


def _matched_side(claim: Claim, a: list, b: list, max_gap: float) -> tuple[list, list, str, bool]:
    """Pick the matched-loss revision for side claim.match; returns (a, b, note, blocked): blocked when no
    revision lies within max_gap of the target loss or models are missing (the row is then inconclusive)."""
    chosen, other = (a, b) if claim.match == "a" else (b, a)
    cands, target = {}, []
    for s in other:
        try:
            target.append(final_loss(s))
        except ZooError:
            pass
    for s in chosen:
        name, _ = parse_model_spec(s)
        try:
            final = list_revisions(name)[-1] if list_revisions(name) else None
            for rev, loss in revision_losses(name).items():
                cands.setdefault("main" if rev == final else rev, []).append(loss)
        except ZooError:
            pass
    if not cands or not target:
        return a, b, "matched loss: models missing", True
    t = float(np.mean(target))
    rev, loss, gap = closest_revision(cands, t)
    note = f"matched loss: revision {rev} (card loss {loss:.3f}) vs {t:.3f}, gap {gap:.3f} nats"
    blocked = gap > max_gap
    if blocked:
        note = f"no checkpoint at matched loss (gap {gap:.3f} > {max_gap} nats); " + note
    have = []
    for s in chosen:
        name, _ = parse_model_spec(s)
        try:
            revs = list_revisions(name)
        except ZooError:
            continue
        if rev == "main" or rev in revs:
            have.append(_with_rev(s, rev))
    return ((have, b) if claim.match == "a" else (a, have)) + (note, blocked)


def _borrow_map(claim: Claim, side: list) -> dict:
    """{side label: (label x, label y)} for a one-model side whose model name has a declared twin pair."""
    if len(side) != 1:
        return {}
    def bare(spec):  # labels drop the "zoo/" prefix, protocol specs keep it
        return parse_model_spec(spec)[0].removeprefix("zoo/")

    name = bare(side[0])
    for key, pair in claim.borrow_seed_spread.items():
        if bare(key) == name:
            return {ex.label_of(side[0]): tuple(ex.label_of(p) for p in pair)}
    return {}


def _nan_effect(reason: str, var: dict, rule: Rule) -> Effect:
    nan = float("nan")
    return Effect(effect=nan, lo=nan, hi=nan, verdict="inconclusive", similarity=var["similarity"],
                  value=var["value"], alpha=var["alpha"], interval_kind="none", ci=rule.ci, n_boot=rule.n_boot,
                  boot_seed=rule.seed, boot_lo=nan, boot_hi=nan, seed_se=nan, noise_floor=nan, floor_pairs=[],
                  smallest_effect=nan, scores={}, reason=reason)


def _seeds(readouts, labels) -> str:
    return ",".join(str(readouts[m].meta.get("seed", "?")) for m in labels if m in readouts)


@dataclass(frozen=True)
class _Context:
    """What one claim run needs besides its sides: the claim, the protocol and its rule, the readout options,
    the workload, the deviations so far, and where (and whether) to write the record."""

    claim: Claim
    proto: object
    rule: Rule
    load: dict
    workload: str
    devs: list
    out_dir: object
    name: str | None
    write: bool

    def record(self, run: "ClaimRun") -> "ClaimRun":
        if self.write:
            write_scores(run, write_finding(run.finding, self.out_dir,
                                            self.name or _record_name(self.claim, self.workload, run.finding.lens)))
        return run


def lens_of(load: dict) -> str:
    """The lens a claim run reads with: the readout options' `lens` (the protocol's primary when absent)."""
    return load.get("lens") or load_protocol().defaults["lens"]


def run_claim(key: str, out_dir, load: dict, *, n_boot: int | None = None, workload: str | None = None,
              sides: dict | None = None, name: str | None = None, write: bool = True) -> ClaimRun:
    """Evaluate protocol claim `key` and write its record to <out_dir>/findings/<name>.json.

    load: the cached-readout options (n_docs, max_tokens, cache_dir, dtype, device; `lens`="tuned" with
    `lens_settings` for the protocol's secondary lens analysis, notebook 13). sides: {"a": [...], "b": [...]} (or
    {"runs": [...] / {name: [revisions]}} for a trend) overrides the protocol's sides, e.g. with hub models;
    workload overrides the protocol's (notebook 7 runs one row per workload). Any override is listed in the
    record's deviations."""
    proto = load_protocol()
    claim, load = proto.claim(key), load_options(load)
    rule = Rule.from_protocol(proto, n_boot)
    workload = workload or proto.defaults["workload"]
    devs = deviations(load, rule.n_boot, workload if workload not in claim.workloads else None)
    sides = dict(sides or {})
    if sides:
        devs.append("sides set by the notebook")
    ctx = _Context(claim, proto, rule, load, workload, devs, out_dir, name, write)
    if claim.kind == "trend":
        return _run_trend(ctx, sides.get("runs") or list(claim.runs))
    a_specs, b_specs, note, blocked = _resolve_sides(claim, sides)
    borrow_specs = [p for pair in claim.borrow_seed_spread.values() for p in pair]
    readouts, missing = _read(list(dict.fromkeys(a_specs + b_specs + borrow_specs)), workload, load)
    la = [ex.label_of(s) for s in a_specs if ex.label_of(s) in readouts]
    lb = [ex.label_of(s) for s in b_specs if ex.label_of(s) in readouts]
    borrow = {k: v for k, v in (_borrow_map(claim, la) | _borrow_map(claim, lb)).items()
              if all(x in readouts for x in v)}
    effects = []
    for var in proto.variants():
        if not la or not lb:
            effects.append(_nan_effect(f"models missing: {', '.join(missing)}", var, rule))
            continue
        e = compare(readouts, la, lb, rule=rule, borrow=borrow, **var)
        if blocked:
            e.smallest_effect, e.verdict, e.reason = float("nan"), "inconclusive", note
        effects.append(e)
    primary, others = effects[0], effects[1:]
    missing_note = ("missing: " + ", ".join(missing)) if missing and la and lb else ""
    reason = "; ".join(x for x in (primary.reason, note if not blocked else "", missing_note) if x)
    f = _finding(ctx, primary, robustness(primary, others), readouts, (la, lb), reason)
    return ctx.record(ClaimRun(finding=f, primary=primary, variants=effects, readouts=readouts,
                               sides={"a": la, "b": lb}, blocked=blocked))


def _resolve_sides(claim: Claim, sides: dict) -> tuple[list, list, str, bool]:
    """(a specs, b specs, matched-loss note, blocked) of a two-sided claim, overrides applied."""
    a_specs, b_specs = list(sides.get("a") or claim.a), list(sides.get("b") or claim.b)
    if claim.kind == "matched_loss" and not sides:
        return _matched_side(claim, a_specs, b_specs, load_protocol().defaults["max_loss_gap"])
    return a_specs, b_specs, "", False


def _trend_specs(run: str, revs: list, explicit: bool) -> list[str]:
    """The specs of one trend run: every revision but the last by name, the last as the main folder (zoo)."""
    return [_with_rev(run, r) for r in revs[:-1]] + ([_with_rev(run, revs[-1])] if explicit else [run])


def claim_specs(key: str, lens: str | None = None) -> list[str]:
    """Every model spec ("name[@revision]") `run_claim(key, ...)` reads with the protocol's sides under `lens`
    (default: the primary): what a notebook needs before running the claim under another lens (e.g. translators
    for notebook 13). Missing models are left out, as run_claim leaves them out."""
    proto = load_protocol()
    claim = proto.claim(key)
    if claim.kind == "trend":
        revisions = {}
        for run in claim.runs:
            try:
                revisions[run] = list_revisions(run)
            except ZooError:
                pass
        if (lens or proto.defaults["lens"]) != proto.defaults["lens"]:
            revisions = _segment_only(revisions, int(claim.segment.get("min_step", 1)))
        return [s for run, revs in revisions.items() for s in _trend_specs(run, revs, explicit=False)]
    a, b, _, _ = _resolve_sides(claim, {})
    return list(dict.fromkeys(a + b + [p for pair in claim.borrow_seed_spread.values() for p in pair]))


def _record_name(claim: Claim, workload: str, lens: str) -> str:
    """<notebook>_<key>[_<workload>][_<lens>]: the primary lens' records keep their version-1 names."""
    name = f"{claim.notebook}_{claim.key}" + (f"_{workload}" if claim.workloads else "")
    return name if lens == load_protocol().defaults["lens"] else f"13_{name}_{lens}"


def _metric(prim: dict) -> str:
    val = "EAS/ceiling" if prim["value"] == "normalised" else "EAS"
    return f"{val}, {prim['similarity']} similarity, alpha {prim['alpha']}"


def _finding(ctx: _Context, e: Effect, rob, readouts, sides, reason) -> Finding:
    claim, proto, workload, load, devs = ctx.claim, ctx.proto, ctx.workload, ctx.load, ctx.devs
    pos, neg = claim.paper_direction, " > ".join(reversed(claim.paper_direction.split(" > ")))
    la, lb = sides
    lens = lens_of(load)
    return Finding(
        notebook=claim.notebook if lens == proto.defaults["lens"] else "13", claim=claim.claim, paper_direction=claim.paper_direction,
        measured_direction=direction_word(e.effect, pos, neg), effect=e.effect, lo=e.lo, hi=e.hi,
        metric=_metric(proto.primary), models=f"A={', '.join(la)}; B={', '.join(lb)}",
        comparison=claim.comparison + (f"; workload {workload}" if claim.workloads else ""), notes="",
        claim_key=claim.key, interval_kind=e.interval_kind, ci=e.ci, n_boot=e.n_boot, boot_seed=e.boot_seed,
        seeds=f"A: {_seeds(readouts, la)}; B: {_seeds(readouts, lb)}", noise_floor=e.noise_floor,
        floor_pairs="; ".join(" vs ".join(p) for p in e.floor_pairs), smallest_effect=e.smallest_effect,
        robustness=rob["label"], robustness_counts=rob["counts"], workload=workload, n_docs=load.get("n_docs"),
        protocol_version=proto.version, deviations="; ".join(devs), reason=reason, lens=lens,
        headline=claim.is_headline(workload if claim.workloads else None))


def _segment_only(revisions: dict, min_step: int) -> dict:
    """Each run's revisions cut to the trend's segment: steps >= min_step that every run ships (the final last).
    A secondary lens reads only these: the verdict uses no other revision, and each one needs translators."""
    common = set.intersection(*[{step_of(r) for r in revs} for revs in revisions.values()]) if revisions else set()
    return {run: [r for r in revs if step_of(r) >= min_step and step_of(r) in common]
            for run, revs in revisions.items()}


def _run_trend(ctx: _Context, runs) -> ClaimRun:
    claim, proto, load, rule, workload = ctx.claim, ctx.proto, ctx.load, ctx.rule, ctx.workload
    curves, readouts, missing, labels = {}, {}, [], {}
    revisions = {}
    for run in runs:
        try:
            revisions[run] = list(runs[run]) if isinstance(runs, dict) else list_revisions(run)
        except ZooError:
            missing.append(run)
    if lens_of(load) != proto.defaults["lens"]:
        revisions = _segment_only(revisions, int(claim.segment.get("min_step", 1)))
    for run, revs in revisions.items():
        if len(revs) < 2:
            missing.append(f"{ex.label_of(run)} (no revisions)")
            continue
        specs = _trend_specs(run, revs, explicit=isinstance(runs, dict))
        got, _ = _read(specs, workload, load)
        steps = {step_of(r): got[ex.label_of(s)] for r, s in zip(revs, specs) if ex.label_of(s) in got}
        labels.update({(ex.label_of(run), step_of(r)): ex.label_of(s) for r, s in zip(revs, specs)})
        curves[ex.label_of(run)] = steps
        readouts.update(got)
    min_step = int(claim.segment.get("min_step", 1))
    effects, table = [], None
    for var in proto.variants():
        if not curves:
            effects.append(_nan_effect(f"no runs with revisions: {missing}", var, rule))
            continue
        effects.append(trend_effect(curves, rule=rule, min_step=min_step, **var))
    if curves:
        table, _ = checkpoint_scores(curves, n_boot=rule.n_boot, ci=rule.ci, seed=rule.seed,
                                     eas_options=rule.eas_options, **proto.primary)
    primary = effects[0]
    rob = robustness(primary, effects[1:])
    reason = "; ".join(x for x in (primary.reason, ("missing: " + ", ".join(missing)) if missing else "") if x)
    steps = primary.extra.get("steps", [])
    f = _finding(ctx, primary, rob, readouts, (list(curves), []), reason)
    f.models = f"runs: {', '.join(curves)}"
    f.comparison = f"trend over steps {steps} (protocol segment: step >= {min_step}); effect = fall per doubling"
    f.measured_direction = direction_word(primary.effect, "falls with training", "rises with training")
    if "kendall_tau" in primary.extra:
        f.notes = (f"Kendall tau of the seed-averaged curve {primary.extra['kendall_tau']:+.2f} "
                   f"(permutation p {primary.extra['kendall_p']:.3f})")
    return ctx.record(ClaimRun(finding=f, primary=primary, variants=effects, readouts=readouts,
                               sides={"runs": list(curves)}, table=table, labels=labels))


def summary(runs: list[ClaimRun]) -> pd.DataFrame:
    """One row per claim run: what the findings table shows."""
    cols = ["claim_key", "comparison", "models", "seeds", "effect", "lo", "hi", "interval_kind", "noise_floor",
            "smallest_effect", "verdict", "robustness", "reason", "deviations"]
    return pd.DataFrame([{c: getattr(r.finding, c) for c in cols} for r in runs])


def variant_table(run: ClaimRun) -> pd.DataFrame:
    """Every metric variant of one claim (the primary first): effect, interval, floor, verdict."""
    rows = [{"primary": i == 0, "similarity": e.similarity, "value": e.value, "alpha": e.alpha, "effect": e.effect,
             "lo": e.lo, "hi": e.hi, "noise_floor": e.noise_floor, "smallest_effect": e.smallest_effect,
             "verdict": e.verdict} for i, e in enumerate(run.variants)]
    return pd.DataFrame(rows)


def loss_table(readouts: dict) -> pd.DataFrame:
    """Per model: card validation loss (zoo models), workload loss (last layer's cross-entropy), layers, params."""
    rows = []
    for label, r in readouts.items():
        spec = label if "/" in label.split("@")[0] else f"zoo/{label}"
        try:
            card = final_loss(spec)
        except (ZooError, OSError, KeyError, ValueError):
            card = float("nan")
        rows.append({"model": label, "seed": r.meta.get("seed"), "layers": r.n_layers,
                     "params_total": r.meta.get("params_total"), "card val loss": card,
                     "workload loss": float(np.nanmean(r["ce"][:, -1]))})
    return pd.DataFrame(rows)


def _mean_card_loss(runs, step: int) -> float:
    losses = []
    for r in runs:
        try:
            losses += [v for k, v in revision_losses(f"zoo/{r}").items() if step_of(k) == step]
        except (ZooError, ValueError):
            pass
    return float(np.mean(losses)) if losses else float("nan")


def _card_unigram(runs) -> float | None:
    try:
        return float(np.mean([unigram_loss(f"zoo/{r}") for r in runs]))
    except (ZooError, OSError, KeyError, ValueError):
        return None


def checkpoint_choices(run: ClaimRun) -> pd.DataFrame:
    """What other "early vs late" choices would give, each under the protocol's verdict rule with both seeds:
    first checkpoint after init vs final, peak vs final, the last two, first below the unigram loss vs final.
    Shown for transparency; the claim's verdict is the trend test's."""
    proto = load_protocol()
    t = run.table
    if t is None or not len(t):
        return pd.DataFrame()
    runs = run.sides["runs"]
    steps = sorted(set.intersection(*[set(t[t.run == r].step) for r in runs]))
    steps = [s for s in steps if s >= 1]
    if len(steps) < 2:
        return pd.DataFrame()
    mean = t[t.step.isin(steps)].groupby("step").score.mean()
    choices = {"first after init vs final": (steps[0], steps[-1]), "peak vs final": (int(mean.idxmax()), steps[-1]),
               "last two": (steps[-2], steps[-1])}
    unigram = _card_unigram(runs)
    if unigram is not None:
        below = [s for s in steps if _mean_card_loss(runs, s) < unigram]
        if below and below[0] != steps[-1]:
            choices["first below unigram loss vs final"] = (below[0], steps[-1])
    rows = []
    rule = Rule.from_protocol(proto, int(run.finding.n_boot))
    for name, (early, late) in choices.items():
        if early == late:
            continue
        a = [run.labels[(r, early)] for r in runs]
        b = [run.labels[(r, late)] for r in runs]
        e = compare(run.readouts, a, b, rule=rule, **proto.primary)
        rows.append({"choice": name, "early": early, "late": late, "effect": e.effect, "lo": e.lo, "hi": e.hi,
                     "noise_floor": e.noise_floor, "verdict": e.verdict})
    return pd.DataFrame(rows)


def describe(run: ClaimRun) -> str:
    """One markdown line for a claim run: effect, interval and its kind, floor, verdict, robustness, reason."""
    f = run.finding

    def num(x, fmt="+.3f"):
        return format(x, fmt) if np.isfinite(x) else "n/a"

    line = (f"- **{f.claim_key}** ({f.comparison}): effect {num(f.effect)} [{num(f.lo)}, {num(f.hi)}] "
            f"({f.interval_kind}), noise floor {num(f.noise_floor, '.3f')}, smallest effect of interest "
            f"{num(f.smallest_effect, '.3f') if f.smallest_effect is not None else 'n/a'} -> **{f.verdict}** "
            f"(robustness {f.robustness} variants agree with this verdict)")
    return line + (f"; {f.reason}" if f.reason else "")


def raw_vs_normalised(run: ClaimRun) -> pd.DataFrame:
    """The primary similarity and alpha with raw EAS and with EAS / ceiling: do the verdicts differ?"""
    p = load_protocol().primary
    t = variant_table(run)
    t = t[(t.similarity == p["similarity"]) & (t.alpha == p["alpha"])]
    return t.assign(claim=run.finding.claim_key)[["claim", "value", "primary", "effect", "lo", "hi", "noise_floor",
                                                  "verdict"]]
