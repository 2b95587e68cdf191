"""eeutils.decoding.evaluation: realised vs simulated early-exit decoding in one tidy frame (tiny random-init models)."""
import numpy as np
import pandas as pd
import pytest
import torch

import eeutils
from eeutils.decoding import evaluation as de
from eeutils.exits import ExitRule
from eeutils.workloads import workload_from_pairs, workload_from_texts

import tiny_models as tm

torch.set_num_threads(1)
_MODELS: dict = {}


def lm_for(model_type):
    if model_type not in _MODELS:
        _MODELS[model_type] = eeutils.wrap_model(tm.make_model(model_type), name=f"tiny/{model_type}")
    return _MODELS[model_type]


def prompts(n=2, length=6):
    g = torch.Generator().manual_seed(3)
    return [torch.randint(3, tm.VOCAB, (length,), generator=g).tolist() for _ in range(n)]


NEVER = "margin:1.0"  # a checked rule that cannot fire on these models: pure check cost


@pytest.fixture(scope="module", params=["llama", "qwen3_moe", "mamba2"])
def frame(request):
    lm = lm_for(request.param)
    f = de.compare_decoding(lm, prompts(), ["static:50%", NEVER, "max_prob:0.05"], max_new_tokens=4, repeats=1,
                            workload="random")
    return lm, f


def test_columns_and_rows(frame):
    lm, f = frame
    assert list(f.columns) == de.COLUMNS
    assert len(f) == 1 + 3 * 2  # the full baseline + rules x strategies
    assert set(f.strategy) == {"driver", "propagate", "defer"}
    assert f.groupby(["rule", "strategy"]).size().max() == 1
    assert (f.model == lm.name).all() and (f.workload == "random").all() and (f.n_layers == lm.n_layers).all()
    assert (f.n_tokens == 2 * 4).all()


def test_ratios_positive_and_bounded(frame):
    _, f = frame
    for col in ("tokens_per_s", "speed_ratio", "driver_vs_generate", "decode_seconds", "head_cost_blocks",
                "potential_speedup", "exit_speedup", "repair_speedup", "flop_speedup", "compute_ratio"):
        assert (f[col] > 0).all() and np.isfinite(f[col]).all(), col
    for col in ("skip_ratio", "sim_skip_ratio", "sim_agreement", "oracle_skip_ratio", "agreement"):
        assert f[col].between(0, 1).all(), col
    full = f[f.rule == "full"].iloc[0]
    assert full.speed_ratio == 1.0 and full.agreement == 1.0 and full.skip_ratio == 0.0
    assert full.flop_speedup == pytest.approx(1.0) and full.lens_calls_per_token == 1.0


def test_never_exit_rule(frame):
    lm, f = frame
    never = f[f.rule == ExitRule("margin", 1.0).label]
    assert len(never) == 2
    assert (never.agreement == 1.0).all() and (never.skip_ratio == 0.0).all()
    assert (never.sim_skip_ratio == 0.0).all() and (never.sim_agreement == 1.0).all()
    assert (never.compute_ratio == 1.0).all() and (never.mean_exit_layer == lm.n_layers).all()
    # it reads out every layer: the checks alone make it cost more than full decoding (FLOP model)
    assert (never.lens_calls_per_token == lm.n_layers).all() and (never.flop_speedup < 1).all()


def test_static_rule_matches_simulation(frame):
    lm, f = frame
    L = lm.n_layers
    layer = max(1, min(L, round(L / 2)))
    st = f[f.kind == "static"]
    assert (st.mean_exit_layer == layer).all()
    assert np.allclose(st.skip_ratio, (L - layer) / L) and np.allclose(st.sim_skip_ratio, (L - layer) / L)
    assert np.allclose(st.potential_speedup, L / layer)
    # defer leaves the skipped blocks owed; propagate writes K/V (attention) or runs the mixer (SSM)
    d = st[st.strategy == "defer"].iloc[0]
    p = st[st.strategy == "propagate"].iloc[0]
    assert d.layers_per_token == layer and d.owed_per_token > 0
    if lm.family == "ssm":
        assert p.layers_per_token == L and p.kv_writes_per_token == 0
    else:
        assert p.kv_writes_per_token == L - layer and p.repair_speedup < p.exit_speedup


