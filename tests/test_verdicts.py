"""Verdicts under the protocol, on hand-built readouts: seed-averaged effects, the combined interval, noise floors,
borrowed twins, the trend test and matched-loss selection. Values are computed by hand in the comments."""
import math

import numpy as np
import pytest
from readout_factory import make_readout, synthetic_readout

from eeutils.analysis import matching, trend, verdicts
from eeutils.analysis.eas import eas, eas_ceiling
from eeutils.analysis.verdicts import (
    NO_TWIN,
    Rule,
    combine_interval,
    compare,
    seed_quantile,
    side_spread,
    verdict,
    welch_df,
)

Z95 = 1.959963984540054


def SE(**kw):
    """Protocol version 1's rule (normal z, no seed minimum): the hand values below are computed with z."""
    return Rule(interval="doc-bootstrap+seed-se", **kw)
TOP1 = {"similarity": "top1", "value": "normalised", "alpha": 1.0}  # EAS = mean over layers 1..4 of S_l; ceiling 1


def _frac_readout(frac: float, n_docs=6, per_doc=5, L=4, model="m") -> "Readout":  # noqa: F821
    """Every document alike: round(frac * per_doc) tokens agree with the final top-1 at every layer, the rest
    only at the last. EAS (top1, alpha 1) = (3 * frac + 1) / 4; documents identical -> no bootstrap spread."""
    k = round(frac * per_doc)
    top1 = np.full((n_docs * per_doc, L + 1), 5)
    rows = np.tile(np.arange(per_doc) >= k, n_docs)
    top1[rows, 1:L] = 9
    top1[:, 0] = 3
    return make_readout(top1, doc=np.repeat(np.arange(n_docs), per_doc), model=model)


def test_verdict_rule_needs_interval_and_smallest_effect():
    assert verdict(0.1, 0.3, 0.2, 0.0) == "agree" and verdict(-0.3, -0.01, -0.1, 0.0) == "disagree"
    assert verdict(-0.1, 0.2, 0.05, 0.0) == "inconclusive"
    assert verdict(0.1, 0.3, effect=0.2, smallest_effect=0.15) == "agree"
    assert verdict(0.1, 0.3, effect=0.2, smallest_effect=0.25) == "inconclusive"   # excludes 0, below the floor
    assert verdict(-0.3, -0.1, effect=-0.2, smallest_effect=0.1) == "disagree"
    assert verdict(-0.3, -0.1, effect=-0.2, smallest_effect=float("nan")) == "inconclusive"  # no twin
    assert verdict(float("nan"), 1.0, 0.5, 0.1) == "inconclusive"
    with pytest.raises(ValueError, match="smallest_effect"):
        verdict(0.1, 0.3, 0.2, None)   # no interval-sign-only mode


def test_combine_interval_reduces_to_each_source():
    rng = np.random.default_rng(0)
    boot = 0.3 + rng.normal(0, 0.05, 400)
    lo_b, hi_b = np.quantile(boot, [0.025, 0.975])
    assert combine_interval(0.3, boot, 0.0, 0.95) == pytest.approx((lo_b, hi_b))
    assert combine_interval(0.3, np.full(50, 0.3), 0.01, 0.95) == pytest.approx((0.3 - Z95 * 0.1, 0.3 + Z95 * 0.1))
    lo, hi = combine_interval(0.3, boot, 0.0004, 0.95)  # quadrature, each side
    assert lo == pytest.approx(0.3 - math.hypot(0.3 - lo_b, Z95 * 0.02))
    assert hi == pytest.approx(0.3 + math.hypot(hi_b - 0.3, Z95 * 0.02))


def test_side_spread_by_hand():
    assert side_spread([0.5, 0.7]) == pytest.approx((0.02 / 2, 0.2))   # var ddof 1 = 0.02, over k = 2 seeds
    assert side_spread([0.3], borrowed=(0.3, 0.4)) == pytest.approx((0.005, 0.1))
    assert side_spread([0.3]) == (None, None)
    assert side_spread([0.1, 0.2, 0.4])[1] == pytest.approx(0.3)


