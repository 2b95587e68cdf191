"""Quantisation round trip (eeutils.arch.kquants, eeutils.arch.quant) and the paired shift (eeutils.analysis.shift).

The K-quant encoders are checked by hand on tiny blocks and against gguf-py's reference decoder; the type
table against llama.cpp's documented rules and, when the real models are installed, against the tensor types
inside their GGUF files; the quantised zoo model against its own logits; the cache key against a change of
the weights.
"""
import shutil

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

import eeutils  # noqa: E402
from eeutils.analysis.shift import eas_shift, layer_shift  # noqa: E402
from eeutils.arch import kquants, quant  # noqa: E402
from readout_factory import make_readout  # noqa: E402


def _gauss(n_rows=6, n=512, seed=0):
    return (np.random.default_rng(seed).standard_normal((n_rows, n)) * 0.05).astype(np.float32)


def _fp16(v):
    return np.float32(np.float16(v))


# ------------------------------------------------------------------------------------------ block codecs

def test_q4_1_by_hand():
    """One Q4_1 block (gguf-py's encoder): d = (max - min) / 15, m = min, q = round((x - min) / d)."""
    x = np.linspace(-0.3, 0.45, 32, dtype=np.float32)[None]
    b = quant.encode(x, "Q4_1")
    d, m = b[0, :2].view(np.float16)[0], b[0, 2:4].view(np.float16)[0]
    assert d == np.float16(0.75 / 15) and m == np.float16(-0.3)
    q = np.concatenate([b[0, 4:] & 0xF, b[0, 4:] >> 4])  # weights 0..15 in the low nibbles, 16..31 in the high
    np.testing.assert_array_equal(q, np.floor((x[0] + 0.3) / np.float32(0.75 / 15) + 0.5))
    np.testing.assert_allclose(dequantize(b, T.Q4_1)[0], np.float32(d) * q + np.float32(m), rtol=0, atol=0)


def test_q4_k_by_hand():
    """Eight equal sub-blocks, each -0.08..0.07 in steps of 0.01: the fit is exact (scale 0.01, min 0.08), so
    every 6-bit scale and min is 63, and the levels are 0..15."""
    x = np.tile((np.arange(32) % 16 - 8) * np.float32(0.01), 8).astype(np.float32)[None]
    b = kquants.quantize_q4_k(x)[0]
    assert b.shape == (144,)
    d, dmin = b[0:2].view(np.float16)[0], b[2:4].view(np.float16)[0]
    assert d == np.float16(np.float32(0.01) / 63) and abs(float(dmin) * 63 - 0.08) < 1e-4
    np.testing.assert_array_equal(b[4:16], [255] * 12)  # 63 | (63 >> 4) << 6, and the low nibbles 15 | 15 << 4
    levels = np.arange(32) % 16
    np.testing.assert_array_equal(b[16:48], levels | (levels << 4))  # sub-blocks 0 (low) and 1 (high nibble)
    y = dequantize(b[None], T.Q4_K)[0]
    np.testing.assert_allclose(y, np.float32(d) * 63 * np.tile(levels, 8) - np.float32(dmin) * 63, rtol=0, atol=1e-7)
    np.testing.assert_allclose(y, x[0], atol=2e-4)


def test_q6_k_by_hand():
    """Sixteen equal sub-blocks -0.08..0.07: each sub-block scale is exactly 1/400, the super-block scale
    d = fp16(-1/51200) and every int8 scale -128; levels are 400 x + 32."""
    x = np.tile((np.arange(16) - 8) * np.float32(0.01), 16).astype(np.float32)[None]
    b = kquants.quantize_q6_k(x)[0]
    assert b.shape == (210,)
    np.testing.assert_array_equal(b[192:208].view(np.int8), [-128] * 16)
    d = b[208:210].view(np.float16)[0]
    assert d == np.float16(-1 / 51200)
    q = np.rint(np.tile(np.arange(16) - 8, 16) * 4).astype(int) + 32  # 400 x + 32
    np.testing.assert_array_equal(b[0:32], (q[0:32] & 0xF) | ((q[64:96] & 0xF) << 4))
    np.testing.assert_array_equal(b[128:160], (q[0:32] >> 4) | (q[32:64] >> 4) << 2 | (q[64:96] >> 4) << 4
                                  | (q[96:128] >> 4) << 6)
    y = dequantize(b[None], T.Q6_K)[0]
    np.testing.assert_allclose(y, np.float32(d) * -128 * (q - 32), rtol=1e-6)
    np.testing.assert_allclose(y, x[0], rtol=2e-3)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K"])
