"""Core readout: every adapter row reproduces the model's logits, statistics match hand-computed values."""
import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import eeutils
from eeutils.lens import NonFiniteLogits
from eeutils.lens.kernel import FinalRef, chunk_statistics

import tiny_models as tm


@pytest.fixture(scope="module", params=sorted(tm.CONFIGS))
def tiny(request):
    return request.param, eeutils.wrap_model(tm.make_model(request.param))


def _ids(seed=0, n=2, T=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, tm.VOCAB, (n, T), generator=g)


def test_last_layer_reproduces_model_logits(tiny):
    model_type, lm = tiny
    assert lm.family == tm.FAMILY.get(model_type, "dense")
    n_cfg = getattr(lm.config, "num_hidden_layers", None) or getattr(lm.config, "n_layer")
    assert lm.n_layers == n_cfg
    assert eeutils.check_last_layer(lm, _ids()) <= 1e-4


def test_readout_final_layer_matches_model(tiny):
    model_type, lm = tiny
    ids = _ids(1, n=2, T=10)
    r = eeutils.readout(lm, [ids[0].tolist(), ids[1, :7].tolist()], progress=False, k=3)
    L = lm.n_layers
    assert r.n_layers == L and r.n_tokens == 17
    with torch.no_grad():
        logits = lm.model(input_ids=ids[:1]).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    ce = -logp[torch.arange(9), ids[0, 1:]]
    first = r.doc == 0
    np.testing.assert_allclose(r["ce"][first, L][:-1], ce.numpy(), atol=1e-4)
    assert np.isnan(r["ce"][first, L][-1])
    np.testing.assert_array_equal(r["top1"][first, L], logits.argmax(-1).numpy())
    np.testing.assert_allclose(r["kl_to_final"][:, L], 0, atol=1e-5)
    np.testing.assert_allclose(r["logit_cos"][:, L], 1, atol=1e-5)
    np.testing.assert_allclose(r["hidden_cos"][:, L], 1, atol=1e-5)
    assert (r["rank_of_final"][:, L] == 0).all() and (r["topk_overlap"][:, L] == 1).all()


def test_statistics_hand_computed():
    # layer distribution p_l = [.5, .25, .125, .125], final p_f = [.25, .5, .125, .125]
    z_l = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    z_f = torch.log(torch.tensor([[0.25, 0.5, 0.125, 0.125]]))
    h_f = torch.tensor([[1.0, 1.0]])
    ref = FinalRef.build(z_f, h_f, k=2)
    st = chunk_statistics(z_l, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), ref,
                          torch.tensor([2]), k=2)
    ln2 = math.log(2)
    assert st["top1"].item() == 0
    assert st["max_prob"].item() == pytest.approx(0.5)
    assert st["margin"].item() == pytest.approx(0.25)
    assert st["entropy"].item() == pytest.approx(1.75 * ln2, abs=1e-6)  # 1.75 bits
    assert st["kl_to_final"].item() == pytest.approx(0.25 * ln2, abs=1e-6)  # .25 ln(.25/.5) + .5 ln(.5/.25)
    assert st["ce"].item() == pytest.approx(3 * ln2, abs=1e-6)  # -ln(1/8)
    assert st["rank_of_final"].item() == 1  # final top-1 is token 1; only token 0 scores higher here
    a, b = z_l[0], z_f[0]
    assert st["logit_cos"].item() == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-6)
    assert st["logit_cos"].item() == pytest.approx(0.95652, abs=1e-4)
    assert st["hidden_cos"].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert st["hidden_cos_prev"].item() == pytest.approx(0.0, abs=1e-7)
    assert st["topk_overlap"].item() == pytest.approx(1.0)  # {0, 1} both ways


def test_statistics_identical_layer_and_no_target():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    ref = FinalRef.build(z, torch.ones(1, 3), k=3)
    st = chunk_statistics(z, torch.ones(1, 3), None, ref, torch.tensor([-1]), k=3)
    assert st["kl_to_final"].item() == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(st["ce"].item())
    assert st["hidden_cos_prev"].item() == 1.0  # convention at layer 0
    p = torch.softmax(z, -1)[0]
    assert st["entropy"].item() == pytest.approx(float(-(p * p.log()).sum()), abs=1e-6)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "mamba2", "olmoe"])