def test_accuracy_and_pairs():
    lm = lm_for("llama")
    ps = prompts()
    from eeutils.decoding import generate_full
    conts = [generate_full(lm, p, 3, stop_at_eos=False).tokens for p in ps]
    answers = [conts[0][:2], [int(conts[1][0] + 1) % tm.VOCAB]]  # right, wrong
    f = de.compare_decoding(lm, list(zip(ps, answers)), [NEVER], strategies="defer", max_new_tokens=3, repeats=1,
                            hf_baseline=False, include_full=True)
    assert list(f.strategy) == ["driver", "defer"]
    assert (f.accuracy == 0.5).all()
    assert f.driver_vs_generate.isna().all()
    assert np.isnan(de.compare_decoding(lm, ps[:1], [NEVER], strategies=["propagate"], max_new_tokens=2,
                                        repeats=1, hf_baseline=False).accuracy).all()


def test_parse_rules():
    rules = de.parse_rules("static:50%, max_prob:0.9,entropy:1", 6)
    assert [r.label for r in rules] == ["static@3", "max_prob>=0.9", "entropy<=1"]
    assert de.parse_rules([ExitRule("margin", 0.5), ("static", 2), "hidden_saturation:0.99"], 4)[1].threshold == 2
    assert de.parse_rules("static:1%", 6)[0].threshold == 1  # at least one block
    # one parser: its default is given by the caller (compare_decoding passes DEFAULT_RULES)
    assert [r.label for r in de.parse_rules(None, 6, default=de.DEFAULT_RULES)] == \
        [r.label for r in de.parse_rules(de.DEFAULT_RULES, 6)]
    with pytest.raises(ValueError, match="no exit rules"):
        de.parse_rules(None, 6)
    with pytest.raises(ValueError, match="kind:threshold"):
        de.parse_rules("max_prob", 6)
    with pytest.raises(ValueError, match="not a number"):
        de.parse_rules("max_prob:high", 6)
    with pytest.raises(ValueError, match="duplicate"):
        de.parse_rules("static:50%,static:3", 6)
    with pytest.raises(ValueError, match="1..6"):
        de.parse_rules("static:7", 6)


def test_bad_arguments():
    lm = lm_for("llama")
    with pytest.raises(ValueError, match="strateg"):
        de.compare_decoding(lm, prompts(1), [NEVER], strategies=("skip",), max_new_tokens=2, repeats=1)
    with pytest.raises(ValueError, match="repeats"):
        de.compare_decoding(lm, prompts(1), [NEVER], max_new_tokens=2, repeats=0)
    with pytest.raises(ValueError, match="answers"):
        de.compare_decoding(lm, prompts(2), [NEVER], max_new_tokens=2, repeats=1, answers=[None])
    with pytest.raises(ValueError, match="no prompts"):
        de.compare_decoding(lm, [], [NEVER], max_new_tokens=2, repeats=1)


def test_workload_prompts():
    lm = lm_for("llama")  # no tokenizer: text is encoded byte by byte
    qa = workload_from_pairs([("What is the answer to the long question, please?", " 42"), ("Q: 1+1?", " 2")],
                             "tiny-qa")
    pairs = de.workload_prompts(lm, qa, n_prompts=None, prompt_tokens=10)
    assert len(pairs) == 2
    (p0, a0), (p1, a1) = pairs
    assert p0 == de.encode_text(lm, "What is the answer to the long question, please?")[-10:]
    assert a0 == de.encode_text(lm, " 42", special=False) and len(p1) == len("Q: 1+1?")
    lm_wl = workload_from_texts(["In the beginning God created the heaven and the earth."], "tiny-lm")
    (p, a), = de.workload_prompts(lm, lm_wl, prompt_tokens=5)
    assert a is None and p == de.encode_text(lm, "In the")[:5]
    # the context (64 positions) leaves room for the new tokens
    (p, _), = de.workload_prompts(lm, lm_wl, prompt_tokens=1000, max_new_tokens=60)
    assert len(p) + 60 - 1 <= lm.max_length
    with pytest.raises(ValueError, match="prompt_tokens"):
        de.workload_prompts(lm, lm_wl, prompt_tokens=0)


