"""Exit rules on a hand-built readout with known exit layers per token."""
import math

import numpy as np
import pandas as pd
import pytest

from eeutils import exits as X
from readout_factory import empty_readout, make_readout, synthetic_readout

# L = 4, three tokens, readout layers 0..4. Layer 0 values are chosen to tempt an exit there.
TOP1 = [[9, 1, 2, 2, 2],   # saturates at 2; streak (from layer 1): 0, 0, 0, 1, 2
        [9, 3, 3, 3, 3],   # saturates at 1; streak 0, 0, 1, 2, 3
        [9, 4, 5, 4, 6]]   # saturates only at 4; no repeats
TARGET = [2, 4, 5]
STATS = dict(
    max_prob=[[0.9, 0.2, 0.5, 0.8, 0.9],
              [0.1, 0.7, 0.8, 0.9, 0.95],
              [0.1, 0.1, 0.1, 0.1, 0.3]],
    margin=[[0.9, 0.5, 0.1, 0.1, 0.1],
            [0.0, 0.0, 0.0, 0.45, 0.5],
            [1.0, 0.0, 0.0, 0.0, 0.0]],
    entropy=[[0.1, 3.0, 2.0, 0.5, 0.2],
             [5.0, 0.9, 1.0, 1.0, 1.0],
             [0.0, 2.0, np.nan, 2.0, np.nan]],
    hidden_cos_prev=[[1.0, 0.2, 0.96, 0.99, 0.99],
                     [1.0, 0.5, 0.6, 0.7, 0.8],
                     [1.0, 0.97, 0.1, 0.1, 0.1]],
)


def toy(**kw):
    args = dict(target=TARGET, doc=[0, 0, 1], answer=[True, False, True])
    args.update(kw)
    return make_readout(TOP1, **STATS, **args)


@pytest.mark.parametrize("rule, expected", [
    (X.ExitRule("static", 2), [2, 2, 2]),
    (X.ExitRule("static", 4), [4, 4, 4]),
    (X.ExitRule("static", 1), [1, 1, 1]),
    (X.ExitRule("saturation"), [2, 1, 4]),
    (X.ExitRule("oracle_correct"), [2, 4, 2]),  # token 1 (target 4) is never right: exits at L
    (X.ExitRule("max_prob", 0.75), [3, 2, 4]),  # token 0's layer-0 0.9 is ignored
    (X.ExitRule("margin", 0.4), [1, 3, 4]),
    (X.ExitRule("entropy", 1.0), [3, 1, 4]),  # NaN never fires; layer 0 (entropy 0) never exits
    (X.ExitRule("hidden_saturation", 0.95), [2, 4, 1]),
    (X.ExitRule("consecutive", 1), [3, 2, 4]),
    (X.ExitRule("consecutive", 2), [4, 3, 4]),
    (X.ExitRule("consecutive", 3), [4, 4, 4]),
    (X.ExitRule("max_prob", 0.75, min_layer=3), [3, 3, 4]),
    (X.ExitRule("margin", 0.0), [1, 1, 1]),
    (X.ExitRule("max_prob", 1.0), [4, 4, 4]),
])
def test_each_rule_known_exit_layers(rule, expected):
    assert X.simulate(toy(), rule).tolist() == expected


def test_rule_fires_for_a_decoder_with_one_token():
    r = X.ExitRule("max_prob", 0.75)
    assert X.rule_fires(r, {"max_prob": np.array([0.8])}, layer=2, n_layers=4).tolist() == [True]
    assert X.rule_fires(r, {"max_prob": 0.8}, layer=2, n_layers=4).tolist() == [True]  # scalars too
    assert X.rule_fires(r, {"max_prob": 0.7}, layer=2, n_layers=4).tolist() == [False]
    assert X.rule_fires(r, {"max_prob": 0.99}, layer=0, n_layers=4).tolist() == [False]  # layer 0 never exits
    assert X.rule_fires(r, {"max_prob": 0.0}, layer=4, n_layers=4).tolist() == [True]  # layer L always exits
    assert X.rule_fires(r, {"max_prob": np.nan}, layer=2, n_layers=4).tolist() == [False]
    assert X.rule_fires(X.ExitRule("static", 3), {}, layer=3, n_layers=4).tolist() == [True]
    assert X.rule_fires(X.ExitRule("oracle_correct"), {"top1": 5, "target": -1}, 2, 4).tolist() == [False]
    with pytest.raises(ValueError, match="max_prob"):
        X.rule_fires(r, {"entropy": 0.1}, layer=2, n_layers=4)
    with pytest.raises(ValueError, match="layer"):
        X.rule_fires(r, {"max_prob": 0.8}, layer=5, n_layers=4)
    assert X.ExitRule("consecutive", 2).required_stats == ("top1_streak",)


