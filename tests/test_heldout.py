"""Held-out max skip within a budget (eeutils.analysis.heldout) and the protocol claim max_skip_within_budget."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from eeutils.analysis import heldout as ho
from eeutils.analysis.exits import evaluate, simulate
from eeutils.analysis.oracle import budget_oracle_exits
from eeutils.analysis.paired import mcnemar_exact
from eeutils.analysis.protocol import INTERVAL_KINDS, ProtocolError, load_protocol, parse_protocol
from eeutils.analysis.rule_parse import as_rule
from eeutils.notebook import real_models as rm
from eeutils.notebook.benchmark import PAPER_MAX_SKIP
from readout_factory import make_readout

RULES = rm.CONFIDENCE_RULES


def task_readout(n_items: int = 24, L: int = 6, seed: int = 0, doc_offset: int = 0):
    """An exact-answer readout: per item 3 prompt tokens and 1-2 answer tokens; each token's top-1 settles on
    its final prediction at a random layer, max_prob rises with depth and is higher where it settled early."""
    rng = np.random.default_rng(seed)
    top1, doc, ans, tgt, mp = [], [], [], [], []
    for i in range(n_items):
        for t in range(3 + 1 + i % 2):
            final, settle = rng.integers(0, 50), rng.integers(1, L + 1)
            row = np.where(np.arange(L + 1) >= settle, final, rng.integers(50, 100, L + 1))
            row[-1] = final
            top1.append(row), doc.append(i + doc_offset), ans.append(t >= 3)
            tgt.append(final if rng.uniform() < 0.85 else 99)
            mp.append(np.clip(np.arange(L + 1) / L - (settle - 3) * 0.1 + rng.normal(0, 0.1, L + 1), 0, 1))
    mp = np.array(mp)
    return make_readout(np.array(top1), doc=np.array(doc), target=np.array(tgt), answer=np.array(ans), max_prob=mp,
                        margin=mp / 2, entropy=1 - mp, hidden_cos_prev=0.5 + mp / 2)


def settings(**kw):
    return dict(ho.claim_settings(n_boot=200), **kw)


def test_claim_settings_come_from_the_protocol():
    s = ho.claim_settings()
    extra = load_protocol().claim("max_skip_within_budget").extra
    assert s["budget"] == extra["budget"] == 0.05 and s["alpha"] == extra["budget_alpha"]
    assert s["min_effect"] == extra["min_effect"] and s["reference"] == "budget_oracle"
    assert (s["split_seed"], s["calibration"]) == (extra["split"]["seed"], extra["split"]["calibration"])
    assert s["n_boot"] == load_protocol().defaults["n_boot"] and ho.claim_settings(n_boot=7)["n_boot"] == 7
    assert {ho.HELDOUT_INTERVAL, ho.ORACLE_INTERVAL} <= set(INTERVAL_KINDS)


def test_protocol_rejects_a_malformed_exits_claim():
    raw = {"version": 1, "defaults": dict(load_protocol().defaults), "claims": {}}
    good = dict(notebook="09", claim="c", kind="exits", budget=0.05, budget_alpha=0.05, min_effect=0.02,
                split={"seed": 0, "calibration": 0.5})
    parse_protocol(dict(raw, claims={"x": good}))
    for bad in ({"split": {"seed": 0}}, {"split": {"seed": -1, "calibration": 0.5}},
                {"split": {"seed": 0, "calibration": 1.0}}, {"min_effect": -0.1}, {"budget": 0},
                {"budget_alpha": True}):
        with pytest.raises(ProtocolError):
            parse_protocol(dict(raw, claims={"x": dict(good, **bad)}))


def test_split_is_deterministic_disjoint_and_complete():
    r = task_readout(n_items=11, doc_offset=100)
    cal, held = ho.split_items(r, seed=0, calibration=0.5)
    cal2, held2 = ho.split_items(r, seed=0, calibration=0.5)
    assert np.array_equal(cal, cal2) and np.array_equal(held, held2)
    assert len(cal) == 5 and len(held) == 6 and not set(cal) & set(held)
    assert sorted(set(cal) | set(held)) == list(range(100, 111))
    assert list(cal) == sorted(cal) and list(held) == sorted(held)
    # the permutation of numpy's default_rng(seed), written out
    perm = np.arange(100, 111)[np.random.default_rng(0).permutation(11)]
    assert set(cal) == set(perm[:5])
    assert not np.array_equal(ho.split_items(r, seed=1)[0], cal)
    with pytest.raises(ValueError, match="empty half"):
        ho.split_items(task_readout(n_items=1), seed=0)


def test_thresholds_are_chosen_on_the_calibration_half_only():
    r = task_readout(n_items=30, seed=2)
    s = settings()
    cal, held = ho.split_items(r, s["split_seed"], s["calibration"])
    base = ho.heldout_table(r, RULES, s)
    prim = base[(base.halves == "primary") & (base.rule != "budget_oracle")].set_index("rule")
    direct = ho.choose_thresholds(r.select_docs(cal), RULES, s["budget"]).set_index("rule")
    assert np.array_equal(prim.threshold.to_numpy(), direct.threshold.reindex(prim.index).to_numpy(), equal_nan=True)
    # make every held-out item confidently wrong below the last layer (every rule fires at layer 1 and loses
    # it): thresholds chosen with these items would tighten; the primary ones (calibration only) do not move
    on_held = np.isin(r.doc, held)[:, None]
    confident = {"max_prob": 1.0, "margin": 1.0, "entropy": 0.0, "hidden_cos_prev": 1.0}
    stats = {k: np.where(on_held, v, r.stats[k]) for k, v in confident.items()}
    top1 = np.where(on_held & (np.arange(r.n_layers + 1) < r.n_layers), 777, r.stats["top1"])
    r2 = make_readout(top1, doc=r.doc, target=r.target, answer=r.answer, **stats)
    other = ho.heldout_table(r2, RULES, s)
    prim2 = other[(other.halves == "primary") & (other.rule != "budget_oracle")].set_index("rule")
    assert np.array_equal(prim.threshold.to_numpy(), prim2.threshold.to_numpy(), equal_nan=True)
    assert not np.allclose(prim.skip.to_numpy(), prim2.skip.to_numpy())  # what is scored did change


def test_mcnemar_exact_hand_computed():
    # b = 5 items lost, c = 1 gained: n = 6 discordant; p = 2 P(X <= 1), X ~ Binomial(6, 1/2) = 2 (1 + 6) / 64
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    assert mcnemar_exact(7, 0) == pytest.approx(2 / 128) and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    stats = pytest.importorskip("scipy.stats")
    for b, c in ((5, 1), (7, 0), (2, 9), (10, 4)):
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(min(b, c), b + c, 0.5).pvalue)
    out = dict(skip=np.zeros(7), tokens=np.ones(7), full=np.array([1, 1, 1, 1, 1, 0, 0.]),
               exited=np.array([0, 0, 0, 1, 1, 1, 0.]))
    res = ho.paired_bootstrap(out, n_boot=10, ci=0.95, seed=0, alpha=0.05)
    assert (res["n_worse"], res["n_better"]) == (3, 1) and res["mcnemar_p"] == pytest.approx(2 * 5 / 16)


def test_paired_bootstrap_hand_checked():
    out = dict(skip=np.array([0.5, 0.0, 1.0]), tokens=np.array([1.0, 1.0, 2.0]), full=np.array([1.0, 1.0, 0.0]),
               exited=np.array([1.0, 0.0, 0.0]))
    res = ho.paired_bootstrap(out, n_boot=50, ci=0.9, seed=3, alpha=0.05)
    assert res["skip"] == pytest.approx(1.5 / 4) and res["loss"] == pytest.approx(0.5) and res["n_items"] == 3
    skips, losses = [], []
    for draw in np.random.default_rng(3).integers(0, 3, size=(50, 3)):  # one item draw per replicate, by hand
        skips.append(sum(out["skip"][i] for i in draw) / sum(out["tokens"][i] for i in draw))
        F = sum(out["full"][i] for i in draw)
        losses.append((F - sum(out["exited"][i] for i in draw)) / F if F else math.nan)
    assert (res["skip_lo"], res["skip_hi"]) == pytest.approx(tuple(np.quantile(skips, [0.05, 0.95])))
    assert (res["loss_lo"], res["loss_hi"]) == pytest.approx(tuple(np.nanquantile(losses, [0.05, 0.95])))
    assert res["loss_upper"] == pytest.approx(np.nanquantile(losses, 0.95))
    # identical items: every replicate equals the point estimate
    same = dict(skip=np.full(4, 0.25), tokens=np.ones(4), full=np.ones(4), exited=np.ones(4))
    r2 = ho.paired_bootstrap(same, n_boot=20, ci=0.95, seed=0, alpha=0.05)
    assert r2["skip_lo"] == r2["skip_hi"] == r2["skip"] == 0.25 and r2["loss_hi"] == 0.0


def test_item_outcomes_agree_with_evaluate_and_the_oracle_bootstrap_resolves():
    r = task_readout(n_items=16, seed=4)
    exits = simulate(r, as_rule(("max_prob", 0.6)))
    o = ho.item_outcomes(r, exits)
    ev = evaluate(r, exits)
    assert o["skip"].sum() / o["tokens"].sum() == pytest.approx(ev["skip_ratio"])
    assert (o["full"].sum() - o["exited"].sum()) / o["full"].sum() == pytest.approx(ev["rel_acc_loss"])
    boot = ho.oracle_bootstrap(r, 0.05, n_boot=30, ci=0.95, seed=1, alpha=0.05)
    assert boot["loss_upper"] <= 0.05 + 1e-12  # re-solved per replicate: within the budget by construction
    docs, skips, losses = np.unique(r.doc), [], []
    for draw in np.random.default_rng(1).integers(0, len(docs), size=(30, len(docs))):  # each replicate re-solved
        sub = r.select_docs(docs[draw])
        ev = evaluate(sub, budget_oracle_exits(sub, 0.05))
        skips.append(ev["skip_ratio"]), losses.append(ev["rel_acc_loss"])
    assert (boot["skip_lo"], boot["skip_hi"]) == pytest.approx(tuple(np.quantile(skips, [0.025, 0.975])))
    assert (boot["loss_lo"], boot["loss_hi"]) == pytest.approx(tuple(np.quantile(losses, [0.025, 0.975])))
    row = ho.score_heldout(r, "budget_oracle", 0.05, settings(n_boot=30))
    assert row["skip"] == pytest.approx(evaluate(r, budget_oracle_exits(r, 0.05))["skip_ratio"])
    assert row["interval_kind"] == ho.ORACLE_INTERVAL and row["budget_met_ci"]
    with pytest.raises(ValueError, match="exact-answer"):
        ho.item_outcomes(make_readout(np.zeros((4, 3), dtype=int)), np.full(4, 2))


def test_protocol_entry_runs_on_a_synthetic_readout(tmp_path):
    readouts = {"toy": task_readout(n_items=24, seed=5), "toy2": task_readout(n_items=20, seed=6)}
    table, found = rm.max_skip_claim(readouts, tmp_path, n_boot=100, workload="synthetic")
    s = ho.claim_settings(n_boot=100)
    assert len(table) == 2 * 2 * (1 + len(RULES)) and set(table.halves) == {"primary", "swapped"}
    assert (table.groupby(["model", "halves"]).best.sum() == 1).all()
    assert (table.n_items + table.n_calib == table.model.map({"toy": 24, "toy2": 20})).all()
    records = sorted(tmp_path.glob("findings/*.json"))
    assert [p.name for p in records] == ["09_benchmark_real_toy2_oracle.json", "09_benchmark_real_toy2_rule.json",
                                         "09_benchmark_real_toy_oracle.json", "09_benchmark_real_toy_rule.json"]
    for f in found:
        assert f.smallest_effect == s["min_effect"] and f.interval_kind in INTERVAL_KINDS
        assert f.claim_key == "max_skip_within_budget" and f.n_boot == 100 and "n_boot 100" in f.deviations
        what = "budget_oracle" if "oracle" in f.measured_direction else None
        row = table[(table.model == f.models) & (table.halves == "primary")
                    & ((table.rule == what) if what else table.best)].iloc[0]
        assert f.effect == pytest.approx(PAPER_MAX_SKIP - row.skip)
        assert f.lo == pytest.approx(PAPER_MAX_SKIP - row.skip_hi)
        assert f.hi == pytest.approx(PAPER_MAX_SKIP - row.skip_lo)
        assert f.robustness in ("0/1", "1/1") and sum(f.robustness_counts.values()) == 1
    rec = json.loads(records[0].read_text())
    assert rec["smallest_effect"] == s["min_effect"] and rec["interval_kind"] == ho.ORACLE_INTERVAL
    pd.testing.assert_frame_equal(table, rm.heldout_skip(readouts, n_boot=100))


def test_real_rows_state_their_confounds():
    text = rm.confounds(["real/gemma-3-270m", "real/smollm2-135m-instruct"])
    for word in ("base", "tuned", "2025", "2024", "262k", "Q4_K_M", "Q4_1", "no base-vs-tuned or generation verdict"):
        assert word in text
    assert rm.confounds(["toy"]) == "" and rm.confounds(["real/gemma-3-270m"]) == ""
