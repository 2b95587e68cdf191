"""Cheap exit checks (eeutils.decoding.checks): checked-layer subsets, hidden-state saturation without the head,
the candidate-set head verified by the full head, and their cost accounting."""
import numpy as np
import pytest
import torch

import eeutils
from eeutils.analysis.rule_parse import as_rule
from eeutils.analysis.rules import CHECK_KINDS, ExitRule, rule_fires
from eeutils.decoding import generate_early_exit
from eeutils.decoding.checks import CheckCosts
from eeutils.decoding.costs import DecoderShape, modelled_speedup, shape_cost
from eeutils.exits import simulate

import tiny_models as tm

torch.set_num_threads(1)
_MODELS: dict = {}


def lm_for(model_type):
    if model_type not in _MODELS:
        _MODELS[model_type] = eeutils.wrap_model(tm.make_model(model_type))
    return _MODELS[model_type]


def zoo(name):
    if name not in eeutils.list_zoo():
        pytest.skip(f"zoo/{name} is not built")
    if name not in _MODELS:
        _MODELS[name] = eeutils.load_model(f"zoo/{name}")
    return _MODELS[name]


def prompt(seed=1, n=7, vocab=tm.VOCAB):
    return torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def hf_greedy(lm, ids, n):
    out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            do_sample=False, max_new_tokens=n, pad_token_id=0)
    return out[0, len(ids):].tolist()


# ---------------------------------------------------------------------------------------------------
# rules: parsing, subsets
# ---------------------------------------------------------------------------------------------------
def test_rule_options_parse_into_fields_and_back():
    r = as_rule("max_prob:0.9/every=2/cand=16/min=2", 6)
    assert (r.kind, r.threshold, r.min_layer, r.every, r.candidates) == ("max_prob", 0.9, 2, 2, 16)
    assert r.check == "candidates" and r.checked_layers(6) == [2, 4]
    assert as_rule("margin:0.5/layers=4+2", 6).checked_layers(6) == [2, 4]
    assert as_rule("hidden_saturation:0.9", 6).check == "state" and as_rule("static:3", 6).check == "none"
    assert as_rule("entropy:1.0", 6).check == "full"
    assert "/every=2" in r.label and "/cand=16" in r.label
    for bad in ("max_prob:0.9/every=0", "max_prob:0.9/nope=1", "max_prob:0.9/every=", "consecutive:2/cand=4",
                "hidden_saturation:0.9/cand=8", "max_prob:0.9/layers=0+1", "max_prob:0.9/cand=-1"):
        with pytest.raises(ValueError):
            as_rule(bad, 6)
    with pytest.raises(ValueError, match="1..6"):
        as_rule("max_prob:0.9/layers=2+7", 6)


def test_rule_fires_only_at_checked_layers():
    r = ExitRule("max_prob", 0.5, every=2, min_layer=2)
    fired = [bool(rule_fires(r, {"max_prob": 0.9}, j, 6)[0]) for j in range(7)]
    assert fired == [False, False, True, False, True, False, True]


def test_check_kinds_cost_table():
    assert CHECK_KINDS["state"].macs(640, 262144, 16) == 3 * 640
    assert CHECK_KINDS["candidates"].macs(640, 262144, 16) == 16 * 640
    assert CHECK_KINDS["full"].macs(640, 262144, 16) == 640 * 262144
    costs = CheckCosts(d=10, vocab=100)
    costs.add("state")
    costs.add("candidates", 7)
    costs.add("candidates", 3)
    assert costs.check_macs == {"state": 30, "candidates": 100}


# ---------------------------------------------------------------------------------------------------
# cost model on hand numbers
# ---------------------------------------------------------------------------------------------------
def test_shape_cost_hand_numbers():
    # SmolLM2-135M: q = o = 576*576, k = v = 576*3*64, MLP 3*576*1536; head 576*49152
    c = shape_cost(DecoderShape(30, 576, 49152, 1536, 9, 3))
    block = 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536
    assert c["block_macs"] == block == 3_538_944
    assert c["head_cost_blocks"] == pytest.approx(28_311_552 / 3_538_944) == pytest.approx(8.0)
    assert c["full_model_blocks"] == pytest.approx(38.0)
    assert c["candidates_check_blocks"] == pytest.approx(16 * 576 / block)
    # Gemma-3-270M: 4 heads x 256, 1 kv head; head 640 x 262144
    g = shape_cost(DecoderShape(18, 640, 262144, 2048, 4, 1, head_dim=256))
    assert g["block_macs"] == 2 * 640 * 1024 + 2 * 640 * 256 + 3 * 640 * 2048 == 5_570_560
    assert g["head_cost_blocks"] == pytest.approx(167_772_160 / 5_570_560)
    assert g["state_check_blocks"] == pytest.approx(3 * 640 / 5_570_560)


