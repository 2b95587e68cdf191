"""Run a protocol claim (data/protocol.yaml) on the zoo or on models given by the notebook, and write its record.

`run_claim(key, out_dir, load)` resolves the claim's sides (revisions at matched loss, borrowed twins), reads
the readouts (cached), computes the primary verdict and every secondary variant (`eeutils.analysis.verdicts`),
and writes a `Finding`. A model missing from the zoo (e.g. a twin not built yet) never crashes a notebook: the
row is inconclusive and says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..analysis.matching import closest_revision, final_loss, revision_losses
from ..analysis.protocol import Claim, load_protocol
from ..analysis.trend import checkpoint_scores, trend_effect
from ..analysis.verdicts import NO_TWIN, Effect, compare, robustness
from ..arch.names import ZooError, list_revisions
from ..core.spec import parse_model_spec
from . import experiments as ex
from .findings import Finding, direction_word, write_finding

__all__ = ["ClaimRun", "run_claim", "load_options", "deviations"]


@dataclass
class ClaimRun:
    """What a notebook shows for one claim: the record, the primary and variant effects, the readouts used."""

    finding: Finding
    primary: Effect | None
    variants: list = field(default_factory=list)
    readouts: dict = field(default_factory=dict)
    sides: dict = field(default_factory=dict)
    table: object = None  # trend claims: the per-checkpoint scores


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


def _matched_side(claim: Claim, a: list, b: list, max_gap: float) -> tuple[list, list, str]:
    """Pick the matched-loss revision for side claim.match; returns (a, b, note or blocking reason)."""
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
        return a, b, "matched loss: models missing"
    import numpy as np

    t = float(np.mean(target))
    rev, loss, gap = closest_revision(cands, t)
    note = f"matched loss: revision {rev} (card loss {loss:.3f}) vs {t:.3f}, gap {gap:.3f} nats"
    if gap > max_gap:
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
    return (have, b, note) if claim.match == "a" else (a, have, note)


def _borrow_map(claim: Claim, side: list) -> dict:
    """{side label: (label x, label y)} for a one-model side whose model name has a declared twin pair."""
    if len(side) != 1:
        return {}
    name = parse_model_spec(side[0])[0]
    for key, pair in claim.borrow_seed_spread.items():
        if parse_model_spec(key)[0] == name:
            return {ex.label_of(side[0]): tuple(ex.label_of(p) for p in pair)}
    return {}


def _nan_effect(reason, sim, value, alpha, ci, n_boot, seed) -> Effect:
    nan = float("nan")
    return Effect(effect=nan, lo=nan, hi=nan, verdict="inconclusive", similarity=sim, value=value, alpha=alpha,
                  interval_kind="none", ci=ci, n_boot=n_boot, boot_seed=seed, boot_lo=nan, boot_hi=nan, seed_se=nan,
                  noise_floor=nan, floor_pairs=[], smallest_effect=nan, scores={}, reason=reason)


def _seeds(readouts, labels) -> str:
    return ",".join(str(readouts[m].meta.get("seed", "?")) for m in labels if m in readouts)


def run_claim(key: str, out_dir, load: dict, *, n_boot: int | None = None, workload: str | None = None,
              a=None, b=None, runs=None, name: str | None = None, write: bool = True) -> ClaimRun:
    """Evaluate protocol claim `key` and write its record to <out_dir>/findings/<name>.json.

    a, b (or runs for a trend) override the protocol's sides, e.g. with hub models; workload overrides the
    protocol's (notebook 7 runs one row per workload). Any override is listed in the record's deviations."""
    proto = load_protocol()
    d, claim = proto.defaults, proto.claim(key)
    load = load_options(load)
    n_boot = int(n_boot or d["n_boot"])
    workload = workload or d["workload"]
    ci, seed = d["ci"], d["bootstrap_seed"]
    devs = deviations(load, n_boot, workload if workload not in claim.workloads else None)
    prim = proto.primary
    if claim.kind == "trend":
        return _run_trend(claim, proto, out_dir, load, n_boot, workload, list(runs or claim.runs), devs, name, write)
    a_specs, b_specs = list(a or claim.a), list(b or claim.b)
    if a is not None or b is not None:
        devs.append("sides set by the notebook")
    note = ""
    if claim.kind == "matched_loss" and a is None and b is None:
        a_specs, b_specs, note = _matched_side(claim, a_specs, b_specs, d["max_loss_gap"])
    borrow_specs = [p for pair in claim.borrow_seed_spread.values() for p in pair]
    readouts, missing = _read(list(dict.fromkeys(a_specs + b_specs + borrow_specs)), workload, load)
    la = [ex.label_of(s) for s in a_specs if ex.label_of(s) in readouts]
    lb = [ex.label_of(s) for s in b_specs if ex.label_of(s) in readouts]
    borrow = {k: v for k, v in (_borrow_map(claim, la) | _borrow_map(claim, lb)).items()
              if all(x in readouts for x in v)}
    blocked = note.startswith(("no checkpoint", "matched loss: models missing"))
    effects = []
    for var in proto.variants():
        if not la or not lb:
            effects.append(_nan_effect(f"models missing: {', '.join(missing)}", var["similarity"], var["value"],
                                       var["alpha"], ci, n_boot, seed))
            continue
        e = compare(readouts, la, lb, n_boot=n_boot, ci=ci, seed=seed, min_effect=d["min_effect"], borrow=borrow,
                    eas_options=proto.eas_options, **var)
        if blocked:
            e.smallest_effect, e.verdict, e.reason = float("nan"), "inconclusive", note
        effects.append(e)
    primary, others = effects[0], effects[1:]
    rob = robustness(primary, others)
    reason = "; ".join(x for x in (primary.reason, note if not blocked else "", ("missing: " + ", ".join(missing))
                                   if missing else "") if x)
    f = _finding(claim, proto, primary, rob, readouts, la, lb, workload, load, devs, reason)
    if write:
        write_finding(f, out_dir, name or f"{claim.notebook}_{key}" + (f"_{workload}" if claim.workloads else ""))
    return ClaimRun(finding=f, primary=primary, variants=effects, readouts=readouts, sides={"a": la, "b": lb})


def _metric(prim: dict) -> str:
    val = "EAS/ceiling" if prim["value"] == "normalised" else "EAS"
    return f"{val}, {prim['similarity']} similarity, alpha {prim['alpha']}"


def _finding(claim, proto, e: Effect, rob, readouts, la, lb, workload, load, devs, reason) -> Finding:
    pos, neg = claim.paper_direction, " > ".join(reversed(claim.paper_direction.split(" > ")))
    return Finding(
        notebook=claim.notebook, claim=claim.claim, paper_direction=claim.paper_direction,
        measured_direction=direction_word(e.effect, pos, neg), effect=e.effect, lo=e.lo, hi=e.hi,
        metric=_metric(proto.primary), models=f"A={', '.join(la)}; B={', '.join(lb)}",
        comparison=claim.comparison + (f"; workload {workload}" if claim.workloads else ""), notes="",
        claim_key=claim.key, interval_kind=e.interval_kind, ci=e.ci, n_boot=e.n_boot, boot_seed=e.boot_seed,
        seeds=f"A: {_seeds(readouts, la)}; B: {_seeds(readouts, lb)}", noise_floor=e.noise_floor,
        floor_pairs="; ".join(" vs ".join(p) for p in e.floor_pairs), smallest_effect=e.smallest_effect,
        robustness=rob["label"], robustness_counts=rob["counts"], workload=workload, n_docs=load.get("n_docs"),
        protocol_version=proto.version, deviations="; ".join(devs), reason=reason)


def _run_trend(claim, proto, out_dir, load, n_boot, workload, runs, devs, name, write) -> ClaimRun:
    d = proto.defaults
    curves, readouts, missing = {}, {}, []
    for run in runs:
        try:
            revs = list_revisions(run) if parse_model_spec(run)[0].startswith("zoo/") else []
        except ZooError:
            missing.append(run)
            continue
        if len(revs) < 2:
            missing.append(f"{ex.label_of(run)} (no revisions)")
            continue
        specs = [_with_rev(run, r) for r in revs[:-1]] + [run]
        got, _ = _read(specs, workload, load)
        steps = {int(r.split("-")[1]): got[ex.label_of(s)] for r, s in zip(revs, specs) if ex.label_of(s) in got}
        curves[ex.label_of(run)] = steps
        readouts.update(got)
    ci, seed, min_step = d["ci"], d["bootstrap_seed"], int(claim.segment.get("min_step", 1))
    effects, table = [], None
    for var in proto.variants():
        if not curves:
            effects.append(_nan_effect(f"no runs with revisions: {missing}", var["similarity"], var["value"],
                                       var["alpha"], ci, n_boot, seed))
            continue
        effects.append(trend_effect(curves, n_boot=n_boot, ci=ci, seed=seed, min_effect=d["min_effect"],
                                    min_step=min_step, eas_options=proto.eas_options, **var))
    if curves:
        table, _ = checkpoint_scores(curves, n_boot=n_boot, ci=ci, seed=seed, eas_options=proto.eas_options,
                                     **proto.primary)
    primary = effects[0]
    rob = robustness(primary, effects[1:])
    reason = "; ".join(x for x in (primary.reason, ("missing: " + ", ".join(missing)) if missing else "") if x)
    steps = primary.extra.get("steps", [])
    f = _finding(claim, proto, primary, rob, readouts, list(curves), [], workload, load, devs, reason)
    f.models = f"runs: {', '.join(curves)}"
    f.comparison = f"trend over steps {steps} (protocol segment: step >= {min_step}); effect = fall per doubling"
    f.measured_direction = direction_word(primary.effect, "falls with training", "rises with training")
    if "kendall_tau" in primary.extra:
        f.notes = (f"Kendall tau of the seed-averaged curve {primary.extra['kendall_tau']:+.2f} "
                   f"(permutation p {primary.extra['kendall_p']:.3f})")
    if write:
        write_finding(f, out_dir, name or f"{claim.notebook}_{claim.key}")
    return ClaimRun(finding=f, primary=primary, variants=effects, readouts=readouts, sides={"runs": list(curves)},
                    table=table)