def test_compare_hand_computed_effect_interval_floor():
    rs = {"a0": _frac_readout(1.0), "a1": _frac_readout(0.8), "b0": _frac_readout(0.2), "b1": _frac_readout(0.4)}
    # scores (3f + 1)/4: a 1.0, 0.85; b 0.4, 0.55 -> effect 0.925 - 0.475 = 0.45
    e = compare(rs, ["a0", "a1"], ["b0", "b1"], rule=SE(n_boot=50), **TOP1)
    assert e.effect == pytest.approx(0.45)
    assert e.boot_lo == pytest.approx(0.45) and e.boot_hi == pytest.approx(0.45)  # identical documents
    se = math.sqrt(0.15 ** 2 / 2 / 2 * 2)  # each side: var (0.15^2 / 2) / 2 seeds
    assert e.seed_se == pytest.approx(se)
    assert (e.lo, e.hi) == pytest.approx((0.45 - Z95 * se, 0.45 + Z95 * se))
    assert e.noise_floor == pytest.approx(0.15) and e.smallest_effect == pytest.approx(0.15)
    assert e.verdict == "agree" and e.interval_kind == "doc-bootstrap+seed-se"
    # version 2: Student's t with the Welch-Satterthwaite df: both sides var 0.01125/2 each, df = 1 + 1 = 2
    t2 = compare(rs, ["a0", "a1"], ["b0", "b1"], rule=Rule(n_boot=50), **TOP1)
    assert t2.extra["seed_df"] == pytest.approx(2.0) and t2.interval_kind == "doc-bootstrap+seed-t"
    assert (t2.lo, t2.hi) == pytest.approx((0.45 - 4.302652729911275 * se, 0.45 + 4.302652729911275 * se))
    assert t2.verdict == "inconclusive"   # lo = 0.45 - 4.30 x 0.106 = -0.006: the t interval includes 0
    assert sorted(map(tuple, e.floor_pairs)) == [("a0", "a1"), ("b0", "b1")]
    rev = compare(rs, ["b0", "b1"], ["a0", "a1"], rule=SE(n_boot=50), **TOP1)
    assert rev.effect == pytest.approx(-0.45) and rev.verdict == "disagree"


def test_compare_effect_below_min_effect_is_inconclusive_even_when_interval_excludes_zero():
    rs = {f"a{i}": _frac_readout(0.6, per_doc=100) for i in range(2)} | \
         {f"b{i}": _frac_readout(0.59, per_doc=100) for i in range(2)}
    e = compare(rs, ["a0", "a1"], ["b0", "b1"], rule=SE(n_boot=20, min_effect=0.01), **TOP1)
    assert e.effect == pytest.approx(0.0075) and e.lo > 0   # twins identical: floor 0, zero-width interval
    assert e.noise_floor == 0 and e.smallest_effect == pytest.approx(0.01) and e.verdict == "inconclusive"


def test_compare_without_twin_is_inconclusive_and_borrowing_is_recorded():
    rs = {"a0": _frac_readout(1.0), "b0": _frac_readout(0.2), "x": _frac_readout(0.6), "y": _frac_readout(0.8)}
    e = compare(rs, ["a0"], ["b0"], rule=SE(n_boot=20), **TOP1)
    assert e.effect == pytest.approx(0.6) and e.lo > 0 and e.verdict == "inconclusive" and e.reason == NO_TWIN
    assert e.interval_kind == "doc-bootstrap" and math.isnan(e.noise_floor)
    with pytest.raises(KeyError, match="no readout"):
        compare(rs, ["a0"], ["zz"], rule=SE(n_boot=5), **TOP1)
    both = compare(rs, ["a0"], ["b0"], rule=SE(n_boot=20), borrow={"a0": ("x", "y"), "b0": ("x", "y")}, **TOP1)
    # x, y scores 0.7, 0.85: floor 0.15, each side var 0.15^2 / 2
    assert both.noise_floor == pytest.approx(0.15) and both.seed_se == pytest.approx(0.15)
    assert both.verdict == "agree" and "borrowed" in both.reason


