"""Realised early-exit decoding on tiny random-init models: the layer-by-layer driver reproduces greedy
generation, exits agree with the readout, the cache is complete (propagate) or exact (defer)."""
import numpy as np
import pytest
import torch
from transformers import DynamicCache

import eeutils
from eeutils.decoding import (DecodingUnsupported, generate_early_exit, generate_full,
                              generate_self_speculative, supported_model_types)
from eeutils.exits import ExitRule, simulate

import tiny_models as tm

torch.set_num_threads(1)

CORE = ["llama", "olmoe", "qwen3_moe", "mamba2", "gpt2", "bamba"]
STRATEGIES = ["propagate", "defer"]
_MODELS: dict = {}


def lm_for(model_type):
    if model_type not in _MODELS:
        _MODELS[model_type] = eeutils.wrap_model(tm.make_model(model_type))
    return _MODELS[model_type]


def prompt(seed=1, n=7):
    return torch.randint(3, tm.VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def hf_greedy(lm, ids, n):
    out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            do_sample=False, max_new_tokens=n, pad_token_id=0)
    return out[0, len(ids):].tolist()


def full_cache(lm, seq):
    """The cache of one full forward over `seq` (what an exact early-exit cache must equal)."""
    cache = DynamicCache(config=lm.config)
    with torch.no_grad():
        lm.model(torch.tensor([seq]), cache=cache, use_cache=True)
    return cache


def layer_tensors(layer):
    keys = getattr(layer, "keys", None)
    if isinstance(keys, torch.Tensor):
        return [layer.keys, layer.values]
    return [layer.conv_states[0], layer.recurrent_states[0]]


# ---------------------------------------------------------------------------------------------------
# never exiting early == greedy decoding
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("model_type", CORE)
def test_never_exit_equals_greedy(model_type, strategy):
    lm = lm_for(model_type)
    ids = prompt()
    ref = hf_greedy(lm, ids, 10)
    L = lm.n_layers
    for rule in (None, ExitRule("static", L), ExitRule("margin", 1.0), ExitRule("hidden_saturation", 1.0)):
        res = generate_early_exit(lm, ids, rule, max_new_tokens=10, strategy=strategy)
        assert res.tokens == ref, (model_type, strategy, rule)
        assert (res.exit_layers == L).all()
        assert res.deferred_rows == res.kv_writes == res.state_rows == res.flush_rows == 0
        assert res.mean_layers_computed == L and res.compute_ratio == 1.0


@pytest.mark.parametrize("model_type", sorted(set(tm.CONFIGS) - set(CORE)))
def test_never_exit_equals_greedy_every_family(model_type):
    lm = lm_for(model_type)
    assert model_type in supported_model_types()
    ids = prompt(2, 5)
    ref = hf_greedy(lm, ids, 6)
    for strategy in STRATEGIES:
        assert generate_early_exit(lm, ids, ExitRule("margin", 1.0), max_new_tokens=6,
                                   strategy=strategy).tokens == ref


def test_generate_full_backends_agree():
    lm = lm_for("llama")
    ids = prompt(3)
    a = generate_full(lm, ids, 8)
    b = generate_full(lm, ids, 8, backend="hf")
    assert a.tokens == b.tokens == hf_greedy(lm, ids, 8)
    assert a.backend == "driver" and b.backend == "hf" and (a.exit_layers == lm.n_layers).all()


# ---------------------------------------------------------------------------------------------------
# exits agree with the readout
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["llama", "olmoe", "mamba2", "gpt2"])
def test_static_exit_first_token_matches_readout(model_type):
    lm = lm_for(model_type)
    ids = prompt(4, 9)
    r = eeutils.readout(lm, [ids], progress=False, k=3)
    for layer in range(1, lm.n_layers + 1):
        res = generate_early_exit(lm, ids, ExitRule("static", layer), max_new_tokens=1, strategy="propagate")
        assert res.exit_layers.tolist() == [layer]
        assert res.tokens[0] == int(r["top1"][len(ids) - 1, layer])


