"""Hand-computed checks of eeutils.metrics on hand-built readouts."""
import math

import numpy as np
import pandas as pd
import pytest

from eeutils import metrics as M
from eeutils.analysis.bootstrap import draw_docs
from eeutils.analysis.similarity import _topk_overlap_from_ids
from readout_factory import empty_readout, identical_readout, make_readout, synthetic_readout

KINDS = ["logit_cos", "hidden_cos", "topk_overlap", "kl", "top1"]


# ---------------------------------------------------------------------------
# ceiling: a model whose every layer equals the final one
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_identical_model_scores_its_ceiling(kind):
    ro = identical_readout(n_tokens=3, n_layers=4)
    assert np.all(M.similarity(ro, kind) == 1.0)
    r = M.eas(ro, alpha=0.5, similarity=kind)
    # L = 4, layers 1..4: w = 3/4, 2/4, 1/4, 0 -> sqrt each, mean of 4
    by_hand = (math.sqrt(0.75) + math.sqrt(0.5) + math.sqrt(0.25) + 0.0) / 4  # = 0.518283...
    assert r.value == pytest.approx(by_hand, abs=1e-12)
    assert r.ceiling == pytest.approx(by_hand, abs=1e-12)
    assert r.value == pytest.approx(0.5182830462, abs=1e-9)
    assert r.normalised == pytest.approx(1.0)
    assert M.eas_ceiling(4, 0.5) == pytest.approx(by_hand)


def test_ceiling_depends_on_depth_and_alpha():
    assert M.eas_ceiling(1, 0.5) == 0.0  # only the last layer, w = 0
    assert M.eas_ceiling(2, 0.5) == pytest.approx(math.sqrt(0.5) / 2)
    assert M.eas_ceiling(4, 1.0) == 1.0  # w^0 = 1 everywhere
    assert M.eas_ceiling(4, 0.0) == pytest.approx((0.75 + 0.5 + 0.25 + 0) / 4)
    assert M.eas_ceiling(32, 0.5) > M.eas_ceiling(6, 0.5)


# ---------------------------------------------------------------------------
# hand-computed toys
# ---------------------------------------------------------------------------
def _two_layer_toy():
    # L = 2, two tokens; logit_cos at layer 1 is 0.5 and 1.0, final layer 1.
    top1 = [[1, 1, 1], [2, 2, 2]]
    cos = [[0.0, 0.5, 1.0], [0.0, 1.0, 1.0]]
    return make_readout(top1, logit_cos=cos)


def test_two_layer_toy_by_hand():
    r = M.eas(_two_layer_toy(), alpha=0.5)
    # layer 1: S = mean(0.5, 1.0) = 0.75, w = 1/2 -> A_1 = sqrt(0.75 * 0.5) = sqrt(0.375)
    # layer 2: w = 0 -> A_2 = 0;  EAS = (A_1 + A_2) / 2
    assert r.value == pytest.approx(math.sqrt(0.375) / 2)
    assert r.value == pytest.approx(0.3061862178)
    assert r.ceiling == pytest.approx(math.sqrt(0.5) / 2)
    assert list(r.curve.columns[:3]) == ["layer", "index", "rel_depth"]
    assert r.curve["layer"].tolist() == [1, 2]
    assert r.curve["w"].tolist() == [0.5, 0.0]
    assert r.curve["S"].tolist() == [0.75, 1.0]
    assert r.curve["A"].iloc[-1] == 0.0
    assert r.params["n_terms"] == 2 and r.params["alpha"] == 0.5


def test_power_of_mean_vs_mean_of_power_by_hand():
    ro = _two_layer_toy()
    pom = M.eas(ro, aggregate="power_of_mean").value
    mop = M.eas(ro, aggregate="mean_of_power").value
    # mean_of_power layer 1: mean(sqrt(0.5), sqrt(1)) * sqrt(0.5), then / 2
    assert mop == pytest.approx((math.sqrt(0.5) + 1.0) / 2 * math.sqrt(0.5) / 2)
    assert mop == pytest.approx(0.3017766953)
    assert pom == pytest.approx(0.3061862178)
    assert mop < pom  # Jensen, concave power