def test_padding_alone_equals_batched(model_type):
    lm = eeutils.wrap_model(tm.make_model(model_type))
    ids = _ids(3, n=3, T=14)
    docs = [ids[0].tolist(), ids[1, :5].tolist(), ids[2, :9].tolist()]
    batched = eeutils.readout(lm, docs, batch_size=3, chunk_tokens=7, progress=False)
    for d, toks in enumerate(docs):
        alone = eeutils.readout(lm, [toks], batch_size=1, progress=False)
        sel = batched.doc == d
        for name in ("max_prob", "entropy", "kl_to_final", "logit_cos", "hidden_cos"):
            np.testing.assert_allclose(batched[name][sel], alone[name], atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(batched["top1"][sel], alone["top1"])


def test_frame_columns_and_roundtrip(tmp_path):
    lm = eeutils.wrap_model(tm.make_model("llama"), name="tiny-llama")
    r = eeutils.readout(lm, _ids(4).tolist(), progress=False, workload="unit")
    df = r.to_frame()
    for col in ["doc", "position", "layer", "top1", "max_prob", "margin", "entropy", "kl_to_final", "ce",
                "rank_of_final", "logit_cos", "hidden_cos", "topk_overlap"]:
        assert col in df.columns
    assert len(df) == r.n_tokens * (r.n_layers + 1)
    assert df.layer.min() == 0 and df.layer.max() == r.n_layers
    path = r.save(tmp_path / "r.npz")
    back = eeutils.Readout.load(path)
    assert back.meta["model"] == "tiny-llama" and back.meta["workload"] == "unit"
    assert back.meta["kit_version"] == eeutils.__version__
    for k in r.stats:
        np.testing.assert_array_equal(back[k], r[k])
    assert list(tmp_path.iterdir()) == [path]  # no temp files left


def test_bad_inputs():
    lm = eeutils.wrap_model(tm.make_model("llama"))
    with pytest.raises(ValueError, match="no input"):
        eeutils.readout(lm, [], progress=False)
    with pytest.raises(ValueError, match="no tokens"):
        eeutils.readout(lm, [[]], progress=False)
    with pytest.raises(ValueError, match="k must be"):
        eeutils.readout(lm, [[1, 2, 3]], k=1, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        eeutils.readout(lm, [[1, 2, 3]], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="on_overflow"):
        eeutils.readout(lm, [[1, 2, 3]], on_overflow="drop", progress=False)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        eeutils.readout(lm, [[1, 2, 3]], max_length=10_000, progress=False)
    long = list(range(1, 80))  # context is 64
    with pytest.raises(ValueError, match="more than max_length"):
        eeutils.readout(lm, [long], on_overflow="error", progress=False)
    with pytest.warns(UserWarning, match="truncated"):
        r = eeutils.readout(lm, [long], progress=False)
    assert r.n_tokens == 64 and r.meta["n_truncated"] == 1
    with pytest.raises(ValueError, match="tokenizer"):
        eeutils.readout(lm, "text but no tokenizer", progress=False)


def test_nan_logits_name_layer_and_token():
    model = tm.make_model("llama")
    lm = eeutils.wrap_model(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLogits, match=r"layer 2, document 0, position 0"):
        eeutils.readout(lm, [[5, 6, 7]], progress=False)


def test_peak_memory_bounded_when_vocab_and_tokens_grow():
    """Peak RSS growth stays far below the naive [layers x tokens x vocab] fp32 tensor."""
    psutil = pytest.importorskip("psutil")
    from transformers import LlamaConfig, LlamaForCausalLM

    def peak_delta(vocab, tokens):
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=tokens)
        lm = eeutils.wrap_model(LlamaForCausalLM(cfg))
        ids = torch.randint(0, vocab, (1, tokens)).tolist()
        proc, peak, stop = psutil.Process(), [0], threading.Event()
        base = proc.memory_info().rss

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.002)
        th = threading.Thread(target=sample)
        th.start()
        try:
            eeutils.readout(lm, ids, chunk_tokens=128, progress=False)
        finally:
            stop.set()
            th.join()
        return max(peak[0] - base, 0), 7 * tokens * vocab * 4

    small, naive_small = peak_delta(8_000, 512)
    big, naive_big = peak_delta(32_000, 2048)
    assert big < naive_big / 5, (big, naive_big)
    assert big < 400e6
    assert small < naive_small