def test_cost_profile():
    lm = lm_for("llama")
    c = de.cost_profile(lm)
    d = lm.config.hidden_size
    assert c["head_macs"] == d * tm.VOCAB
    assert 0 < c["kv_cost_blocks"] < 1 and c["head_cost_blocks"] == pytest.approx(c["head_macs"] / c["block_macs"])
    moe = de.cost_profile(lm_for("qwen3_moe"))
    total_block = sum(p.numel() for p in lm_for("qwen3_moe").blocks[0].parameters())
    assert moe["block_macs"] < total_block  # routed experts count top_k / n_experts
    assert de.cost_profile(lm_for("mamba2"))["kv_cost_blocks"] == 0


def test_frame_is_tidy_for_concat(frame):
    _, f = frame
    both = pd.concat([f, f.assign(model="other")], ignore_index=True)
    assert both.groupby(["model", "rule", "strategy"]).size().max() == 1


def test_batched_skip_ratio():
    e = np.array([1, 1, 1, 4] * 10)
    f = de.batched_skip_ratio(e, 4, batch_sizes=(1, 2, 8, 64), n_draws=200)
    assert list(f.batch_size) == [1, 2, 8]  # larger than the pool: left out
    assert f.skip_ratio.iloc[0] == pytest.approx(np.mean((4 - e) / 4))
    assert f.skip_ratio.is_monotonic_decreasing and f.skip_ratio.between(0, 1).all()
    assert (f.lo <= f.skip_ratio).all() and (f.skip_ratio <= f.hi).all()
    # a batch of 2 skips 3/4 only when neither token is the deep one
    p = (30 / 40) * (29 / 39)
    assert f.skip_ratio.iloc[1] == pytest.approx(0.75 * p, abs=0.06)
    assert de.batched_skip_ratio(np.full(10, 4), 4).skip_ratio.eq(0).all()
    with pytest.raises(ValueError, match="0..4"):
        de.batched_skip_ratio([5], 4)


def test_timed_rounds_rotate_the_order_and_take_medians():
    from types import SimpleNamespace
    from eeutils.decoding.timing import timed_rounds
    calls = []

    def decoder(name, seconds):
        def decode(prompt):
            calls.append(name)
            return SimpleNamespace(n_tokens=2, decode_seconds=seconds, tokens=[1, 2])
        return decode

    rounds = timed_rounds([decoder("a", 1.0), decoder("b", 0.5), decoder("c", 2.0)], [[5]], 3)
    assert calls == list("abc") + list("bca") + list("cab")  # each round starts one decoder later
    assert rounds.speed_ratio(1) == 2.0 and rounds.speed_ratio(2) == 0.5 and rounds.speed_ratio(0) == 1.0
    assert rounds.tokens_per_s(2) == 1.0 and rounds.median_seconds(1) == 0.5 and rounds.n_tokens(0) == 2


def test_settings_object_and_keywords_agree():
    s = de.DecodeSettings(strategies="defer", max_new_tokens=np.int64(3), repeats=1)
    assert s.strategies == ("defer",) and s.max_new_tokens == 3 and type(s.max_new_tokens) is int
    with pytest.raises(ValueError, match="repeats"):
        de.DecodeSettings(repeats=0)
    with pytest.raises(TypeError):
        de.compare_decoding(lm_for("llama"), prompts(1), [NEVER], max_new_tokens=2, repeats=1, no_such_setting=1)