def test_affine_kquants_decode_as_encoded(qtype):
    """The reference decoder reads back exactly d * s_j * q - dmin * m_j from the encoder's own quantities."""
    x = _gauss()
    x[0, :256] = 0.0  # an all-zero super-block
    x[1, :256] = 0.3  # a constant one (no negative offset)
    d, dmin, ls, lm, q = kquants._affine_blocks(x.reshape(-1, 256), qtype)
    want = (d.astype(np.float32)[:, None, None] * ls[..., None] * q
            - dmin.astype(np.float32)[:, None, None] * lm[..., None]).reshape(x.shape)
    got = dequantize(kquants.ENCODERS[qtype](x), T[qtype])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert np.all(got[0, :256] == 0) and np.allclose(got[1, :256], 0.3, rtol=1e-3)
    g = _gauss(seed=3)
    rel = np.sqrt(((quant.round_trip(g, qtype) - g) ** 2).mean() / (g ** 2).mean())
    assert rel < {"Q4_K": 0.08, "Q5_K": 0.04}[qtype]  # about 2^-bits / sqrt(3) of the range, as for Q4_1 / Q5_1


def test_q6_k_decodes_as_encoded():
    x = _gauss(seed=1)
    d, sc, q = kquants._q6_levels(x.reshape(-1, 256))
    want = (d.astype(np.float32)[:, None, None] * sc.astype(np.float32)[..., None]
            * (q.reshape(-1, 16, 16).astype(np.float32) - 32)).reshape(x.shape)
    got = dequantize(kquants.quantize_q6_k(x), T.Q6_K)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert np.sqrt(((got - x) ** 2).mean() / (x ** 2).mean()) < 0.02


def test_more_bits_fewer_errors():
    """Within one format family the error falls with the bits: Q4_K > Q5_K > Q6_K, and Q4_1 > Q5_0 > Q8_0."""
    x = _gauss(seed=2)

    def err(t):
        return float(np.abs(quant.round_trip(x, t) - x).mean())
    assert err("Q4_K") > err("Q5_K") > err("Q6_K") > 0
    assert err("Q4_1") > err("Q5_0") > err("Q8_0") > 0


def test_round_trip_layouts_and_short_block():
    x = _gauss(4, 64)
    np.testing.assert_array_equal(quant.round_trip(x.T, "Q4_1", in_out=True), quant.round_trip(x, "Q4_1").T)
    ragged = _gauss(3, 40)
    with pytest.raises(quant.QuantError, match="not a multiple"):
        quant.round_trip(ragged, "Q4_1")
    y = quant.round_trip(ragged, "Q4_1", short_block=True)
    np.testing.assert_array_equal(y[:, :32], quant.round_trip(ragged[:, :32], "Q4_1"))
    tail = ragged[:, 32:]  # a short block of 8: its own min and max
    assert np.allclose(y[:, 32:].min(1), tail.min(1), atol=1e-3) and np.allclose(y[:, 32:].max(1), tail.max(1), atol=1e-2)
    with pytest.raises(ValueError, match="multiple of 256"):
        kquants.quantize_q4_k(_gauss(2, 128))


# ------------------------------------------------------------------------------------------ the type table

def _llama_shapes(n_layers=16, d=512, ffn=1536, tied=True):
    shapes = {"model.embed_tokens.weight": (32000, d), "model.norm.weight": (d,)}
    if not tied:
        shapes["lm_head.weight"] = (32000, d)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (d // 4, d),
                       p + "self_attn.v_proj.weight": (d // 4, d), p + "self_attn.o_proj.weight": (d, d),
                       p + "mlp.gate_proj.weight": (ffn, d), p + "mlp.up_proj.weight": (ffn, d),
                       p + "mlp.down_proj.weight": (d, ffn), p + "input_layernorm.weight": (d,)})
    return shapes


def _types(plans):
    return {p.name: p.qtype for p in plans}


