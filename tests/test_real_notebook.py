"""eeutils.notebook.real_models: budgets, per-layer predictions, task skip and the reported-beside-measured frame
(hand-made readouts; no real model is loaded here)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from readout_factory import make_readout

from eeutils.arch.real import UnknownRealModel
from eeutils.notebook import real_models as rm

GEMMA, SMOL = rm.REAL_MODELS


def test_budgets_and_smoke_caps():
    assert rm.budget(GEMMA) == {"n_docs": rm.REAL_TOKENS[GEMMA] // rm.DOC_TOKENS, "max_tokens": rm.DOC_TOKENS}
    assert rm.budget(SMOL, {SMOL: 256}) == {"n_docs": 8, "max_tokens": 32}
    assert rm.budget(SMOL, {GEMMA: 256}) == rm.budget(SMOL)  # models missing from the dict keep their default
    assert rm.budget(GEMMA, 96)["n_docs"] == 3
    assert rm.budget(GEMMA, smoke=True)["n_docs"] * rm.DOC_TOKENS == rm.SMOKE_TOKENS
    assert rm.task_items(GEMMA) == rm.REAL_TASK_ITEMS[GEMMA]
    assert rm.task_items(SMOL, 500, smoke=True) == rm.SMOKE_TASK_ITEMS
    with pytest.raises(ValueError, match="below one document"):
        rm.budget(GEMMA, 10)
    with pytest.raises(UnknownRealModel, match="known"):
        rm.budget("real/gemma-2b")
    # Gemma's readout costs more per token: it never gets the larger budget
    assert rm.REAL_TOKENS[GEMMA] <= rm.REAL_TOKENS[SMOL] and rm.REAL_TASK_ITEMS[GEMMA] <= rm.REAL_TASK_ITEMS[SMOL]


def test_real_table_says_what_the_models_are():
    t = rm.real_table().set_index("model")
    assert list(t.index) == sorted(rm.REAL_MODELS)
    assert t.loc[SMOL, "kind"].startswith("tuned") and t.loc[GEMMA, "kind"].startswith("base")
    assert (t.weights.str.contains("quantised, dequantised to fp32")).all()
    assert t.loc[GEMMA, "vocab"] == 262144 and t.loc[SMOL, "layers"] == 30


def test_layer_predictions_and_settling_layer():
    # 2 tokens, 4 layers; the last position's top-1 is final from layer 2 on, after a detour at layer 1
    top1 = np.array([[5, 5, 5, 5, 5], [9, 7, 3, 3, 3]])
    r = make_readout(top1, max_prob=np.tile([0.1, 0.2, 0.3, 0.4, 0.9], (2, 1)))
    f = rm.layer_predictions(r, decode=lambda t: f"<{t}>")
    assert list(f.top1) == ["<9>", "<7>", "<3>", "<3>", "<3>"]
    assert list(f.is_final) == [False, False, True, True, True]
    assert f.p_top1.iloc[-1] == pytest.approx(0.9) and f.rel_depth.iloc[2] == pytest.approx(0.5)
    assert rm.settles_at(f) == 2
    # final at layer 1, lost at 2, back from 3: settles at 3, not 1
    f2 = rm.layer_predictions(make_readout(np.array([[0, 3, 4, 3, 3]])), decode=str)
    assert rm.settles_at(f2) == 3 and rm.first_final(f2) == 1 and rm.first_final(f) == 2
    assert rm.settles_at(rm.layer_predictions(make_readout(np.array([[3, 3, 3]])), decode=str)) == 0
    with pytest.raises(ValueError, match="no document 4"):
        rm.layer_predictions(r, decode=str, doc=4)


def test_task_skip_hand_computed():
    # 4 one-token answers, 2 layers. Layer 1 is right on 3 of 4 answers; the final layer on all 4.
    top1 = np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3], [9, 9, 4]])
    answer = np.ones(4, dtype=bool)
    r = make_readout(top1, doc=np.arange(4), target=np.array([1, 2, 3, 4]), answer=answer,
                     max_prob=np.tile([0.1, 0.95, 1.0], (4, 1)))
    out = rm.task_skip({"toy": r}, budget_=0.05)
    row = out.set_index("rule").loc["saturation"]
    assert row.full_accuracy == 1.0 and row.n_items == 4 and row.n_correct == 4
    # the saturation oracle exits at layer 1 on the three settled tokens and runs the 4th fully: 3/8 skipped
    assert row.skip_ratio == pytest.approx(3 / 8) and row.loss == pytest.approx(0.0)
    # with a 30% budget a max_prob rule may exit everything at layer 1 (loses 1 of 4 = 25%)
    loose = rm.task_skip({"toy": r}, budget_=0.30).set_index("rule").loc["max_prob"]
    assert loose.skip_ratio == pytest.approx(0.5) and loose.loss == pytest.approx(0.25)
    tight = out.set_index("rule").loc["max_prob"]
    assert tight.skip_ratio < 0.5
    with pytest.raises(ValueError, match="no answers"):
        rm.task_skip({"lm": make_readout(top1)})


def test_beside_reported_and_range_position():
    measured = pd.DataFrame({"model": ["a", "a"], "similarity": ["logit_cos", "top1"], "eas": [0.4, 0.2],
                             "lo": [0.35, 0.1], "hi": [0.45, 0.3], "ceiling": [0.6, 0.6]})
    reported = pd.DataFrame({"model": ["X", "Y", "Z"], "eas": [0.36, 0.46, 0.52]})
    both = rm.beside_reported(measured, reported)
    assert list(both.model) == ["X", "Y", "Z", "a"]
    assert both.source_kind.iloc[0] == "reported, secondary source" and both.lo.iloc[:3].isna().all()
    assert both.eas.iloc[-1] == 0.4 and both.hi.iloc[-1] == 0.45
    pos = rm.reported_range_position(0.4, reported)
    assert pos == {"n_below": 1, "n_above": 2, "min": 0.36, "max": 0.52, "n": 3}


def test_models_for_smoke_and_report_settings():
    assert rm.models_for(rm.REAL_MODELS) == list(rm.REAL_MODELS)
    assert rm.models_for(rm.REAL_MODELS, smoke=True) == [SMOL]  # 31 x 49k head products beat 19 x 262k
    assert rm.readout_settings(GEMMA, n_docs=48, max_tokens=128) == {**rm.budget(GEMMA), "task_items": rm.task_items(GEMMA)}
    assert rm.readout_settings("zoo/dense-mid", n_docs=48, max_tokens=128) == {"n_docs": 48, "max_tokens": 128,
                                                                                "task_items": 48}


def test_versus_group():
    table = pd.DataFrame({"model": ["z1", "z2", "r1", "r2", "r3"], "similarity": ["top1"] * 5,
                          "normalised": [0.5, 0.7, 0.2, 0.9, 0.6], "normalised_lo": [0.4, 0.6, 0.1, 0.75, 0.3],
                          "normalised_hi": [0.6, 0.8, 0.3, 0.95, 0.8], "n_layers": [6, 6, 18, 30, 18]})
    v = rm.versus_group(table, ["r1", "r2", "r3"], ["z1", "z2"]).set_index("model")
    assert list(v.position) == ["below every", "above every", "within the range of"]
    assert v.loc["r1", "group_min"] == 0.5 and v.loc["r1", "group_max"] == 0.7