def test_loading_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(eeutils.ModelLoadError, match="not available"):
        eeutils.load_model("acme/not-cached-anywhere")
    with pytest.raises(ValueError, match="non-empty"):
        eeutils.load_model("")
    with pytest.raises(ValueError, match="dtype"):
        eeutils.load_model("acme/x", dtype="float8")
    # a cached hub model, asked at a revision that is not cached
    from huggingface_hub import constants
    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    snap = hub / "models--acme--tiny" / "snapshots" / ("a" * 40)
    tm.make_model("llama").save_pretrained(snap)
    (hub / "models--acme--tiny" / "refs").mkdir()
    (hub / "models--acme--tiny" / "refs" / "main").write_text("a" * 40)
    with pytest.raises(eeutils.ModelLoadError, match="cached: main"):
        eeutils.load_model("acme/tiny", revision="v9", tokenizer=False)
    # not a causal LM
    from transformers import ViTConfig, ViTModel
    vit = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                       image_size=8, patch_size=4)).save_pretrained(vit)
    with pytest.raises(eeutils.ModelLoadError, match="not a causal language model"):
        eeutils.load_model(str(vit))


def test_local_folder_roundtrip_and_trust_remote_code_off(tmp_path):
    folder = tmp_path / "m"
    tm.make_model("qwen3").save_pretrained(folder)
    lm = eeutils.load_model(str(folder), tokenizer=False)
    assert lm.n_layers == 3 and lm.family == "dense"
    assert eeutils.check_last_layer(lm, _ids()) <= 1e-4
    assert not any(folder.glob("*.bin"))  # safetensors by default


def test_unknown_architecture_discovery_and_error(monkeypatch):
    from eeutils.arch import table as adapters
    monkeypatch.delitem(adapters.ADAPTERS, "llama")
    lm = eeutils.wrap_model(tm.make_model("llama"))
    assert lm.resolved.discovered and lm.resolved.paths["final_norm"] == "model.norm"
    assert eeutils.check_last_layer(lm, _ids()) <= 1e-4

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"model_type": "odd"})()
            self.proj = torch.nn.Linear(4, 4)
    with pytest.raises(eeutils.AdapterError, match="register_adapter"):
        eeutils.wrap_model(Odd())


def test_register_adapter_row():
    from eeutils.arch import table as adapters
    spec = eeutils.ArchSpec(model_types=("my_tiny_llama",), family="dense")
    eeutils.register_adapter(spec)
    try:
        assert adapters.ADAPTERS["my_tiny_llama"] is spec
        with pytest.raises(ValueError, match="overwrite"):
            eeutils.register_adapter(spec)
        with pytest.raises(ValueError, match="family"):
            eeutils.ArchSpec(model_types=("x",), family="transformer")
    finally:
        adapters.ADAPTERS.pop("my_tiny_llama")


def test_moe_active_params_counted():
    lm = eeutils.wrap_model(tm.make_model("mixtral"))
    assert lm.params_active < lm.params_total
    experts = sum(p.numel() for n, p in lm.model.named_parameters() if "experts" in n.split("."))
    assert lm.params_active == lm.params_total - experts // 2  # top-2 of 4 experts


def test_device_map_auto_loads_through_accelerate(tmp_path):
    """device_map="auto" goes through accelerate (on a CPU-only machine everything lands on the CPU)."""
    pytest.importorskip("accelerate")
    folder = tmp_path / "m"
    tm.make_model("llama").save_pretrained(folder)
    lm = eeutils.load_model(str(folder), device_map="auto", tokenizer=False)
    assert eeutils.check_last_layer(lm, _ids()) <= 1e-4
    r = eeutils.readout(lm, _ids().tolist(), progress=False)
    assert r.n_layers == 3
    with pytest.raises(ValueError, match="either device or device_map"):
        eeutils.load_model(str(folder), device="cpu", device_map="auto")


def test_batches_respect_doc_and_token_caps():
    from eeutils.lens.readout import _batches
    lengths = np.array([10, 40, 25, 5, 30])
    order = np.argsort(-lengths, kind="stable")  # 40, 30, 25, 10, 5
    assert _batches(order, lengths, 8, 80) == [[1, 4], [2, 0, 3]]  # 2 x 40 padded tokens, then 3 x 25
    assert _batches(order, lengths, 2, 10**6) == [[1, 4], [2, 0], [3]]
    assert _batches(order, lengths, 8, 1) == [[d] for d in order]  # a document longer than the cap goes alone