def test_compare_bootstrap_matches_resampled_documents():
    ra, rb = synthetic_readout(seed=1, slope=0.6, model="a"), synthetic_readout(seed=2, slope=1.4, model="b")
    rs = {"a0": ra, "a1": synthetic_readout(seed=3, slope=0.7), "b0": rb, "b1": synthetic_readout(seed=4, slope=1.3)}
    e = compare(rs, ["a0", "a1"], ["b0", "b1"], rule=SE(n_boot=40, seed=7), similarity="logit_cos", value="eas", alpha=0.5)
    docs = np.unique(ra.doc)
    draws = np.random.default_rng(7).integers(0, len(docs), size=(40, len(docs)))
    manual = [np.mean([eas(rs[m].select_docs(docs[d]), similarity="logit_cos").value for m in ("a0", "a1")])
              - np.mean([eas(rs[m].select_docs(docs[d]), similarity="logit_cos").value for m in ("b0", "b1")])
              for d in draws]
    assert (e.boot_lo, e.boot_hi) == pytest.approx(tuple(np.quantile(manual, [0.025, 0.975])))
    assert e.lo <= e.boot_lo and e.hi >= e.boot_hi


def test_compare_refuses_different_documents():
    rs = {"a": _frac_readout(1.0), "b": _frac_readout(0.2, n_docs=5)}
    with pytest.raises(ValueError, match="same documents"):
        compare(rs, ["a"], ["b"], rule=SE(n_boot=5), **TOP1)


def test_robustness_counts_variants_with_the_primary_verdict():
    rs = {"a0": _frac_readout(1.0), "a1": _frac_readout(0.8), "b0": _frac_readout(0.2), "b1": _frac_readout(0.4)}
    p = compare(rs, ["a0", "a1"], ["b0", "b1"], rule=SE(n_boot=10), **TOP1)
    others = [compare(rs, ["a0", "a1"], ["b0", "b1"], rule=SE(n_boot=10), **TOP1),
              compare(rs, ["b0", "b1"], ["a0", "a1"], rule=SE(n_boot=10), **TOP1)]
    rob = verdicts.robustness(p, others)
    assert rob["label"] == "1/2" and rob["counts"] == {"agree": 1, "disagree": 1, "inconclusive": 0}


def _curve(fracs: dict) -> dict:
    return {step: _frac_readout(f) for step, f in fracs.items()}


def test_trend_slope_per_doubling_and_segment():
    # scores (3f+1)/4 at steps 8,16,32,64: run0 1.0 .85 .7 .55, run1 .85 .7 .55 .4 -> slope -0.15 per doubling
    r0 = _curve({0: 0.0, 8: 1.0, 16: 0.8, 32: 0.6, 64: 0.4})
    r1 = _curve({0: 0.0, 8: 0.8, 16: 0.6, 32: 0.4, 64: 0.2})
    e = trend.trend_effect({"r0": r0, "r1": r1}, rule=SE(n_boot=10), min_step=1, **TOP1)
    assert e.extra["steps"] == [8, 16, 32, 64]  # step 0 left out by the segment
    assert e.effect == pytest.approx(0.15) and e.noise_floor == pytest.approx(0.0)
    assert (e.lo, e.hi) == pytest.approx((0.15, 0.15)) and e.verdict == "agree"
    assert e.extra["kendall_tau"] == pytest.approx(-1.0) and e.extra["kendall_p"] == pytest.approx(2 / 24)
    with pytest.raises(ValueError, match="log2"):
        trend.trend_effect({"r0": r0, "r1": r1}, rule=SE(n_boot=10), min_step=0, **TOP1)
    later = trend.trend_effect({"r0": r0, "r1": r1}, rule=SE(n_boot=10), min_step=16, **TOP1)
    assert later.extra["steps"] == [16, 32, 64] and later.effect == pytest.approx(0.15)
    raw = trend.trend_effect({"r0": r0, "r1": dict(r0)}, similarity="top1", value="eas", alpha=0.5,
                             rule=SE(n_boot=10, eas_options={"aggregate": "power_of_mean", "index_base": 1,
                                                             "include_embedding": False}))
    assert raw.noise_floor == 0 and raw.smallest_effect == pytest.approx(0.01 * eas_ceiling(4, 0.5))
    one = trend.trend_effect({"r0": r0}, rule=SE(n_boot=10), **TOP1)
    assert one.verdict == "inconclusive" and one.reason == NO_TWIN
    few = trend.trend_effect({"r0": _curve({8: 1.0, 16: 0.8}), "r1": _curve({8: 1.0, 16: 0.8})}, rule=SE(n_boot=5),
                             **TOP1)
    assert few.verdict == "inconclusive" and "fewer than 3" in few.reason


