"""benchmarks/gpu_bench.py: the --tiny CPU run over every model of the paper's list, the FLOP and projection
arithmetic on hand-computed numbers, and the published shapes' parameter counts."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_bench  # noqa: E402
import paper_shapes  # noqa: E402

# Published total parameter counts (model cards / config arithmetic), in billions.
PUBLISHED_B = {"llama2-7b": 6.74, "llama3-8b": 8.03, "qwen2-7b": 7.62, "qwen3-8b": 8.19, "gpt-oss-20b": 20.9,
               "qwen3-30b-a3b": 30.5, "mamba2-7b": 7.29}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_bench") / "tiny.json"
    torch.set_num_threads(1)
    result = gpu_bench.main(["--tiny", "--device", "cpu", "--json", str(out)])
    return result, json.loads(out.read_text())


def test_tiny_run_covers_every_model_and_family(tiny_run):
    _, data = tiny_run
    names = [r["model"] for r in data["models"]]
    assert names == list(paper_shapes.PAPER_MODELS)
    assert {r["family"] for r in data["models"]} == {"dense", "moe", "ssm"}
    assert data["skipped"] == []
    for r in data["models"]:
        assert r["errors"] == {}, (r["model"], r["errors"])
        for m in gpu_bench.METHODS:
            t = r["seconds"][m]
            assert math.isfinite(t) and t > 0, (r["model"], m, t)
            assert r["per_1M_s"][m] == pytest.approx(t * 1e6 / r["flops"]["tokens"])
        assert r["flops"]["tokens"] == 128
        assert 0 < r["flops"]["forward"] < r["flops"]["bound"]
        assert r["flops"]["lens"] == r["n_layers"] * 2 * r["d_model"] * r["vocab"] * 128


def test_tiny_readout_last_layer_matches_model_logits(tiny_run):
    _, data = tiny_run
    for r in data["models"]:
        assert r["last_layer_max_abs_diff"] < 1e-4, r["model"]


def test_tiny_run_totals_are_sums_of_the_models(tiny_run):
    result, data = tiny_run
    for m in gpu_bench.METHODS:
        assert data["totals_per_1M"][m]["seconds"] == pytest.approx(sum(r["per_1M_s"][m] for r in data["models"]))
        assert data["totals_per_1M"][m]["complete"]
    assert result["targets"]["list_x_1M_readout_min"] == pytest.approx(data["totals_per_1M"]["readout"]["seconds"] / 60)


def test_tiny_shapes_keep_the_family_features():
    gqa = paper_shapes.make_config("llama3-8b", tiny=True)
    assert gqa.num_attention_heads // gqa.num_key_value_heads > 1
    oss = paper_shapes.make_config("gpt-oss-20b", tiny=True)
    assert {"sliding_attention", "full_attention"} <= set(oss.layer_types) and oss.sliding_window < 32
    assert 1 < oss.num_experts_per_tok < oss.num_local_experts
    qm = paper_shapes.make_config("qwen3-30b-a3b", tiny=True)
    assert 1 < qm.num_experts_per_tok < qm.num_experts
    mb = paper_shapes.make_config("mamba2-7b", tiny=True)
    assert mb.expand * mb.hidden_size == mb.num_heads * mb.head_dim and mb.n_groups > 1 and mb.chunk_size < 32


def test_published_shapes_have_the_published_sizes():
    from transformers import AutoModelForCausalLM
    for name, billions in PUBLISHED_B.items():
        with torch.device("meta"):
            m = AutoModelForCausalLM.from_config(paper_shapes.make_config(name))
        total = sum(p.numel() for p in m.parameters()) / 1e9
        assert total == pytest.approx(billions, rel=0.01), name


def test_fast_build_keeps_buffers_and_is_deterministic():
    from transformers import AutoModelForCausalLM
    for name in ("llama3-8b", "gpt-oss-20b"):  # plain RoPE and YaRN
        a = paper_shapes.build_model(name, tiny=True, device="cpu", dtype=torch.float32, seed=3)
        b = paper_shapes.build_model(name, tiny=True, device="cpu", dtype=torch.float32, seed=3)
        ref = dict(AutoModelForCausalLM.from_config(paper_shapes.make_config(name, tiny=True)).named_buffers())
        for k, buf in a.named_buffers():
            assert torch.equal(buf, ref[k]), (name, k)
        for (k, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p, q), (name, k)
        norms = [p for k, p in a.named_parameters() if p.dim() == 1 and "norm" in k]
        assert norms and all(bool((p == 1).all()) for p in norms)


# --------------------------------------------------------------------------------- hand-computed arithmetic
def test_attention_flops_hand_computed():
    # 4 tokens, width 2: keys per query 1, 2, 3, 4 -> 10; 4 * 2 * 10 = 80
    assert gpu_bench.attention_flops(4, 2) == 80
    # sliding window 2: keys 1, 2, 2, 2 -> 7 -> 56; a window as long as the document is full attention
    assert gpu_bench.attention_flops(4, 2, window=2) == 56
    assert gpu_bench.attention_flops(4, 2, window=8) == 80


def test_ssd_flops_hand_computed():
    ssd = {"heads": 2, "head_dim": 3, "groups": 1, "state": 4, "chunk": 5}
    assert gpu_bench.ssd_flops_per_token(ssd) == 2 * (5 * (1 * 4 + 2 * 3) + 2 * 2 * 3 * 4)  # 196


def test_flop_counts_hand_computed():
    facts = {"n_layers": 2, "d_model": 4, "vocab": 10, "attn": [(4, None), (4, None)], "ssd": None}
    f = gpu_bench.flop_counts(facts, p_active=100, n_docs=2, doc_len=3)
    # T = 6; dense 2*100*6; attention 4*4*(1+2+3) per layer and doc, x 2 layers x 2 docs; head 2*4*10*6
    assert (f["tokens"], f["dense"], f["attention"], f["head"]) == (6, 1200, 384, 480)
    assert f["forward"] == 1200 + 384 + 480 == 2064
    assert f["lens"] == 2 * 480 and f["bound"] == 2064 + 960
    ssm = dict(facts, attn=[], ssd={"layers": 2, "heads": 2, "head_dim": 3, "groups": 1, "state": 4, "chunk": 5})
    assert gpu_bench.flop_counts(ssm, 100, 2, 3)["ssd"] == 2 * 6 * 196


def test_projection_rates_and_totals_hand_computed():
    assert gpu_bench.per_million(2.0, 65536) == pytest.approx(30.517578125)
    r = gpu_bench.rates({"forward": 2e12, "bound": 6e12, "lens": 4e12},
                        {"forward": 1.0, "floor": 2.0, "readout": 3.0}, peak_tflops=10.0)
    assert r["forward_tflops"] == pytest.approx(2.0) and r["floor_tflops"] == pytest.approx(3.0)
    assert r["readout_tflops"] == pytest.approx(2.0)
    assert r["floor_lens_tflops"] == pytest.approx(4.0) and r["readout_lens_tflops"] == pytest.approx(2.0)
    assert r["floor_lens_frac_peak"] == pytest.approx(0.4) and r["forward_frac_peak"] == pytest.approx(0.2)
    recs = [{"per_1M_s": {"forward": 10.0, "floor": 20.0, "readout": 30.0}},
            {"per_1M_s": {"forward": 1.0, "floor": 2.0}}]
    t = gpu_bench.totals(recs)
    assert t["forward"] == {"seconds": 11.0, "models": 2, "complete": True}
    assert t["readout"] == {"seconds": 30.0, "models": 1, "complete": False}


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_asked_for_and_absent_is_a_clear_error():
    with pytest.raises(SystemExit, match="CUDA is not available"):
        gpu_bench.parse_args(["--device", "cuda"])


def test_full_shapes_on_cpu_and_unknown_models_are_refused():
    with pytest.raises(SystemExit, match="--tiny"):
        gpu_bench.parse_args(["--device", "cpu"])
    with pytest.raises(SystemExit, match="unknown model"):
        paper_shapes.resolve_names("llama2-7b,gpt5")


def test_bf16_mamba2_readout():
    import eeutils
    lm = eeutils.wrap_model(paper_shapes.build_model("mamba2-7b", tiny=True, device="cpu", dtype=torch.bfloat16))
    r = eeutils.readout(lm, [list(range(16))], progress=False)
    # the lens casts final_norm's fp32 output to the bf16 head, as the model itself does
    assert eeutils.check_last_layer(lm, [list(range(16))]) < 0.1
    assert r.stats["entropy"].shape[1] == lm.n_layers + 1