def test_modelled_speedup_hand_numbers():
    m = modelled_speedup(6, 1.3, 0.25, blocks=4.0, kv_writes=2.0, check_blocks=0.1, lens_calls=2.0)
    assert m["model_cost"] == pytest.approx(4 + 0.5 + 0.1 + 2.6)
    assert m["flop_speedup"] == pytest.approx(7.3 / 7.2)
    assert m["check_cost_share"] == pytest.approx((0.1 + 1.3) / 7.2)
    full = modelled_speedup(6, 1.3, 0.25, blocks=6.0)
    assert full["flop_speedup"] == pytest.approx(1.0) and full["check_cost_share"] == 0.0


def test_decoder_counts_state_checks_on_hand_numbers():
    lm = lm_for("llama")
    L, d = lm.n_layers, lm.head.weight.shape[1]
    rule = ExitRule("hidden_saturation", 1.0, every=2)  # cannot fire: pure check cost
    n = 5
    res = generate_early_exit(lm, prompt(), rule, max_new_tokens=n, stop_at_eos=False)
    checked = len(rule.checked_layers(L))
    assert res.check_macs == {"state": n * checked * 3 * d}
    assert res.lens_calls == n  # the prediction only
    assert res.host_syncs == n * (checked + 1) and res.verify_calls == 0


def test_decoder_counts_candidate_checks():
    lm = lm_for("llama")
    L, d, K = lm.n_layers, lm.head.weight.shape[1], 4
    rule = ExitRule("margin", 1.0, candidates=K)  # cannot fire
    n = 4
    res = generate_early_exit(lm, prompt(2), rule, max_new_tokens=n, stop_at_eos=False)
    checks = n * (L - 1) - 1  # the first check of the first token is a full readout (no carried set yet)
    assert K * d * checks <= res.check_macs["candidates"] <= 2 * K * d * checks
    assert res.verify_calls >= 1 and res.lens_calls == n + res.verify_calls
    assert res.failed_verifies == res.verify_calls  # nothing exits: every verification refutes


# ---------------------------------------------------------------------------------------------------
# never exiting == greedy decoding, for every tiny family
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", sorted(tm.CONFIGS))
def test_cheap_checks_never_exit_equal_greedy(model_type):
    lm = lm_for(model_type)
    ids = prompt(3, 5)
    ref = hf_greedy(lm, ids, 6)
    for rule in (ExitRule("margin", 1.0, candidates=8, every=2), ExitRule("hidden_saturation", 1.0, every=2),
                 ExitRule("max_prob", 1.0, layers=(1,))):
        res = generate_early_exit(lm, ids, rule, max_new_tokens=6, strategy="propagate")
        assert res.tokens == ref, (model_type, rule.label)
        assert (res.exit_layers == lm.n_layers).all()


# ---------------------------------------------------------------------------------------------------
# subsets are respected, simulator and decoder agree on them
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["llama", "mamba2"])
def test_subset_exits_match_simulation(model_type):
    lm = lm_for(model_type)
    ids = prompt(5)
    L = lm.n_layers
    for rule in (ExitRule("consecutive", 1, layers=(1, 3)), ExitRule("static", 2, every=3),
                 ExitRule("hidden_saturation", 0.0, min_layer=2, every=2), ExitRule("max_prob", 0.0, layers=(3,))):
        res = generate_early_exit(lm, ids, rule, max_new_tokens=8, strategy="defer", stop_at_eos=False)
        allowed = set(rule.checked_layers(L)) | {L}
        assert set(res.exit_layers.tolist()) <= allowed, rule.label
        for rec in res.trace:
            assert set(rec["stats"]) <= set(rule.checked_layers(L)), rule.label
        seq = ids + res.tokens
        ro = eeutils.readout(lm, [seq], progress=False, k=2)
        pos = np.arange(len(ids) - 1, len(seq) - 1)
        assert (simulate(ro, rule)[pos] == res.exit_layers).all(), rule.label


# ---------------------------------------------------------------------------------------------------
# the candidate-set check on the zoo: every exit is the full rule's, with the full rule's token
# ---------------------------------------------------------------------------------------------------
ZOO = ["dense-mid", "moe-mid", "ssm-mid"]


@pytest.mark.parametrize("name", ZOO)
def test_candidate_check_only_takes_full_rule_exits(name):
    lm = zoo(name)
    L = lm.n_layers
    ids = lm.encode("Once upon a time there was a little")
    exited = 0
    for full_rule in (ExitRule("margin", 0.2), ExitRule("max_prob", 0.4)):
        cand = ExitRule(full_rule.kind, full_rule.threshold, candidates=8)
        res = generate_early_exit(lm, ids, cand, max_new_tokens=12, strategy="defer", stop_at_eos=False)
        seq = ids + res.tokens
        ro = eeutils.readout(lm, [seq], progress=False, k=2)
        pos = np.arange(len(ids) - 1, len(seq) - 1)
        e = res.exit_layers
        # the token is the full head's top-1 at the exit layer, and the full rule fires there
        assert (ro["top1"][pos, e] == np.array(res.tokens)).all()
        stats = {s: ro[s][pos, e] for s in full_rule.required_stats}
        fires = np.array([rule_fires(full_rule, {k: v[i] for k, v in stats.items()}, int(e[i]), L)[0]
                          for i in range(len(pos))])
        assert fires[e < L].all()
        # never earlier than the full rule (exits later only where the top-1 was outside the carried set)
        assert (e >= simulate(ro, full_rule)[pos]).all()
        assert res.verify_calls >= int((e < L).sum())
        exited += int((e < L).sum())
    assert exited > 0  # some exits happened, so the checks above could fail