def test_trend_seed_disagreement_sets_the_floor():
    r0 = _curve({8: 1.0, 16: 0.8, 32: 0.6})            # slope -0.15
    r1 = _curve({8: 0.6, 16: 0.6, 32: 0.6})            # slope 0
    e = trend.trend_effect({"r0": r0, "r1": r1}, rule=SE(n_boot=10), **TOP1)
    assert e.effect == pytest.approx(0.075) and e.noise_floor == pytest.approx(0.15)
    assert e.verdict == "inconclusive"


def test_slope_kendall_and_permutation_by_hand():
    assert trend.slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)
    assert trend.kendall_tau([1, 2, 3], [3, 1, 2]) == pytest.approx(-1 / 3)
    assert trend.permutation_p([1, 2, 3], [1, 2, 3]) == pytest.approx(2 / 6)
    nine = np.arange(9)
    assert trend.permutation_p(nine, -nine, n_perm=2000) < 0.002       # 2 of 9! orders are this extreme
    assert trend.permutation_p(nine, [3, 1, 4, 1, 5, 9, 2, 6, 5], n_perm=2000) > 0.05


def test_closest_revision():
    cands = {"step-64": [5.0, 5.2], "step-112": [4.6, 4.7], "main": [4.2]}
    assert matching.closest_revision(cands, 4.7) == ("step-112", pytest.approx(4.65), pytest.approx(0.05))
    assert matching.closest_revision(cands, 1.0)[0] == "main"
    with pytest.raises(ValueError):
        matching.closest_revision({}, 4.0)


def test_t_quantile_and_welch_df_by_hand():
    assert seed_quantile(0.95) == pytest.approx(Z95)                         # infinite df: the normal z
    assert seed_quantile(0.95, 1) == pytest.approx(12.706204736174698)
    assert seed_quantile(0.95, 2) == pytest.approx(4.302652729911275)
    assert seed_quantile(0.95, 4) == pytest.approx(2.7764451051977987)
    assert welch_df([(0.01, 2), (0.01, 2)]) == pytest.approx(4.0)           # (0.02)^2 / (2 x 0.0001 / 2)
    assert welch_df([(0.01, 2), (0.0, 2)]) == pytest.approx(2.0)            # one side without variance
    assert welch_df([(0.0, 2), (0.0, 2)]) == math.inf
    with pytest.raises(ValueError):
        seed_quantile(0.95, 0)


def test_three_seeds_needed_for_a_verdict():
    fr = {"a0": 1.0, "a1": 0.9, "a2": 0.95, "b0": 0.2, "b1": 0.25, "b2": 0.3}
    rs = {k: _frac_readout(v, per_doc=20) for k, v in fr.items()}
    three = compare(rs, ["a0", "a1", "a2"], ["b0", "b1", "b2"], rule=Rule(n_boot=20, min_seeds=3), **TOP1)
    assert three.verdict == "agree" and three.extra["seed_df"] == pytest.approx(4.0)
    two = compare(rs, ["a0", "a1"], ["b0", "b1", "b2"], rule=Rule(n_boot=20, min_seeds=3), **TOP1)
    assert two.verdict == "inconclusive" and "fewer than 3 seeds (A: 2, B: 3)" in two.reason
    assert two.lo > 0   # the interval alone would have said agree: the seed rule withholds it
    r = {8: 1.0, 16: 0.8, 32: 0.6, 64: 0.4}
    runs = {f"r{i}": _curve({k: v - 0.05 * i for k, v in r.items()}) for i in range(3)}
    assert trend.trend_effect(runs, rule=Rule(n_boot=10, min_seeds=3), **TOP1).verdict == "agree"
    short = trend.trend_effect({k: runs[k] for k in ("r0", "r1")}, rule=Rule(n_boot=10, min_seeds=3), **TOP1)
    assert short.verdict == "inconclusive" and "fewer than 3 seeds" in short.reason