def test_decoder_streak_matches_simulator():
    top1 = np.array(TOP1)
    mat = X.top1_streak(top1)
    assert mat.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 0, 0, 0, 0]]
    # a decoder walks layers 1..L for one token at a time
    rule = X.ExitRule("consecutive", 1)
    for i, expected in enumerate([3, 2, 4]):
        streak, prev, exit_layer = None, None, None
        for layer in range(1, 5):
            streak = X.update_streak(streak, prev, top1[i, layer])
            prev = top1[i, layer]
            if X.rule_fires(rule, {"top1_streak": streak}, layer, 4)[0]:
                exit_layer = layer
                break
        assert exit_layer == expected


def test_rule_fires_agrees_with_simulate_on_synthetic():
    ro = synthetic_readout(n_docs=5, tokens_per_doc=8, n_layers=6, seed=4)
    rule = X.ExitRule("max_prob", 0.6)
    sim = X.simulate(ro, rule)
    for i in range(ro.n_tokens):
        layer = next(l for l in range(7) if X.rule_fires(rule, {"max_prob": ro["max_prob"][i, l]}, l, 6)[0])
        assert layer == sim[i]


def test_evaluate_by_hand():
    ro = toy()
    r = X.evaluate(ro, X.simulate(ro, X.ExitRule("static", 2)))
    # exited top1 at layer 2: [2, 3, 5]; final [2, 3, 6]; targets [2, 4, 5]
    assert r["mean_layers"] == 2.0 and r["skip_ratio"] == 0.5
    # answer-scored: skip and agreement over the answer tokens 0 and 2 (5 != 6 at token 2)
    assert r["skip_over"] == "answer_tokens" and r["n_skip_tokens"] == 2
    assert r["agreement"] == pytest.approx(1 / 2)
    assert r["token_accuracy"] == pytest.approx(2 / 3)  # 2==2, 3!=4, 5==5
    assert r["full_token_accuracy"] == pytest.approx(1 / 3)  # only 2==2
    # answer positions: doc 0 -> token 0, doc 1 -> token 2
    assert r["n_answer_docs"] == 2
    assert r["exact_match"] == 1.0 and r["full_exact_match"] == 0.5
    assert r["accuracy_kind"] == "exact_match" and r["accuracy"] == 1.0 and r["full_accuracy"] == 0.5
    assert r["rel_acc_loss"] == pytest.approx(-1.0)  # exiting early helps here
    # without answers the accuracy is token accuracy
    r2 = X.evaluate(toy(answer=[False] * 3), np.array([4, 4, 1]))
    assert r2["accuracy_kind"] == "token_accuracy" and math.isnan(r2["exact_match"])
    assert r2["skip_over"] == "all_tokens" and r2["n_skip_tokens"] == 3
    assert r2["mean_layers"] == 3.0 and r2["skip_ratio"] == pytest.approx((0 + 0 + 3 / 4) / 3)
    # token 2 exits at 1: top1 4 != final 6, != target 5
    assert r2["agreement"] == pytest.approx(2 / 3) and r2["token_accuracy"] == pytest.approx(1 / 3)
    assert r2["rel_acc_loss"] == pytest.approx(0.0)
    # a doc with two answer positions is right only if both are
    r3 = X.evaluate(toy(doc=[0, 0, 1], answer=[True, True, True]), np.array([2, 2, 2]))
    assert r3["exact_match"] == 0.5  # doc 0: token 1 wrong (3 != 4)