@pytest.mark.parametrize("model_type", ["llama", "qwen3_moe", "mamba2", "gpt2", "bamba", "jamba"])
def test_defer_is_exact_and_matches_simulation(model_type):
    """defer leaves the cache of a full forward over the realised tokens, so every generated token is that
    forward's readout at the token's exit layer, and exits equal exits.simulate on that readout."""
    lm = lm_for(model_type)
    ids = prompt(5)
    for rule in (ExitRule("consecutive", 1), ExitRule("static", 1), ExitRule("hidden_saturation", 0.5)):
        res = generate_early_exit(lm, ids, rule, max_new_tokens=10, strategy="defer", stop_at_eos=False)
        seq = ids + res.tokens
        ref = full_cache(lm, seq[:-1])
        for i in range(lm.n_layers):
            for got, want in zip(layer_tensors(res.cache.layers[i]), layer_tensors(ref.layers[i])):
                assert got.shape == want.shape
                assert torch.allclose(got, want, atol=1e-5), (model_type, rule.label, i)
        ro = eeutils.readout(lm, [seq], progress=False, k=3)
        pos = np.arange(len(ids) - 1, len(seq) - 1)
        assert (simulate(ro, rule)[pos] == res.exit_layers).all(), rule.label
        assert (ro["top1"][pos, res.exit_layers] == np.array(res.tokens)).all(), rule.label
        # every processed position went through every block exactly once
        n_pos = len(seq) - 1 - (len(ids) - 1)
        assert res.layers_run + res.deferred_rows + res.flush_rows == n_pos * lm.n_layers
        assert res.owed_rows == res.flush_rows