def test_token_capped_batches_and_chunks_change_no_number():
    lm = eeutils.wrap_model(tm.make_model("llama"))
    ids = _ids(5, n=4, T=16)
    docs = [ids[0].tolist(), ids[1, :6].tolist(), ids[2, :11].tolist(), ids[3].tolist()]
    ref = eeutils.readout(lm, docs, batch_size=4, chunk_tokens=1000, progress=False)
    small = eeutils.readout(lm, docs, batch_size=4, max_batch_tokens=20, chunk_tokens=5, progress=False)
    assert small.meta["max_batch_tokens"] == 20 and small.meta["chunk_tokens"] == 5
    for name in ("max_prob", "entropy", "kl_to_final", "logit_cos", "hidden_cos", "ce"):
        np.testing.assert_allclose(small[name], ref[name], atol=1e-4, err_msg=name)
    np.testing.assert_array_equal(small["top1"], ref["top1"])
    with pytest.raises(ValueError, match="max_batch_tokens"):
        eeutils.readout(lm, docs, max_batch_tokens=0, progress=False)


def test_hidden_cosines_hand_values():
    from eeutils.lens.kernel import hidden_cosines
    h0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    h1 = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    h2 = torch.tensor([[0.0, 3.0], [0.0, 5.0]], dtype=torch.float64)  # any float dtype
    to_last, to_prev = hidden_cosines([h0, h1, h2])
    r = 1 / math.sqrt(2)
    assert to_last.dtype == torch.float32 and to_last.shape == (3, 2)
    assert torch.allclose(to_last, torch.tensor([[0.0, 1.0], [r, -1.0], [1.0, 1.0]]), atol=1e-6)
    assert torch.allclose(to_prev, torch.tensor([[1.0, 1.0], [r, -1.0], [r, -1.0]]), atol=1e-6)  # 1 at layer 0


def test_state_store_reuses_and_regrows_its_block():
    from eeutils.lens.capture import StateStore
    store = StateStore(3)
    a = store.keep(0, torch.arange(6.0).view(1, 2, 3))
    block = store.block
    assert block.shape == (3, 6) and torch.equal(a, torch.arange(6.0).view(1, 2, 3))
    b = store.keep(2, torch.ones(1, 1, 3))  # smaller: the same block, a copy (not the caller's tensor)
    assert store.block is block and b.data_ptr() == block[2].data_ptr() and torch.equal(b, torch.ones(1, 1, 3))
    assert torch.equal(a, torch.arange(6.0).view(1, 2, 3))  # layer 0's row is untouched
    c = store.keep(0, torch.zeros(2, 2, 3))  # bigger, at the first layer of a forward: regrown
    assert store.block.shape == (3, 12) and torch.equal(c, torch.zeros(2, 2, 3))
    d = store.keep(1, torch.zeros(1, 2, dtype=torch.float64))  # another dtype after the first layer: a copy of its
    assert d.dtype == torch.float64 and store.block.dtype == torch.float32  # own; the block (layer 0) is kept
    assert torch.equal(store.block[0, :12].view(2, 2, 3), c)


def test_states_budget_follows_the_workspace():
    from eeutils.lens.kernel import auto_chunk_tokens, workspace_bytes
    from eeutils.lens.readout import MIN_BATCH_TOKENS, STATES_BYTES, _states_budget
    lm = eeutils.wrap_model(tm.make_model("llama"))
    per_token = (lm.n_layers + 1) * lm.model.get_input_embeddings().weight.shape[1] * 4
    floor, tokens = _states_budget(lm, 0)  # a tiny workspace: the floor decides
    assert floor == STATES_BYTES["cpu"] and tokens == max(STATES_BYTES["cpu"] // per_token, MIN_BATCH_TOKENS)
    _, big = _states_budget(lm, 64 * STATES_BYTES["cpu"])
    assert big == max(64 * STATES_BYTES["cpu"] // per_token, MIN_BATCH_TOKENS)
    assert workspace_bytes(128, 262_144) == 128 * 4 * 262_144 * 4 and workspace_bytes(2, 300) == 2 * 4 * 512 * 4
    assert workspace_bytes(auto_chunk_tokens(2048), 2048) < STATES_BYTES["cpu"]  # zoo vocabularies: the floor
    # a wide, deep model (41 x 4096 fp32 per token: 24 tokens in 16 MiB) still gets batches of MIN_BATCH_TOKENS
    wide = SimpleNamespace(n_layers=40, model=SimpleNamespace(
        get_input_embeddings=lambda: SimpleNamespace(weight=torch.empty(1, 4096))))
    assert _states_budget(wide, 0) == (STATES_BYTES["cpu"], MIN_BATCH_TOKENS)
