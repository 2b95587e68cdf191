"""The budget oracle (hand-computed cases, brute force, a property test against every rule) and the
paired budget test (hand-computed McNemar values, a bootstrap checked against a loop)."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from eeutils import exits as X
from eeutils.analysis.bootstrap import draw_docs
from eeutils.analysis.oracle import required_units
from readout_factory import make_readout

# L = 4, token accuracy (no answers). First right layer >= 1 and its cost (layers given up vs layer 1):
TOK_TOP1 = [[9, 2, 7, 2, 2],   # target 2: full right, right at 1 (cost 0)
            [9, 5, 5, 3, 3],   # target 3: full right, right from 3 (cost 2)
            [9, 8, 4, 4, 4],   # target 4: full right, right from 2 (cost 1)
            [9, 6, 1, 6, 0],   # target 1: full WRONG, right at 2 only (cost 1): can become right
            [9, 7, 7, 7, 7]]   # target 5: never right
TOK_TARGET = [2, 3, 4, 1, 5]


def tok():
    return make_readout(TOK_TOP1, target=TOK_TARGET, doc=[0, 0, 1, 1, 2])


@pytest.mark.parametrize("budget, exits, skip", [
    # F = 3 right; budget 0 needs 3 right units: t0 (free), then cost 1: t2 and t3 (ties by id); t1 (cost 2) exits at 1
    (0.0, [1, 1, 2, 2, 1], 13 / 20),
    # budget 1/3 allows one unit lost: t0 (free) and t2 (cost 1, before t3 by id)
    (0.34, [1, 1, 2, 1, 1], 14 / 20),
    (1.0, [1, 1, 1, 1, 1], 15 / 20),  # nothing needed: all at layer 1 (t0 is right there anyway)
])
def test_budget_oracle_token_accuracy_by_hand(budget, exits, skip):
    ro = tok()
    e = X.simulate(ro, X.ExitRule("budget_oracle", budget))
    assert e.tolist() == exits
    r = X.evaluate(ro, e)
    assert r["skip_ratio"] == pytest.approx(skip)
    assert r["rel_acc_loss"] <= budget + 1e-12


def test_budget_oracle_beats_the_saturation_oracle_at_zero_loss():
    ro = tok()
    sat = X.evaluate(ro, X.simulate(ro, X.ExitRule("saturation")))
    # saturation layers [3, 3, 2, 4, 1]: (1 + 1 + 2 + 0 + 3) / 20
    assert sat["skip_ratio"] == pytest.approx(7 / 20) and sat["rel_acc_loss"] == 0.0
    assert X.evaluate(ro, X.simulate(ro, X.ExitRule("budget_oracle", 0.0)))["skip_ratio"] == pytest.approx(13 / 20)


# Exact match: doc 0 = prompt token a + answer tokens b, c; doc 1 = answer d; doc 2 = answer e.
EM_TOP1 = [[0, 1, 1, 1, 1],   # a: prompt (not scored)
           [0, 3, 2, 2, 2],   # b: target 2, right from 2 (cost 1)
           [0, 5, 5, 4, 4],   # c: target 4, right from 3 (cost 2) -> doc 0 costs 3, full right
           [0, 6, 7, 7, 7],   # d: target 7, right from 2 (cost 1) -> doc 1 costs 1, full right
           [0, 8, 8, 8, 9]]   # e: target 8, final 9 wrong; right at 1 (cost 0) -> doc 2 newly right for free


def em():
    return make_readout(EM_TOP1, target=[1, 2, 4, 7, 8], doc=[0, 0, 0, 1, 2],
                        answer=[False, True, True, True, True])


def test_budget_oracle_exact_match_by_hand():
    ro = em()
    e = X.simulate(ro, X.ExitRule("budget_oracle", 0.0))
    # F = 2 right docs needed: doc 2 (free) and doc 1 (cost 1) beat doc 0 (cost 3)
    assert e.tolist() == [1, 1, 1, 2, 1]
    r = X.evaluate(ro, e)
    assert r["accuracy_kind"] == "exact_match" and r["rel_acc_loss"] == 0.0
    assert r["skip_over"] == "answer_tokens"
    assert r["skip_ratio"] == pytest.approx((3 + 3 + 2 + 3) / 16)
    assert r["skip_ratio_all_tokens"] == pytest.approx((3 + 3 + 3 + 2 + 3) / 20)
    half = X.evaluate(ro, X.simulate(ro, X.ExitRule("budget_oracle", 0.5)))
    assert half["skip_ratio"] == 0.75 and half["rel_acc_loss"] == pytest.approx(0.5)


def test_budget_oracle_for_agreement_by_hand():
    ro = tok()
    # first layer agreeing with the final top1: [1, 3, 2, 4, 1]; all 5 tokens must agree at budget 0
    assert X.simulate(ro, X.ExitRule("budget_oracle_agreement", 0.0)).tolist() == [1, 3, 2, 4, 1]
    # 20% may disagree: drop the costliest (t3, cost 3)
    assert X.simulate(ro, X.ExitRule("budget_oracle_agreement", 0.2)).tolist() == [1, 3, 2, 1, 1]


def test_required_units():
    assert required_units(3, 0.0) == 3 and required_units(3, 0.34) == 2 and required_units(3, 1 / 3) == 2
    assert required_units(20, 0.05) == 19 and required_units(19, 0.05) == 19 and required_units(0, 0.05) == 0


def test_budget_oracle_min_layer():
    e = X.simulate(tok(), X.ExitRule("budget_oracle", 1.0, min_layer=3))
    assert e.tolist() == [3, 3, 3, 3, 3]


def _random_readout(rng, n, L, answers):
    top1 = rng.integers(0, 3, size=(n, L + 1))
    target = rng.integers(-1, 3, size=n)
    stats = {name: rng.random((n, L + 1)) for name in ("max_prob", "margin", "hidden_cos_prev")}
    stats["entropy"] = 3 * rng.random((n, L + 1))
    doc = np.sort(rng.integers(0, 3, size=n))
    answer = rng.random(n) < 0.6 if answers else np.zeros(n, dtype=bool)
    return make_readout(top1, target=target, doc=doc, answer=answer, **stats)


def _admissible(r, budget, metric):
    loss = r["rel_acc_loss"] if metric == "accuracy" else 1 - r["agreement"]
    return np.isfinite(loss) and loss <= budget + 1e-12


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), L=st.integers(1, 3), answers=st.booleans(),
       budget=st.sampled_from([0.0, 0.05, 0.25, 0.5]), metric=st.sampled_from(["accuracy", "agreement"]))
def test_budget_oracle_is_the_brute_force_optimum(seed, n, L, answers, budget, metric):
    ro = _random_readout(np.random.default_rng(seed), n, L, answers)
    kind = "budget_oracle" if metric == "accuracy" else "budget_oracle_agreement"
    best = X.evaluate(ro, X.simulate(ro, X.ExitRule(kind, budget)))
    if metric == "accuracy" and not np.isfinite(best["rel_acc_loss"]):
        return  # the full model gets nothing right: no assignment is admissible
    assert _admissible(best, budget, metric)
    top = max(X.evaluate(ro, np.array(e))["skip_ratio"]
              for e in itertools.product(range(1, L + 1), repeat=n)
              if _admissible(X.evaluate(ro, np.array(e)), budget, metric))
    assert best["skip_ratio"] == pytest.approx(top, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), L=st.integers(1, 6), answers=st.booleans(),
       budget=st.floats(0.0, 0.5))
def test_no_rule_or_random_exit_beats_the_budget_oracle(seed, n, L, answers, budget):
    rng = np.random.default_rng(seed)
    ro = _random_readout(rng, n, L, answers)
    oracle = X.evaluate(ro, X.simulate(ro, X.ExitRule("budget_oracle", budget)))
    frame = X.tradeoff(ro, budget=budget)
    ok = frame[frame.rel_acc_loss <= budget + 1e-12]
    assert (ok.skip_ratio <= oracle["skip_ratio"] + 1e-12).all()
    assert (ok.skip_ratio_all_tokens <= oracle["skip_ratio_all_tokens"] + 1e-12).all()
    for _ in range(20):
        r = X.evaluate(ro, rng.integers(1, L + 1, size=n))
        if _admissible(r, budget, "accuracy"):
            assert r["skip_ratio"] <= oracle["skip_ratio"] + 1e-12
    ms = X.max_skip_under_budget(frame, budget=budget)
    if np.isfinite(oracle["rel_acc_loss"]):
        assert ms.skip_ratio.max() == pytest.approx(oracle["skip_ratio"])
        assert ms.set_index("rule").loc["budget_oracle", "skip_ratio"] == pytest.approx(oracle["skip_ratio"])


# ---------------------------------------------------------------------------
# the paired budget test
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("b, c, p", [
    (1, 6, 2 * (1 + 7) / 2**7),  # 0.125
    (0, 5, 2 / 2**5),  # 0.0625
    (2, 10, 2 * (1 + 12 + 66) / 2**12),  # 0.0386
    (3, 3, 1.0), (0, 0, 1.0), (6, 1, 0.125),
])
def test_mcnemar_exact_hand_values(b, c, p):
    assert X.mcnemar_exact(b, c) == pytest.approx(p)


def test_mcnemar_rejects_bad_counts():
    with pytest.raises(ValueError, match="non-negative integer"):
        X.mcnemar_exact(-1, 2)
    with pytest.raises(ValueError, match="non-negative integer"):
        X.mcnemar_exact(1.5, 2)


def _em_docs(full, exited):
    """A readout with one answer token per document: doc right in full / when exiting at layer 1 as given."""
    n = len(full)
    top1 = np.zeros((n, 3), dtype=np.int64)
    target = np.ones(n, dtype=np.int64)
    top1[:, 2] = np.where(full, 1, 2)
    top1[:, 1] = np.where(exited, 1, 2)
    return make_readout(top1, target=target, doc=np.arange(n), answer=np.ones(n, dtype=bool))


def test_paired_loss_exact_match_counts_and_mcnemar():
    # 20 docs right in full; exiting loses 6 of them and wins 1 new one
    full = [1] * 20 + [0] * 5
    exited = [1] * 14 + [0] * 6 + [1] + [0] * 4
    ro = _em_docs(full, exited)
    res = X.paired_loss(ro, np.ones(25, dtype=int), budget=0.05, n_boot=500)
    assert res["n_worse"] == 6 and res["n_better"] == 1 and res["n_paired_docs"] == 25
    assert res["mcnemar_p"] == pytest.approx(0.125)
    assert res["loss"] == pytest.approx((20 - 15) / 20)
    assert res["loss_lo"] <= res["loss"] <= res["loss_hi"]
    assert not res["budget_met"] and not res["budget_met_ci"]
    assert res["interval_kind"].startswith("paired document bootstrap")


def test_paired_bootstrap_matches_a_loop_over_the_same_draws():
    rng = np.random.default_rng(3)
    ro = make_readout(rng.integers(0, 3, size=(40, 4)), target=rng.integers(0, 3, size=40),
                      doc=np.repeat(np.arange(8), 5))
    e = rng.integers(1, 4, size=40)
    res = X.paired_loss(ro, e, budget=0.1, n_boot=300, seed=7, ci=0.9)
    assert res["accuracy_kind"] == "token_accuracy" and math.isnan(res["mcnemar_p"])
    top1 = ro.stats["top1"]
    full_ok = top1[:, -1] == ro.target
    exit_ok = top1[np.arange(40), e] == ro.target
    reps = []
    for draw in draw_docs(7, 8, 300):
        rows = np.concatenate([np.flatnonzero(ro.doc == d) for d in draw])
        F, E = full_ok[rows].sum(), exit_ok[rows].sum()
        reps.append((F - E) / F if F else np.nan)
    lo, hi = np.nanquantile(reps, [0.05, 0.95])
    assert res["loss_lo"] == pytest.approx(lo) and res["loss_hi"] == pytest.approx(hi)
    assert res["loss"] == pytest.approx((full_ok.sum() - exit_ok.sum()) / full_ok.sum())


def test_budget_met_with_confidence_needs_a_clear_margin():
    # 200 docs right in full, 2 lost: loss 1%, well inside 5% -> met with confidence
    ro = _em_docs([1] * 200, [1] * 198 + [0] * 2)
    res = X.paired_loss(ro, np.ones(200, dtype=int), budget=0.05, n_boot=500)
    assert res["budget_met"] and res["budget_met_ci"]
    # loss exactly at the budget (10 of 200 lost): met on the sample, not with confidence
    ro = _em_docs([1] * 200, [1] * 190 + [0] * 10)
    res = X.paired_loss(ro, np.ones(200, dtype=int), budget=0.05, n_boot=500)
    assert res["budget_met"] and not res["budget_met_ci"]


def test_max_skip_under_budget_with_readout_adds_the_paired_test():
    ro = em()
    frame = X.tradeoff(ro, budget=0.05)
    ms = X.max_skip_under_budget(frame, budget=0.05, readout=ro, n_boot=200).set_index("rule")
    for col in X.PAIRED_COLUMNS:
        assert col in ms
    o = ms.loc["budget_oracle"]
    assert o.threshold <= 0.05 and o.skip_ratio == pytest.approx(11 / 16) and o.skip_over == "answer_tokens"
    # the oracle loses doc 0 and wins doc 2: one discordant pair each way
    assert o.n_worse == 1 and o.n_better == 1 and o.mcnemar_p == 1.0 and o.budget_met
    assert "budget_oracle_agreement" not in ms.index
    with pytest.raises(ValueError, match="one model"):
        X.max_skip_under_budget(frame.assign(model=["a", "b"] * (len(frame) // 2) + ["a"] * (len(frame) % 2)),
                                readout=ro)