def test_use_more_bits_layers():
    assert [i for i in range(16) if quant.use_more_bits(i, 16)] == [0, 1, 4, 7, 10, 13, 14, 15]
    assert [i for i in range(6) if quant.use_more_bits(i, 6)] == [2, 5]


def test_q4_k_m_table_on_a_wide_model():
    t = _types(quant.plan(_llama_shapes(), "Q4_K_M", n_layers=16))
    more = {0, 1, 4, 7, 10, 13, 14, 15}
    for i in range(16):
        p = f"model.layers.{i}."
        want = "Q6_K" if i in more else "Q4_K"
        assert t[p + "self_attn.v_proj.weight"] == want and t[p + "mlp.down_proj.weight"] == want
        assert t[p + "self_attn.q_proj.weight"] == t[p + "mlp.up_proj.weight"] == "Q4_K"
        assert t[p + "input_layernorm.weight"] == "keep"
    assert t["model.embed_tokens.weight"] == "Q6_K"  # tied head: the output rule
    untied = _types(quant.plan(_llama_shapes(tied=False), "Q4_K_M", n_layers=16))
    assert untied["lm_head.weight"] == "Q6_K" and untied["model.embed_tokens.weight"] == "Q4_K"
    q41 = _types(quant.plan(_llama_shapes(), "Q4_1", n_layers=16))
    assert q41["model.embed_tokens.weight"] == "Q6_K"  # 512 is a multiple of 32 and of 256
    assert {v for k, v in q41.items() if "layers" in k and "norm" not in k} == {"Q4_1"}


def test_table_fallbacks_on_zoo_widths():
    """Rows of 128 are not multiples of 256: Q4_K -> Q5_0, Q6_K -> Q8_0 (head: Q8_0 directly); a row of 344
    fits no block of 32: F16 for the K-quant fallbacks, a short last block for Q4_1 (llama.cpp refuses it)."""
    shapes = {"model.embed_tokens.weight": (2048, 128), "model.layers.0.self_attn.v_proj.weight": (128, 128),
              "model.layers.1.self_attn.v_proj.weight": (128, 128), "model.layers.0.mlp.down_proj.weight": (128, 344),
              "model.layers.0.mlp.up_proj.weight": (344, 128), "model.layers.0.mlp.gate.weight": (4, 128)}
    plans = {p.name: p for p in quant.plan(shapes, "Q4_K_M", n_layers=6)}
    assert plans["model.embed_tokens.weight"].qtype == "Q8_0"
    assert plans["model.layers.0.self_attn.v_proj.weight"].qtype == "Q5_0"  # use_more_bits(0, 2) is False
    assert plans["model.layers.1.self_attn.v_proj.weight"].qtype == "Q8_0"  # Q6_K's fallback
    assert plans["model.layers.0.mlp.down_proj.weight"].qtype == "F16"
    assert plans["model.layers.0.mlp.up_proj.weight"].qtype == "Q5_0"
    assert plans["model.layers.0.mlp.gate.weight"].qtype == "keep"  # the MoE router
    q41 = {p.name: p for p in quant.plan(shapes, "Q4_1", n_layers=6)}
    down = q41["model.layers.0.mlp.down_proj.weight"]
    assert (down.qtype, down.short_block) == ("Q4_1", True) and "refuses" in down.why
    assert q41["model.embed_tokens.weight"].qtype == "Q8_0"