def test_propagate_writes_kv_of_the_copied_state():
    """After an exit at layer 1, the skipped blocks' K/V at that position are their projections of h^1."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    lm = lm_for("llama")
    ids = prompt(6)
    res = generate_early_exit(lm, ids, ExitRule("static", 1), max_new_tokens=5, strategy="propagate",
                              stop_at_eos=False)
    seq = ids + res.tokens
    L = lm.n_layers
    assert res.kv_writes == 5 * (L - 1) and res.layers_run == 5
    assert res.layers_run + res.kv_writes + res.state_rows == 5 * L
    with torch.no_grad():
        hs = lm.model(torch.tensor([seq[:-1]]), output_hidden_states=True).hidden_states
    ref = full_cache(lm, seq[:-1])
    # block 1 saw exact inputs everywhere: its cache is exact
    assert torch.allclose(res.cache.layers[0].keys, ref.layers[0].keys, atol=1e-5)
    inner = lm.model.model
    pos = torch.arange(len(seq) - 1)[None]
    cos, sin = inner.rotary_emb(hs[1], pos)
    for i in range(1, L):
        attn, norm = lm.blocks[i].self_attn, lm.blocks[i].input_layernorm
        x = norm(hs[1])  # the copied state: block 1's output, for every position
        shape = (1, x.shape[1], -1, attn.head_dim)
        k = attn.k_proj(x).view(shape).transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        _, k = apply_rotary_pos_emb(k, k, cos, sin)
        gen = slice(len(ids) - 1, len(seq) - 1)  # positions decoded with an exit at 1
        assert torch.allclose(res.cache.layers[i].keys[:, :, gen], k[:, :, gen], atol=1e-5)
        assert torch.allclose(res.cache.layers[i].values[:, :, gen], v[:, :, gen], atol=1e-5)
        # the prompt prefix was prefilled exactly
        pre = slice(0, len(ids) - 1)
        assert torch.allclose(res.cache.layers[i].keys[:, :, pre], ref.layers[i].keys[:, :, pre], atol=1e-5)


def test_propagate_on_ssm_advances_state_with_the_copied_state():
    lm = lm_for("mamba2")
    ids = prompt(7)
    res = generate_early_exit(lm, ids, ExitRule("static", 1), max_new_tokens=4, strategy="propagate",
                              stop_at_eos=False)
    assert res.state_rows == 4 * (lm.n_layers - 1) and res.kv_writes == 0
    assert res.mean_layers_computed == lm.n_layers  # an SSM's mixer is its block: propagate saves no blocks
    assert all(res.cache.has_previous_state(i) for i in range(lm.n_layers))


# ---------------------------------------------------------------------------------------------------
# cache lengths and shapes
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["llama", "olmoe", "gpt2", "mamba2", "bamba"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cache_lengths_and_shapes(model_type, strategy):
    lm = lm_for(model_type)
    ids = prompt(8)
    n = 9
    res = generate_early_exit(lm, ids, ExitRule("consecutive", 1), max_new_tokens=n, strategy=strategy,
                              stop_at_eos=False)
    P = len(ids) + n - 1
    ref = full_cache(lm, (ids + res.tokens)[:-1])
    assert res.cache_lengths == [P] * lm.n_layers
    assert len(res.cache.layers) == lm.n_layers
    for i in range(lm.n_layers):
        got, want = layer_tensors(res.cache.layers[i]), layer_tensors(ref.layers[i])
        assert [t.shape for t in got] == [t.shape for t in want]
        if isinstance(getattr(res.cache.layers[i], "keys", None), torch.Tensor):
            assert res.cache.layers[i].keys.shape[-2] == P == res.cache.get_seq_length(i)


@pytest.mark.parametrize("model_type", ["llama", "mamba2"])
def test_defer_without_completion_leaves_pending_positions(model_type):
    lm = lm_for(model_type)
    ids = prompt(9)
    res = generate_early_exit(lm, ids, ExitRule("static", 1), max_new_tokens=6, strategy="defer",
                              complete_cache=False, stop_at_eos=False)
    P = len(ids) + 5
    # block 1 ran every position; the others stopped at the prefill (every token exited at 1)
    assert res.cache_lengths == [P] + [len(ids) - 1] * (lm.n_layers - 1)
    assert res.flush_rows == 0 and res.layers_run == 6
    assert res.owed_rows == 6 * (lm.n_layers - 1)
    quiet = generate_early_exit(lm, ids, ExitRule("static", 1), max_new_tokens=6, strategy="defer",
                                complete_cache=False, stop_at_eos=False, return_trace=False)
    assert quiet.trace is None and quiet.exit_layers.tolist() == [1] * 6 and quiet.tokens == res.tokens
    if model_type == "llama":
        assert [res.cache.get_seq_length(i) for i in range(lm.n_layers)] == res.cache_lengths


# ---------------------------------------------------------------------------------------------------
# self-speculative (transformers' assistant_early_exit)
# ---------------------------------------------------------------------------------------------------
def test_self_speculative_equals_greedy_where_supported():
    lm = lm_for("llama")
    ids = prompt(10)
    res = generate_self_speculative(lm, ids, 8, early_exit_layer=1)
    assert res.tokens == hf_greedy(lm, ids, 8)
    for mt in ("gpt2", "mamba2"):
        with pytest.raises(DecodingUnsupported, match="assistant_early_exit"):
            generate_self_speculative(lm_for(mt), ids, 4, early_exit_layer=1)
    with pytest.raises(ValueError, match="early_exit_layer"):
        generate_self_speculative(lm, ids, 4, early_exit_layer=lm.n_layers)


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------
def test_bad_inputs():
    lm = lm_for("llama")
    ids = prompt()
    L = lm.n_layers
    with pytest.raises(ValueError, match="probability"):
        generate_early_exit(lm, ids, ("max_prob", 1.5), max_new_tokens=2)
    with pytest.raises(ValueError, match="entropy"):
        generate_early_exit(lm, ids, ("entropy", -1.0), max_new_tokens=2)
    with pytest.raises(ValueError, match="static exit layer"):
        generate_early_exit(lm, ids, ExitRule("static", L + 1), max_new_tokens=2)
    with pytest.raises(ValueError, match="not realisable"):
        generate_early_exit(lm, ids, ExitRule("saturation"), max_new_tokens=2)
    for bad in (0, -3, 1.5, None):
        with pytest.raises(ValueError, match="max_new_tokens"):
            generate_early_exit(lm, ids, None, max_new_tokens=bad)
        with pytest.raises(ValueError, match="max_new_tokens"):
            generate_full(lm, ids, bad)
    ctx = lm.max_length
    with pytest.raises(ValueError, match="longer than the model's context"):
        generate_early_exit(lm, [5] * (ctx + 1), None, max_new_tokens=1)
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        generate_early_exit(lm, [5] * (ctx - 2), None, max_new_tokens=10)
    with pytest.raises(ValueError, match="no tokens"):
        generate_early_exit(lm, [], None, max_new_tokens=2)
    with pytest.raises(ValueError, match="no tokenizer"):
        generate_early_exit(lm, "some text", None, max_new_tokens=2)
    with pytest.raises(ValueError, match="token ids must be in"):
        generate_early_exit(lm, [tm.VOCAB + 3], None, max_new_tokens=2)
    with pytest.raises(ValueError, match="strategy"):
        generate_early_exit(lm, ids, None, max_new_tokens=2, strategy="lazy")
    with pytest.raises(ValueError, match="min_layer"):
        generate_early_exit(lm, ids, ("margin", 0.5), max_new_tokens=2, min_layer=0)
    with pytest.raises(ValueError, match="min_layer"):
        generate_early_exit(lm, ids, ("margin", 0.5), max_new_tokens=2, min_layer=L + 1)
    with pytest.raises(ValueError, match="backend"):
        generate_full(lm, ids, 2, backend="vllm")


def test_min_layer_and_trace():
    lm = lm_for("gpt2")
    ids = prompt(11)
    res = generate_early_exit(lm, ids, ExitRule("hidden_saturation", -1.0), max_new_tokens=4, min_layer=2,
                              stop_at_eos=False)
    assert (res.exit_layers == 2).all()  # the rule always fires, but not before min_layer
    assert len(res.trace) == 4 and res.trace[0]["position"] == len(ids) - 1
    assert set(res.trace[0]["stats"]) == {2} and "hidden_cos_prev" in res.trace[0]["stats"][2]
    s = res.summary()
    assert s["n_tokens"] == 4 and s["mean_exit_layer"] == 2.0
    assert res.tokens_per_s > 0 and res.wall_time >= res.decode_seconds


def test_stop_at_eos():
    lm = lm_for("llama")
    ids = prompt(12)
    free = generate_early_exit(lm, ids, None, max_new_tokens=6, stop_at_eos=False)
    eos = free.tokens[2]
    saved = lm.model.generation_config.eos_token_id
    lm.model.generation_config.eos_token_id = eos
    try:
        res = generate_early_exit(lm, ids, None, max_new_tokens=6)
        assert res.tokens == free.tokens[:free.tokens.index(eos) + 1]
    finally:
        lm.model.generation_config.eos_token_id = saved


def test_hybrid_propagate_runs_only_the_mixer_of_skipped_ssm_layers(monkeypatch):
    """In a hybrid, a skipped SSM layer's state is advanced by its mixer alone; that must leave the same
    state as running the whole block on the copied state (the block's MLP does not touch the cache)."""
    import eeutils.decoding.drivers as dec
    lm = lm_for("bamba")
    ids = prompt(13)
    kw = dict(max_new_tokens=5, strategy="propagate", stop_at_eos=False)
    a = generate_early_exit(lm, ids, ExitRule("static", 1), **kw)
    monkeypatch.setattr(dec._AttentionDriver, "write_kv",
                        lambda self, i, h, start, cache: (self.run_block(i, h, start, cache) if self.is_ssm[i]
                                                          else dec.Driver.write_kv(self, i, h, start, cache)))
    b = generate_early_exit(lm, ids, ExitRule("static", 1), **kw)
    assert a.tokens == b.tokens and a.state_rows == b.state_rows > 0
    for i in range(lm.n_layers):
        for x, y in zip(layer_tensors(a.cache.layers[i]), layer_tensors(b.cache.layers[i])):
            assert torch.allclose(x, y, atol=1e-6)
