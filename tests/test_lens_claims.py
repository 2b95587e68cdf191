"""Notebook 12 and 13 helpers: seed-noise floor and recipe effect (hand-computed), speed at equal agreement,
claims under two lenses and how their conclusions fare, the tuned lens' per-check cost."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from readout_factory import make_readout

from eeutils.notebook import exit_training as et
from eeutils.notebook import lenses as ln


def test_seed_noise_floor_is_the_largest_twin_range():
    f = et.seed_noise_floor({"dense": [0.50, 0.52], "layerskip": [0.60, 0.57], "single": [0.40]})
    assert f["per_recipe"] == pytest.approx({"dense": 0.02, "layerskip": 0.03})
    assert f["floor"] == pytest.approx(0.03) and f["n_recipes"] == 2
    with pytest.raises(ValueError, match="two or more seeds"):
        et.seed_noise_floor({"a": [0.1]})
    with pytest.raises(ValueError, match="non-finite"):
        et.seed_noise_floor({"a": [0.1, float("nan")]})


def test_recipe_effect_against_the_floor():
    # effect = (0.60 + 0.57)/2 - (0.50 + 0.52)/2 = 0.075; pairs 0.10, 0.08, 0.07, 0.05 all positive
    e = et.recipe_effect([0.60, 0.57], [0.50, 0.52], floor=0.03)
    assert e["effect"] == pytest.approx(0.075) and e["snr"] == pytest.approx(2.5)
    assert (e["pair_min"], e["pair_max"]) == pytest.approx((0.05, 0.10))
    assert e["call"] == "raises" and e["beyond_floor"] and e["consistent"]
    assert et.recipe_effect([0.40, 0.42], [0.50, 0.52], floor=0.03)["call"] == "lowers"
    # beyond the floor but one seed pair has the other sign: not attributed to the recipe
    mixed = et.recipe_effect([0.60, 0.49], [0.50, 0.45], floor=0.03)
    assert mixed["effect"] == pytest.approx(0.07) and not mixed["consistent"] and mixed["call"] == "within seed noise"
    assert et.recipe_effect([0.51, 0.52], [0.50, 0.50], floor=0.03)["call"] == "within seed noise"
    # a bootstrap interval that crosses 0 also keeps it within noise
    assert et.recipe_effect([0.60, 0.57], [0.50, 0.52], 0.03, boot_lo=-0.01, boot_hi=0.2)["call"] == "within seed noise"
    assert math.isinf(et.recipe_effect([0.6], [0.5], 0.0)["snr"])
    with pytest.raises(ValueError, match="floor"):
        et.recipe_effect([0.6], [0.5], -1.0)


def test_best_at_quality():
    f = pd.DataFrame({"model": ["a", "a", "a", "b"], "speed_ratio": [1.5, 1.2, 0.9, 2.0],
                      "agreement": [0.8, 0.97, 1.0, 0.5]})
    best = et.best_at_quality(f, 0.95)
    assert best.to_dict("records") == [{"model": "a", "speed_ratio": 1.2, "agreement": 0.97}]
    assert et.best_at_quality(f, 0.4).speed_ratio.tolist() == [1.5, 2.0]
    with pytest.raises(ValueError):
        et.best_at_quality(f, 1.5)


def test_conclusion_status_table():
    s = ln.conclusion_status
    assert s("agree", "agree") == "holds under both" and s("disagree", "disagree") == "holds under both"
    assert s("agree", "disagree") == "flips" and s("disagree", "agree") == "flips"
    assert s("agree", "inconclusive") == "lens-dependent" and s("inconclusive", "disagree") == "lens-dependent"
    assert s("inconclusive", "inconclusive") == "inconclusive under both"


def _readout(agree_at_layer1: float, n_docs=6, per_doc=5, L=4, seed=0, model="m"):
    rng = np.random.default_rng(seed)
    n = n_docs * per_doc
    top1 = np.full((n, L + 1), 5)
    top1[~(rng.random(n) < agree_at_layer1), 1:L] = 9
    top1[:, 0] = 3
    return make_readout(top1, doc=np.repeat(np.arange(n_docs), per_doc), model=model)


def _run(effect, lo, hi, floor, verdict):
    from types import SimpleNamespace

    from eeutils.notebook.findings import Finding

    f = Finding("05", "A more suitable than B", "A > B", "A > B", effect, lo, hi, "m", comparison="equal tokens",
                noise_floor=floor, smallest_effect=floor, interval_kind="doc-bootstrap+seed-t", headline=True)
    assert f.verdict == verdict
    return SimpleNamespace(finding=f)


def test_lens_verdicts_side_by_side():
    runs = {("dense_vs_moe", "zoo-prose"): {"logit": _run(0.2, 0.1, 0.3, 0.05, "agree"),
                                            "tuned": _run(-0.2, -0.3, -0.1, 0.05, "disagree")},
            ("dense_vs_ssm", "zoo-prose"): {"logit": _run(0.01, -0.1, 0.1, 0.05, "inconclusive"),
                                            "tuned": _run(0.2, 0.1, 0.3, 0.05, "agree")}}
    t = ln.lens_verdicts(runs).set_index("claim_key")
    assert t.loc["dense_vs_moe", "status"] == "flips" and not t.loc["dense_vs_moe", "sign_same"]
    assert t.loc["dense_vs_ssm", "status"] == "lens-dependent" and t.loc["dense_vs_ssm", "sign_same"]
    assert t.loc["dense_vs_moe", "floor_tuned"] == 0.05 and t.loc["dense_vs_moe", "comparison"] == "equal tokens"


def test_tuned_check_costs_one_more_d_by_d_product():
    import tiny_models as tm

    import eeutils
    from eeutils.decoding.evaluation import cost_profile
    from eeutils.decoding.lens_cost import check_cost_blocks, check_cost_table

    lm = eeutils.wrap_model(tm.make_model("llama"))
    p = cost_profile(lm)
    d = 32
    assert check_cost_blocks(lm, "logit") == pytest.approx(p["head_cost_blocks"])
    assert check_cost_blocks(lm, "tuned") - check_cost_blocks(lm, "logit") == pytest.approx((d * d + d) / p["block_macs"])
    t = check_cost_table([lm])
    assert list(t.lens) == ["logit", "tuned"] and t.extra_vs_logit.iloc[0] == 0 and t.extra_vs_logit.iloc[1] > 0
    with pytest.raises(ValueError, match="lens"):
        check_cost_blocks(lm, "tunned")


def test_agreement_of_generations():
    from eeutils.decoding.speculative import agreement

    assert agreement([1, 2, 3, 4], [1, 2, 9, 4]) == 0.75
    assert agreement([1, 2], [1, 2, 3, 4]) == 0.5
    with pytest.raises(ValueError):
        agreement([1], [])


def test_self_speculative_speed_rows():
    import tiny_models as tm

    import eeutils
    from eeutils.decoding import DecodingUnsupported
    from eeutils.decoding.speculative import self_speculative_speed

    lm = eeutils.wrap_model(tm.make_model("llama"))
    f = self_speculative_speed(lm, [[5, 9, 17, 3], [7, 70, 11]], layers=[1, 2], max_new_tokens=4, repeats=1)
    assert list(f.method) == ["generate", "self_speculative", "self_speculative"]
    assert list(f.early_exit_layer) == [3, 1, 2] and f.speed_ratio.iloc[0] == 1.0
    assert (f.agreement == 1.0).all(), "greedy verification reproduces full greedy decoding"
    with pytest.raises(DecodingUnsupported):
        self_speculative_speed(eeutils.wrap_model(tm.make_model("mamba2")), [[5, 9, 17]], max_new_tokens=2, repeats=1)


def test_budget_skip_takes_the_best_rule():
    # every token agrees with the final top-1 from layer 1 on: the oracle and any confident rule skip a lot
    top1 = np.full((30, 5), 5)
    top1[:, 0] = 3
    r = make_readout(top1, doc=np.repeat(np.arange(6), 5))
    b = et.budget_skip(r, budget=0.05, metric="agreement")
    assert 0.5 <= b["skip_ratio"] <= 0.75 + 1e-9 and b["rule"]
    assert not b["rule"].startswith(("budget_oracle", "saturation"))  # oracles are never "the best rule"
    assert b["skip_ratio"] <= b["oracle_skip_ratio"] + 1e-12  # no rule beats the budget oracle


def test_decoding_by_lens_picks_the_best_agreeing_configuration_per_lens():
    import pandas as pd
    from eeutils.notebook.lenses import decoding_by_lens, decoding_by_lens_text
    base = dict(strategy="propagate", n_layers=6, kv_writes_per_token=0.0, kv_cost_blocks=0.25,
                head_cost_blocks=1.0, oracle_skip_ratio=0.5, check_blocks_per_token=0.0)

    def frame(rows):
        return pd.DataFrame([dict(base, **r) for r in rows])
    full = dict(rule="full", agreement=1.0, skip_ratio=0.0, flop_speedup=1.0, speed_ratio=1.0,
                layers_per_token=6.0, lens_calls_per_token=1.0)
    logit = frame([full, dict(rule="a", agreement=1.0, skip_ratio=0.1, flop_speedup=0.8, speed_ratio=0.7,
                              layers_per_token=5.4, lens_calls_per_token=3.0),
                   dict(rule="b", agreement=0.9, skip_ratio=0.5, flop_speedup=1.5, speed_ratio=1.2,
                        layers_per_token=3.0, lens_calls_per_token=1.0)])
    tuned = frame([full, dict(rule="c", agreement=0.96, skip_ratio=0.3, flop_speedup=1.2, speed_ratio=1.1,
                              layers_per_token=4.2, lens_calls_per_token=2.0, check_blocks_per_token=0.1)])
    t = decoding_by_lens({"logit": logit, "tuned": tuned}, levels=(1.0, 0.95))
    got = {(r.lens, r.level): r.rule for r in t.itertuples()}
    # "b" is faster but agrees on 90% only; at 95% the logit lens has "a" only, the tuned lens "c"
    assert got == {("logit", 1.0): "a", ("logit", 0.95): "a", ("tuned", 1.0): None, ("tuned", 0.95): "c"}
    text = decoding_by_lens_text(t)
    assert "tuned lens: no configuration exits early" in text and "c / propagate, modelled 1.20x" in text
    assert "a / propagate, modelled 0.80x, measured 0.70x (does not pay" in text


def test_lens_gain_hand_values():
    import pandas as pd
    from eeutils.notebook.lenses import lens_gain
    t = pd.DataFrame([
        dict(model="m", similarity="top1", lens="logit", normalised=0.2, normalised_lo=0.18, normalised_hi=0.22),
        dict(model="m", similarity="top1", lens="tuned", normalised=0.5, normalised_lo=0.45, normalised_hi=0.55),
        dict(model="m", similarity="logit_cos", lens="logit", normalised=0.40, normalised_lo=0.35, normalised_hi=0.45),
        dict(model="m", similarity="logit_cos", lens="tuned", normalised=0.42, normalised_lo=0.38, normalised_hi=0.46)])
    g = lens_gain(t).set_index("similarity")
    assert np.isclose(g.loc["top1", "gain"], 0.3) and np.isclose(g.loc["top1", "gain_lo"], 0.23)
    assert np.isclose(g.loc["top1", "gain_hi"], 0.37) and g.loc["top1", "clear"]
    assert np.isclose(g.loc["logit_cos", "gain_lo"], -0.07) and not g.loc["logit_cos", "clear"]
    with pytest.raises(KeyError):
        lens_gain(t[t.lens == "logit"])