def test_three_layer_toy_layer_choices_by_hand():
    # L = 3, one token; S per readout layer 0..3 = 1.0, 0.25, 0.64, 1.0
    ro = make_readout([[5, 6, 7, 8]], logit_cos=[[1.0, 0.25, 0.64, 1.0]])
    a1 = math.sqrt(0.25 * 2 / 3)  # layer 1, w = 2/3
    a2 = math.sqrt(0.64 * 1 / 3)  # layer 2, w = 1/3
    # default: layers 1..3, w_3 = 0
    assert M.eas(ro).value == pytest.approx((a1 + a2 + 0) / 3)
    assert M.eas(ro).value == pytest.approx(0.2900428353)
    # with the embedding: layer 0 has w = 1, A_0 = 1, L' = 4
    r = M.eas(ro, include_embedding=True)
    assert r.value == pytest.approx((1 + a1 + a2 + 0) / 4)
    assert r.ceiling == pytest.approx((1 + math.sqrt(2 / 3) + math.sqrt(1 / 3)) / 4)
    # 0-based block indices: blocks 1..3 get l = 0..2, w = 1, 2/3, 1/3
    r0 = M.eas(ro, index_base=0)
    assert r0.value == pytest.approx((math.sqrt(0.25) + math.sqrt(0.64 * 2 / 3) + math.sqrt(1 / 3)) / 3)
    assert r0.value == pytest.approx(0.5768491780)
    assert r0.curve["index"].tolist() == [0, 1, 2]
    assert r0.ceiling == pytest.approx((1 + math.sqrt(2 / 3) + math.sqrt(1 / 3)) / 3)


def test_alpha_extremes():
    ro = make_readout([[5, 6, 7, 8]], logit_cos=[[1.0, 0.25, 0.64, 1.0]])
    # alpha = 1: mean S over layers 1..3 (0**0 = 1 for the final layer)
    assert M.eas(ro, alpha=1.0).value == pytest.approx((0.25 + 0.64 + 1.0) / 3)
    # alpha = 0: mean w whatever S is
    r = M.eas(ro, alpha=0.0)
    assert r.value == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert r.normalised == pytest.approx(1.0)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "half", None])
def test_alpha_out_of_range(alpha):
    with pytest.raises((TypeError, ValueError), match="alpha"):  # a str or None is a TypeError, a bad number a ValueError
        M.eas(_two_layer_toy(), alpha=alpha)


def test_bad_choices_error():
    ro = _two_layer_toy()
    with pytest.raises(ValueError, match="aggregate"):
        M.eas(ro, aggregate="median")
    with pytest.raises(ValueError, match="index_base"):
        M.eas(ro, index_base=2)
    with pytest.raises(ValueError, match="index_base=0"):
        M.eas(ro, include_embedding=True, index_base=0)
    with pytest.raises(ValueError, match="logit_cos"):
        M.eas(ro, similarity="euclid")


# ---------------------------------------------------------------------------
# similarity kinds
# ---------------------------------------------------------------------------
def test_similarity_logit_and_hidden_cos_clip_and_nan():
    cos = [[-0.5, 0.3, 1.0000001, 1.0], [np.nan, 0.2, 0.9, 1.0]]
    ro = make_readout([[1, 1, 1, 1], [2, 2, 2, 2]], logit_cos=cos, hidden_cos=cos)
    for kind in ("logit_cos", "hidden_cos"):
        s = M.similarity(ro, kind)
        assert s[0].tolist() == [0.0, 0.3, 1.0, 1.0]
        assert np.isnan(s[1, 0]) and s[1, 1:].tolist() == [0.2, 0.9, 1.0]
    # NaN skipped in the token mean: layer 0 mean is 0.0 from the one finite token
    r = M.eas(ro, include_embedding=True)
    assert r.curve["S"].iloc[0] == 0.0
    assert r.curve["S"].iloc[1] == pytest.approx(0.25)


def test_all_nan_layer_is_a_clear_error():
    ro = make_readout([[1, 1, 1]], logit_cos=[[np.nan, 0.5, 1.0]])
    assert M.eas(ro).value == pytest.approx(math.sqrt(0.5 * 0.5) / 2)
    with pytest.raises(ValueError, match="NaN for every token"):
        M.eas(ro, include_embedding=True)