def test_table_gpt2_and_mamba_names():
    shapes = {"transformer.wte.weight": (2048, 128), "transformer.wpe.weight": (256, 128),
              "transformer.h.0.attn.c_attn.weight": (128, 384), "transformer.h.0.mlp.c_proj.weight": (512, 128),
              "transformer.h.2.mlp.c_proj.weight": (512, 128),
              "transformer.h.0.mlp.c_fc.weight": (128, 512), "transformer.h.0.attn.c_attn.bias": (384,),
              "backbone.layers.0.mixer.conv1d.weight": (320, 1, 4), "backbone.layers.0.mixer.out_proj.weight": (128, 256)}
    plans = {p.name: p for p in quant.plan(shapes, "Q4_K_M", n_layers=6, model_type="gpt2")}
    assert plans["transformer.h.0.attn.c_attn.weight"].qtype == "Q5_1"  # attn_qkv: Q5_K, row 128 -> Q5_1
    assert plans["transformer.h.0.mlp.c_proj.weight"].row == 512  # [in, out]: GGUF rows run along the first axis
    assert plans["transformer.h.0.mlp.c_proj.weight"].qtype == "Q4_K"  # ffn_down: Q6_K only where use_more_bits
    assert plans["transformer.h.2.mlp.c_proj.weight"].qtype == "Q6_K"
    assert plans["transformer.h.0.mlp.c_fc.weight"].qtype == "Q5_0"
    assert plans["transformer.wpe.weight"].qtype == plans["transformer.h.0.attn.c_attn.bias"].qtype == "keep"
    assert plans["backbone.layers.0.mixer.conv1d.weight"].qtype == "keep"
    assert plans["backbone.layers.0.mixer.out_proj.weight"].qtype == "Q4_K"
    with pytest.raises(quant.QuantError, match="unknown format"):
        quant.plan(shapes, "Q3_K_S", n_layers=6)


@pytest.mark.real
@pytest.mark.parametrize("name,fmt", [("smollm2-135m-instruct", "Q4_1"),
                                      pytest.param("gemma-3-270m", "Q4_K_M", marks=pytest.mark.slow)])
def test_table_reproduces_the_real_gguf_files(name, fmt, tmp_path):
    """Every tensor of the real models' GGUF files has the type the table assigns it."""
    from eeutils.arch import real

    spec = real.real_spec(name)
    try:
        path = real.locate_gguf(spec, tmp_path)
    except real.RealModelNotInstalled:
        pytest.skip(f"{spec.install} (not installed)")
    tensors = gguf.GGUFReader(path).tensors
    shapes = {t.name: tuple(int(s) for s in reversed(t.shape.tolist())) for t in tensors}
    plans = quant.plan(shapes, fmt, n_layers=spec.n_layers)
    file_types = {t.name: t.tensor_type.name for t in tensors}
    wrong = [(p.name, p.qtype, file_types[p.name]) for p in plans
             if (p.qtype == "keep") != (file_types[p.name] in ("F32", "F16")) or
             (p.qtype != "keep" and p.qtype != file_types[p.name])]
    assert not wrong, wrong[:5]
    assert fmt == spec.quantisation


# ------------------------------------------------------------------------------------------ quantised folders

def test_quantised_zoo_model_reads_out(tmp_path):
    folder = quant.quantised_folder("zoo/dense-mid", "Q4_1", cache_dir=tmp_path)
    lm = eeutils.load_model(str(folder))
    ref = eeutils.load_model("zoo/dense-mid")
    ids = ref.encode("The river ran past the old mill, and the miller")
    assert eeutils.check_last_layer(lm, ids) < 1e-4  # the lens' last layer is the quantised model's own logits
    w, w0 = (m.model.model.layers[0].mlp.down_proj.weight.detach().numpy() for m in (lm, ref))
    np.testing.assert_array_equal(w, quant.round_trip(w0, "Q4_1", short_block=True))
    assert 0 < np.abs(w - w0).max() < 0.1
    r = eeutils.readout(lm, [ids], progress=False)
    assert r.n_layers == ref.n_layers and np.abs(r.stats["kl_to_final"][:, -1]).max() < 1e-4
    rows = quant.read_plan(folder)
    assert {row["qtype"] for row in rows} == {"Q4_1", "Q8_0", "keep"}
    from eeutils.notebook.quantisation import plan_summary

    summary, kept = plan_summary(folder), sum(r["n_weights"] for r in rows if r["qtype"] == "keep")
    assert summary["quantised_share"] == pytest.approx(1 - kept / sum(r["n_weights"] for r in rows))
    assert summary["types"].startswith("Q4_1") and 4.5 < summary["bits_per_weight"] < 6.5
    assert all(0 < row["rel_rmse"] < 0.2 for row in rows if row["qtype"] != "keep")