def test_skip_over_answer_tokens_differs_from_all_tokens():
    # exits [1, 4, 3]: answer tokens 0 and 2 skip 3/4 and 1/4; the prompt token 1 skips nothing
    r = X.evaluate(toy(), np.array([1, 4, 3]))
    assert r["skip_ratio"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert r["skip_ratio_all_tokens"] == pytest.approx((3 / 4 + 0 + 1 / 4) / 3)
    assert r["mean_layers"] == pytest.approx(2.0)
    f = X.tradeoff(toy(), rules=["static:1"])
    assert f.skip_over.tolist() == ["answer_tokens"] and f.n_skip_tokens.tolist() == [2]


def test_evaluate_rejects_bad_exit_layers():
    ro = toy()
    with pytest.raises(ValueError, match="one entry per token"):
        X.evaluate(ro, np.array([1, 2]))
    with pytest.raises(ValueError, match="0..4"):
        X.evaluate(ro, np.array([1, 2, 5]))
    with pytest.raises(ValueError, match="integers"):
        X.evaluate(ro, np.array([1.5, 2, 3]))


def test_tradeoff_default_grid():
    ro = toy()
    f = X.tradeoff(ro)
    for col in ("rule", "threshold", "mean_layers", "skip_ratio", "agreement", "accuracy", "full_accuracy",
                "rel_acc_loss", "n_tokens"):
        assert col in f
    assert set(f.rule) == set(X.EXIT_KINDS)
    assert len(f) == len(X.default_rules(4))
    oracle = f[f.rule == "saturation"].iloc[0]
    # exits [2, 1, 4]: answer tokens 0 and 2 skip (2 + 0) / 8; all tokens (2 + 3 + 0) / 12
    assert oracle.agreement == 1.0 and oracle.skip_ratio == pytest.approx((4 - 2 + 0) / 8)
    assert oracle.skip_ratio_all_tokens == pytest.approx(((4 - 2) + (4 - 1) + 0) / 12)
    assert math.isnan(oracle.threshold)
    full = f[(f.rule == "static") & (f.threshold == 4)].iloc[0]
    assert full.skip_ratio == 0.0 and full.rel_acc_loss == 0.0
    assert (f.n_tokens == 3).all() and (f.full_accuracy == 0.5).all()
    assert f[f.rule == "consecutive"].threshold.tolist() == [1, 2, 3]


def test_tradeoff_accepts_rule_shorthands():
    f = X.tradeoff(toy(), rules=[X.ExitRule("static", 2), ("max_prob", 0.75), {"kind": "margin", "threshold": 0.4},
                                 "saturation"])
    assert f.label.tolist() == ["static@2", "max_prob>=0.75", "margin>=0.4", "saturation oracle"]
    # exits [2,2,2], [3,2,4], [1,3,4], [2,1,4]; mean over the answer tokens 0 and 2
    assert f.mean_layers.tolist() == pytest.approx([2, 3.5, 2.5, 3])
    assert f.skip_ratio_all_tokens.tolist() == pytest.approx([1 - 2 / 4, 1 - 3 / 4, 1 - (8 / 3) / 4, 1 - (7 / 3) / 4])


def test_max_skip_under_budget_on_constructed_curve():
    f = pd.DataFrame({
        "rule": ["A", "A", "A", "B", "B", "C"],
        "threshold": [0.9, 0.7, 0.5, 0.9, 0.5, np.nan],
        "skip_ratio": [0.1, 0.3, 0.5, 0.2, 0.4, 0.25],
        "accuracy": [0.80, 0.77, 0.70, 0.60, 0.50, 0.8],
        "full_accuracy": [0.8] * 6,
        "agreement": [1.0, 0.97, 0.90, 0.9, 0.8, 1.0],
    })
    f["rel_acc_loss"] = (f.full_accuracy - f.accuracy) / f.full_accuracy  # A: 0, 0.0375, 0.125; B: 0.25, 0.375
    res = X.max_skip_under_budget(f, budget=0.05).set_index("rule")
    assert res.loc["A", "skip_ratio"] == 0.3 and res.loc["A", "threshold"] == 0.7
    assert res.loc["A", "n_admissible"] == 2
    assert res.loc["B", "skip_ratio"] == 0.0 and math.isnan(res.loc["B", "threshold"])
    assert res.loc["C", "skip_ratio"] == 0.25  # an oracle row: NaN threshold but admissible
    assert X.max_skip_under_budget(f, budget=0.2).set_index("rule").loc["A", "skip_ratio"] == 0.5
    assert X.max_skip_under_budget(f, budget=0.0).set_index("rule").loc["A", "skip_ratio"] == 0.1
    ag = X.max_skip_under_budget(f, budget=0.05, metric="agreement").set_index("rule")
    assert ag.loc["A", "skip_ratio"] == 0.3 and ag.loc["B", "skip_ratio"] == 0.0
    assert X.max_skip_under_budget(f, budget=0.1, metric="agreement").set_index("rule").loc["B", "threshold"] == 0.9
    # grouping by model
    two = pd.concat([f.assign(model="m1"), f.assign(model="m2")])
    assert len(X.max_skip_under_budget(two)) == 6


@pytest.mark.parametrize("budget", [-0.01, 1.0, 2, float("nan"), "five"])
def test_invalid_budget(budget):
    f = X.tradeoff(toy())
    with pytest.raises((TypeError, ValueError), match="budget"):  # a str is a TypeError, a bad number a ValueError
        X.max_skip_under_budget(f, budget=budget)


def test_invalid_metric_and_frame():
    f = X.tradeoff(toy())
    with pytest.raises(ValueError, match="metric"):
        X.max_skip_under_budget(f, metric="f1")
    with pytest.raises(ValueError, match="lacks"):
        X.max_skip_under_budget(f.drop(columns="rel_acc_loss"))


@pytest.mark.parametrize("kind, threshold, match", [
    ("max_prob", 1.5, r"\[0, 1\]"), ("max_prob", -0.1, r"\[0, 1\]"), ("margin", 2, r"\[0, 1\]"),
    ("entropy", -1, ">= 0"), ("hidden_saturation", 1.5, r"\[-1, 1\]"),
    ("consecutive", 0, "n >= 1"), ("consecutive", 1.5, "integer"), ("static", 0, "1..L"),
    ("static", 2.5, "integer"), ("max_prob", None, "needs a threshold"), ("entropy", float("nan"), "needs a threshold"),
    ("saturation", 0.5, "no threshold"), ("oracle", None, "now 'saturation'"),
    ("budget_oracle", None, "needs a threshold"), ("budget_oracle", 1.5, "relative accuracy loss"), ("early", 0.5, "unknown exit rule kind"), ("max_prob", "high", "number"),
])
def test_invalid_rules(kind, threshold, match):
    with pytest.raises((TypeError, ValueError), match=match):  # a str threshold is a TypeError
        X.ExitRule(kind, threshold)


def test_rule_checks_that_need_L():
    with pytest.raises(ValueError, match="min_layer"):
        X.ExitRule("max_prob", 0.5, min_layer=0)
    with pytest.raises(ValueError, match=r"1\.\.4"):
        X.simulate(toy(), X.ExitRule("static", 5))
    with pytest.raises(ValueError, match="exceeds"):
        X.simulate(toy(), X.ExitRule("max_prob", 0.5, min_layer=5))
    assert X.ExitRule("static", 3.0).threshold == 3  # integral floats accepted
    assert X.ExitRule("saturation", float("nan")).threshold is None


def test_empty_readout_errors():
    ro = empty_readout()
    with pytest.raises(ValueError, match="0 tokens"):
        X.simulate(ro, X.ExitRule("saturation"))
    with pytest.raises(ValueError, match="0 tokens"):
        X.evaluate(ro, np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="0 tokens"):
        X.tradeoff(ro)


def test_missing_statistic_is_clear():
    ro = toy()
    del ro.stats["margin"]
    with pytest.raises(ValueError, match="margin"):
        X.simulate(ro, X.ExitRule("margin", 0.3))