def test_similarity_kl_is_exp_minus_kl():
    kl = [[math.log(4), math.log(2), -1e-9, 0.0]]
    s = M.similarity(make_readout([[1, 1, 1, 1]], kl_to_final=kl), "kl")
    assert s[0].tolist() == pytest.approx([0.25, 0.5, 1.0, 1.0])


def test_similarity_top1():
    s = M.similarity(make_readout([[3, 4, 5, 5], [9, 9, 8, 9]]), "top1")
    assert s.tolist() == [[0, 0, 1, 1], [1, 1, 0, 1]]


def test_similarity_topk_overlap_stored_and_recomputed():
    # k = 3, L = 2, one token. final top-3 = [7, 8, 9]
    topk = np.array([[[1, 2, 3], [8, 7, 4], [7, 8, 9]]])
    ro = make_readout([[1, 8, 7]], topk=topk, topk_overlap=[[0.0, 2 / 3, 1.0]])
    assert M.similarity(ro, "topk_overlap").tolist() == [[0.0, 2 / 3, 1.0]]
    # k = 2 from the ids: final top-2 = {7, 8}; layer 1 top-2 = {8, 7} -> 1; layer 0 {1, 2} -> 0
    assert M.similarity(ro, "topk_overlap", k=2).tolist() == [[0.0, 1.0, 1.0]]
    # k = 1: top-1 ids 1, 8 vs 7 -> 0, 0, 1
    assert M.similarity(ro, "topk_overlap", k=1).tolist() == [[0.0, 0.0, 1.0]]
    # k = 3 recomputed equals the stored statistic
    assert _topk_overlap_from_ids(topk, 3).tolist() == [[0.0, 2 / 3, 1.0]]
    assert M.eas(ro, similarity="topk_overlap", k=2).params["k"] == 2
    with pytest.raises(ValueError, match="1..3"):
        M.similarity(ro, "topk_overlap", k=4)
    with pytest.raises(ValueError, match="only applies"):
        M.similarity(ro, "logit_cos", k=2)


def test_topk_recompute_matches_sets_on_random_ids():
    from readout_factory import topk_overlap_from_ids
    rng = np.random.default_rng(1)
    topk = np.stack([np.stack([rng.permutation(12)[:5] for _ in range(4)]) for _ in range(30)])
    ro = make_readout(topk[:, :, 0], topk=topk)
    for k in (1, 3, 5):
        assert np.allclose(M.similarity(ro, "topk_overlap", k=k), topk_overlap_from_ids(topk[:, :, :k]))


def test_unknown_kind_lists_kinds():
    with pytest.raises(ValueError) as e:
        M.similarity(_two_layer_toy(), "cka")
    for kind in KINDS:
        assert kind in str(e.value)


def test_empty_readout_errors():
    ro = empty_readout()
    for call in (lambda: M.similarity(ro, "top1"), lambda: M.eas(ro), lambda: M.bootstrap_eas(ro, n_boot=5),
                 lambda: M.layer_curve(ro), lambda: M.saturation_layer(ro), lambda: M.kl_settle_layer(ro)):
        with pytest.raises(ValueError, match="0 tokens"):
            call()


# ---------------------------------------------------------------------------
# bootstrap and curves
# ---------------------------------------------------------------------------
def test_bootstrap_deterministic_and_contains_estimate():
    ro = synthetic_readout(n_docs=15, tokens_per_doc=10, n_layers=6, seed=3)
    a = M.bootstrap_eas(ro, n_boot=150, seed=7)
    b = M.bootstrap_eas(ro, n_boot=150, seed=7)
    c = M.bootstrap_eas(ro, n_boot=150, seed=8)
    assert a.value == M.eas(ro).value
    assert np.array_equal(a.samples, b.samples) and (a.lo, a.hi) == (b.lo, b.hi)
    assert not np.array_equal(a.samples, c.samples)
    assert a.lo <= a.value <= a.hi and a.lo < a.hi
    assert a.normalised_lo <= a.normalised <= a.normalised_hi
    for col in ("S_lo", "S_hi", "A_lo", "A_hi"):
        assert col in a.curve
    assert np.all(a.curve["S_lo"] <= a.curve["S"] + 1e-12) and np.all(a.curve["S"] <= a.curve["S_hi"] + 1e-12)