@pytest.mark.parametrize("name", ZOO[:1])
def test_candidate_check_with_whole_vocabulary_equals_full_rule(name):
    """With every token a candidate, the optimistic statistics are exact: same exits, same tokens."""
    lm = zoo(name)
    ids = lm.encode("Once upon a time there was a little")
    full = generate_early_exit(lm, ids, ExitRule("margin", 0.2), max_new_tokens=12, strategy="propagate",
                               stop_at_eos=False)
    cand = generate_early_exit(lm, ids, ExitRule("margin", 0.2, candidates=lm.vocab_size), max_new_tokens=12,
                               strategy="propagate", stop_at_eos=False)
    assert cand.tokens == full.tokens and (cand.exit_layers == full.exit_layers).all()
    assert (full.exit_layers < lm.n_layers).any()  # the rule does exit here, so the test can fail
    assert cand.failed_verifies <= 1  # only the first token's seeding readout can refute (it has no carried set)


# ---------------------------------------------------------------------------------------------------
# notebook 11's equal-agreement table
# ---------------------------------------------------------------------------------------------------
def test_equal_agreement_table_hand_numbers():
    import pandas as pd
    from eeutils.decoding.summary import equal_agreement
    from eeutils.notebook.decoding import decoding_summary
    base = dict(label="m", family="dense", n_layers=4, oracle_skip_ratio=0.5, head_cost_blocks=0.8,
                kv_cost_blocks=0.25, driver_vs_generate=1.0, sim_skip_ratio=0.3, sim_agreement=0.9, owed_per_token=0.0,
                flop_speedup=1.0, check_blocks_per_token=0.0, check_cost_share=0.0)
    rows = [dict(base, rule="full", kind="full", strategy="driver", check="none", speed_ratio=1.0, skip_ratio=0.0,
                 agreement=1.0, layers_per_token=4.0, kv_writes_per_token=0.0, lens_calls_per_token=1.0),
            dict(base, rule="max_prob>=0.9/cand=8", kind="max_prob", strategy="propagate", check="candidates",
                 speed_ratio=0.9, skip_ratio=0.25, agreement=1.0, layers_per_token=3.0, kv_writes_per_token=1.0,
                 lens_calls_per_token=1.5, check_blocks_per_token=0.1),
            dict(base, rule="margin>=0.5", kind="margin", strategy="defer", check="full", speed_ratio=1.2, flop_speedup=1.1,
                 skip_ratio=0.4, agreement=0.96, layers_per_token=2.4, kv_writes_per_token=1.6,
                 lens_calls_per_token=1.0),
            dict(base, rule="static@2", kind="static", strategy="propagate", check="none", speed_ratio=1.8, flop_speedup=1.5,
                 skip_ratio=0.5, agreement=0.4, layers_per_token=2.0, kv_writes_per_token=2.0,
                 lens_calls_per_token=1.0)]
    frame = pd.DataFrame(rows)
    t = equal_agreement(frame, levels=(1.0, 0.95, 0.3)).set_index("level")
    a = t.loc[1.0]
    assert a.rule == "max_prob>=0.9/cand=8" and not a.pays and a.oracle_speedup == pytest.approx(2.0)
    assert (a.blocks, a.repair, a.checks, a.prediction, a.full_blocks) == pytest.approx((3.0, 0.25, 0.5, 0.8, 4.8))
    b = t.loc[0.95]
    assert b.rule == "margin>=0.5" and b.pays and b.repair == pytest.approx(0.4) and b.checks == 0
    assert t.loc[0.3].rule == "static@2"
    assert equal_agreement(frame, levels=(0.95,), by="speed_ratio").rule.iloc[0] == "margin>=0.5"
    assert equal_agreement(frame.assign(agreement=0.5).assign(skip_ratio=0.0), levels=(1.0,)).rule.isna().all()
    md = decoding_summary(frame, None, never_label="static@2").markdown
    assert "**m** at ≥ 100% agreement: best max_prob>=0.9/cand=8 / propagate (candidates check) at 0.90×" in md
    assert "it does not pay" in md and "0.50 checks" in md
    # a level no configuration reaches, beside one that some configuration reaches, says so (no "best nan")
    md = decoding_summary(frame.assign(agreement=frame.agreement.clip(upper=0.99).where(frame.rule != "full", 1.0)),
                          None, never_label="static@2").markdown
    assert "**m** at ≥ 100% agreement: no configuration exits early" in md and "nan" not in md
    with pytest.raises(ValueError, match="lacks"):
        equal_agreement(frame.drop(columns="lens_calls_per_token"))