def test_cache_key_follows_the_weights(tmp_path, monkeypatch):
    from safetensors.numpy import load_file, save_file

    src = tmp_path / "m"
    shutil.copytree(quant.source_folder("zoo/dense-mid"), src, ignore=shutil.ignore_patterns("checkpoints"))
    key = quant.quant_key(src, "Q4_K_M")
    assert quant.quant_key(src, "Q4_1") != key
    first = quant.quantised_folder(str(src), "Q4_K_M", cache_dir=tmp_path / "c")
    monkeypatch.setattr(quant, "_write_folder", lambda *a, **k: pytest.fail("an existing folder must be reused"))
    assert quant.quantised_folder(str(src), "Q4_K_M", cache_dir=tmp_path / "c") == first
    state = load_file(str(src / "model.safetensors"))
    state["model.norm.weight"] = state["model.norm.weight"] * np.float16(1.5)
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    assert quant.quant_key(src, "Q4_K_M") != key
    monkeypatch.undo()
    assert quant.quantised_folder(str(src), "Q4_K_M", cache_dir=tmp_path / "c") != first
    with pytest.raises(quant.QuantError, match="not a zoo model"):
        quant.quantised_folder(str(tmp_path / "nowhere"), "Q4_1", cache_dir=tmp_path / "c")


# ------------------------------------------------------------------------------------------ paired shift

def _pair(n_docs=6, per_doc=5, L=4, flip=0.3, seed=0):
    rng = np.random.default_rng(seed)
    n = n_docs * per_doc
    doc, pos = np.repeat(np.arange(n_docs), per_doc), np.tile(np.arange(per_doc), n_docs)
    top1 = rng.integers(0, 3, (n, L + 1))
    top1[:, -1] = 0
    other = top1.copy()
    other[rng.random((n, L + 1)) < flip] = 7
    other[:, -1] = 0
    return make_readout(top1, doc=doc, position=pos), make_readout(other, doc=doc, position=pos)


def test_eas_shift_is_the_paired_difference():
    from eeutils import metrics

    a, b = _pair()
    s = eas_shift(a, b, similarity="top1", alpha=0.5, n_boot=300)
    want = metrics.eas(b, similarity="top1").normalised - metrics.eas(a, similarity="top1").normalised
    assert s["shift"] == pytest.approx(want) and s["lo"] <= s["shift"] <= s["hi"] and s["n_docs"] == 6
    same = eas_shift(a, a, similarity="top1", n_boot=50)
    assert same["shift"] == same["lo"] == same["hi"] == 0.0  # paired: one draw for both, no spread
    frame = layer_shift(a, b, n_boot=200)
    S = (np.asarray(b.stats["top1"]) == 0).mean(0) - (np.asarray(a.stats["top1"]) == 0).mean(0)
    np.testing.assert_allclose(frame["shift"], S)
    assert (frame.lo <= frame["shift"] + 1e-12).all() and frame["shift"].iloc[-1] == 0
    c, _ = _pair(n_docs=5)
    with pytest.raises(ValueError, match="same tokens"):
        eas_shift(a, c, n_boot=10)


def test_scale_table_and_its_reading():
    import pandas as pd
    from eeutils.notebook import quantisation as qn

    table = pd.DataFrame({"model": ["dense-mid", "dense-mid", "dense-mid-s1", "dense-mid-s1"],
                          "format": ["Q4_K_M", "Q4_1"] * 2, "eas_fp16": [0.80, 0.80, 0.76, 0.76],
                          "shift": [-0.002, 0.001, 0.003, -0.0005]})
    scale = qn.scale_table(table, {"real/a": 0.1, "real/b": 0.3}).set_index("quantity").value
    assert scale[qn.FLOOR] == pytest.approx(0.04) and scale[qn.REAL_GAP] == pytest.approx(0.2)
    assert scale[qn.REAL_TO_ZOO] == pytest.approx(0.46)
    assert scale["largest |shift|, Q4_K_M (2 zoo models)"] == pytest.approx(0.003)
    text = qn.implication(qn.scale_table(table, {"real/a": 0.1, "real/b": 0.3}))
    assert "0.003, 0.075 times the seed-noise floor (0.040)" in text and "less than retraining" in text
    assert "is too small to account for" in text and "67 times" in text
    big = table.assign(shift=[0.5, 0, 0, 0])
    text = qn.implication(qn.scale_table(big, {"real/a": 0.1, "real/b": 0.3}))
    assert "more than retraining" in text and "could account for" in text
    assert qn.REAL_GAP not in set(qn.scale_table(table, {"real/b": 0.3}).quantity)  # one real model: no gap row