@pytest.mark.parametrize("aggregate", ["power_of_mean", "mean_of_power"])
def test_bootstrap_replicates_equal_reselected_documents(aggregate):
    ro = synthetic_readout(n_docs=6, tokens_per_doc=5, n_layers=4, seed=1)
    boot = M.bootstrap_eas(ro, n_boot=5, seed=11, aggregate=aggregate, alpha=0.3, similarity="kl")
    docs = np.unique(ro.doc)
    for b, draw in enumerate(draw_docs(11, len(docs), 5)):
        ref = M.eas(ro.select_docs(docs[draw]), aggregate=aggregate, alpha=0.3, similarity="kl").value
        assert boot.samples[b] == pytest.approx(ref, abs=1e-12)


def test_bootstrap_options_and_single_doc():
    ro = synthetic_readout(n_docs=1, tokens_per_doc=8, n_layers=3)
    with pytest.warns(RuntimeWarning, match="single document"):
        r = M.bootstrap_eas(ro, n_boot=10)
    assert r.lo == pytest.approx(r.value) and r.hi == pytest.approx(r.value)
    with pytest.raises(TypeError, match="unknown EAS option"):
        M.bootstrap_eas(ro, n_boot=10, alpah=0.5)
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_eas(ro, n_boot=0)
    with pytest.raises(ValueError, match="ci"):
        M.bootstrap_eas(ro, ci=1.0)


def test_layer_curve_frame():
    ro = _two_layer_toy()
    f = M.layer_curve(ro)
    assert f["layer"].tolist() == [0, 1, 2]
    assert f["S"].tolist() == [0.0, 0.75, 1.0]
    assert f["rel_depth"].tolist() == [0.0, 0.5, 1.0]
    assert f["S_lo"].isna().all()
    syn = synthetic_readout(n_docs=8, tokens_per_doc=5, n_layers=4)
    g = M.layer_curve(syn, similarity="top1", n_boot=50)
    assert (g["S_lo"] <= g["S"] + 1e-12).all() and (g["S"] <= g["S_hi"] + 1e-12).all()
    assert g["S"].iloc[-1] == 1.0 and g["similarity"].iloc[0] == "top1"


# ---------------------------------------------------------------------------
# sensitivity and rank stability
# ---------------------------------------------------------------------------
def test_kendall_tau_by_hand():
    assert M.kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert M.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    # one swapped pair out of 6: (5 - 1) / 6
    assert M.kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # tau-b with a tie in x: pairs 3, ties_x 1, concordant 2, discordant 0 -> 2 / sqrt(2 * 3)
    assert M.kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(M.kendall_tau([1], [1]))


def test_sensitivity_and_rank_stability():
    readouts = {
        "shallow_good": synthetic_readout(n_layers=4, slope=0.3, seed=1, n_docs=4, tokens_per_doc=5),
        "deep_bad": synthetic_readout(n_layers=8, slope=3.0, seed=2, n_docs=4, tokens_per_doc=5),
        "mid": synthetic_readout(n_layers=6, slope=1.0, seed=3, n_docs=4, tokens_per_doc=5),
    }
    f = M.sensitivity(readouts, alphas=(0.25, 0.5), similarities=("logit_cos", "top1"))
    assert len(f) == 3 * 2 * 2
    for col in ("model", "alpha", "similarity", "eas", "normalised", "rank", "ceiling"):
        assert col in f
    one = f[(f.alpha == 0.5) & (f.similarity == "logit_cos")].set_index("model")
    assert one.loc["shallow_good", "eas"] == pytest.approx(M.eas(readouts["shallow_good"]).value)
    assert sorted(one["rank"]) == [1, 2, 3]
    assert one["rank"].idxmin() == one["normalised"].idxmax()
    st = M.rank_stability(f)
    assert len(st) == 4
    ref = st[(st.alpha == 0.5) & (st.similarity == "logit_cos")].iloc[0]
    assert ref["kendall_tau"] == 1.0 and ref["same_top"]
    assert st["kendall_tau"].between(-1, 1).all()
    with pytest.raises(ValueError, match="reference"):
        M.rank_stability(f, reference={"alpha": 0.9})
    with pytest.raises(ValueError, match="rank_by"):
        M.sensitivity(readouts, rank_by="value")


def _flat_readout(n_layers, S, model):
    """Every token has logit cosine S with the final layer at every layer 0..L-1 (1 at L)."""
    cos = np.full((4, n_layers + 1), S)
    cos[:, -1] = 1.0
    return make_readout(np.ones((4, n_layers + 1), dtype=int), logit_cos=cos, model=model)


def test_sensitivity_sweeps_every_choice():
    readouts = {"a": _flat_readout(2, 1.0, "a"), "b": _flat_readout(8, 0.9, "b")}
    f = M.sensitivity(readouts, alphas=(0.5,), similarities=("logit_cos", "topk_overlap"),
                      aggregates=("power_of_mean", "mean_of_power"), include_embedding=(False, True),
                      index_base=(1, 0), k=(1, None))
    # layouts: (False, 1), (False, 0), (True, 1); similarities: logit_cos + topk_overlap at K = 1 and 3
    assert len(f) == 2 * 3 * 2 * 3
    assert set(f.k) == {0, 1, 3} and (f[f.similarity == "logit_cos"].k == 0).all()
    assert not ((f.include_embedding) & (f.index_base == 0)).any()
    one = f[(f.similarity == "logit_cos") & (f["aggregate"] == "power_of_mean") & ~f.include_embedding
            & (f.index_base == 1)].set_index("model")
    # by hand: a = ceiling(2) (S = 1); b = sqrt(0.9) at layers 1..7 and 1 * w = 0 at layer 8
    assert one.loc["a", "eas"] == pytest.approx(M.eas_ceiling(2)) and one.loc["a", "normalised"] == pytest.approx(1)
    assert one.loc["b", "eas"] == pytest.approx(math.sqrt(0.9) * M.eas_ceiling(8))
    # raw EAS ranks the deep model first, the normalised score the shallow one
    assert one.loc["b", "rank_eas"] == 1 and one.loc["a", "rank_normalised"] == 1
    emb = f[(f.similarity == "logit_cos") & (f["aggregate"] == "power_of_mean") & f.include_embedding].set_index("model")
    # the embedding layer counts with w_0 = 1: b gains sqrt(0.9) * 1 in a mean over L + 1 = 9 terms
    assert emb.loc["b", "eas"] == pytest.approx(math.sqrt(0.9) * (1 + 8 * M.eas_ceiling(8)) / 9)
    zero = f[(f.similarity == "logit_cos") & (f["aggregate"] == "power_of_mean") & (f.index_base == 0)].set_index("model")
    # 0-based: w = (L - b + 1) / L for blocks b = 1..L; a: sqrt(1) + sqrt(1/2) over 2 terms
    assert zero.loc["a", "eas"] == pytest.approx((1 + math.sqrt(0.5)) / 2)


def test_choice_stability_finds_the_score_flip_and_covers_every_choice():
    readouts = {"a": _flat_readout(2, 1.0, "a"), "b": _flat_readout(8, 0.9, "b"), "c": _flat_readout(4, 0.5, "c")}
    f = M.sensitivity(readouts, alphas=(0.25, 0.5, 0.75), similarities=("logit_cos", "top1", "topk_overlap"),
                      aggregates=("power_of_mean", "mean_of_power"), include_embedding=(False, True),
                      index_base=(1, 0), k=(1, None))
    ch = M.choice_stability(f)
    assert set(ch.choice) == set(M.CHOICES)
    score = ch[ch.choice == "score"].set_index("value")
    assert score.loc["normalised", "kendall_tau"] == 1.0
    # normalised: a (1) > b (0.95) > c (0.71); raw EAS puts the shallow a last
    raw = f[(f.alpha == 0.5) & (f.similarity == "logit_cos") & (f["aggregate"] == "power_of_mean")
            & ~f.include_embedding & (f.index_base == 1)].set_index("model")
    expected = M.kendall_tau(raw.rank_eas[["a", "b", "c"]], raw.rank_normalised[["a", "b", "c"]])
    assert score.loc["eas", "kendall_tau"] == pytest.approx(expected) and expected < 1
    assert not score.loc["eas", "same_top"]
    ref_rows = ch[(ch.choice == "alpha") & (ch.value == "0.5")]
    assert ref_rows.kendall_tau.tolist() == [1.0]
    summ = M.stability_summary(ch).set_index("choice")
    assert summ.loc["score", "n_reordered"] == 1 and summ.loc["score", "top_changes"] == 1
    assert summ.loc["score", "min_tau"] == pytest.approx(expected)
    assert summ.loc["k", "n_values"] == 2


def test_stability_summary_by_hand():
    ch = pd.DataFrame({"choice": ["alpha", "alpha", "alpha", "k"], "value": ["0.25", "0.5", "0.75", "3"],
                       "kendall_tau": [0.2, 1.0, -1 / 3, 1.0], "same_top": [False, True, True, True],
                       "top_model": ["x", "y", "y", "y"], "n_models": [3, 3, 3, 3]})
    s = M.stability_summary(ch).set_index("choice")
    assert s.loc["alpha"].tolist() == [3, pytest.approx(-1 / 3), 2, 1]
    assert s.loc["k"].tolist() == [1, 1.0, 0, 0]


# ---------------------------------------------------------------------------
# effective-depth markers
# ---------------------------------------------------------------------------
def test_kl_settle_layer_mean_and_per_token():
    # L = 4. token means per layer: 2.0, 0.05, 0.3, 0.01, 0 -> below 0.1 from layer 3 on (layer 1 dips, then rises)
    kl = [[2.0, 0.0, 0.5, 0.02, 0.0],
          [2.0, 0.1, 0.1, 0.0, 0.0]]
    ro = make_readout([[1] * 5, [2] * 5], kl_to_final=kl)
    assert M.kl_settle_layer(ro, threshold=0.1) == 3
    # per token: token 0 settles at 3 (layer 2 is 0.5); token 1: 0.1 is not < 0.1, settles at 3
    assert M.kl_settle_layer(ro, threshold=0.1, per_token=True).tolist() == [3, 3]
    assert M.kl_settle_layer(ro, threshold=0.11, per_token=True).tolist() == [3, 1]
    assert M.kl_settle_layer(ro, threshold=0.0) == 4  # only the final layer
    assert M.kl_settle_layer(ro, threshold=5.0) == 1  # min_layer 1
    assert M.kl_settle_layer(ro, threshold=5.0, min_layer=0) == 0
    with pytest.raises(ValueError, match="threshold"):
        M.kl_settle_layer(ro, threshold=-1)
    # generic form: top-k overlap rising above a threshold
    ov = [[0.0, 0.9, 0.5, 1.0, 1.0], [0.0, 0.0, 0.8, 0.9, 1.0]]
    ro2 = make_readout([[1] * 5, [2] * 5], topk_overlap=ov)
    assert M.settle_layer(ro2, "topk_overlap", 0.8, below=False, per_token=True).tolist() == [3, 2]


def test_saturation_layer_by_hand():
    top1 = [[5, 7, 7, 7],  # settles at 1
            [7, 5, 7, 7],  # at 2
            [7, 7, 7, 5],  # final differs from all: only 3
            [7, 7, 7, 7]]  # everywhere: 1 (0 with min_layer=0)
    ro = make_readout(top1)
    assert M.saturation_layer(ro).tolist() == [1, 2, 3, 1]
    assert M.saturation_layer(ro, min_layer=0).tolist() == [1, 2, 3, 0]
    s = M.saturation_summary(ro)
    assert s["mean"] == pytest.approx(7 / 4) and s["median"] == 1.5
    assert s["mean_rel"] == pytest.approx(7 / 12) and s["frac_at_final"] == 0.25
    with pytest.raises(ValueError, match="min_layer"):
        M.saturation_layer(ro, min_layer=4)


def test_reported_eas_table():
    f = M.reported_eas()
    assert list(f.columns) == ["model", "family", "eas", "generation", "notes", "source"]
    assert len(f) == 6
    vals = dict(zip(f.model, f.eas))
    assert vals["Llama2-7B"] == 0.52 and vals["Qwen2-7B"] == 0.36 and vals["GPT-OSS-20B"] == 0.59
    assert (f.source.str.startswith("reported, secondary source")).all()
    assert set(f.family) == {"dense", "MoE"}
    with pytest.raises(FileNotFoundError):
        M.reported_eas("/nonexistent/table.csv")
