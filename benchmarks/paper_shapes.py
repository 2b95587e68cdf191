"""The paper's models as transformers configs in their published shapes, plus scaled-down "tiny" twins.

One row per model: the transformers config class, the published shape (copied by hand from each model's
`config.json` on the Hugging Face hub, named in `source`), and the overrides that make the tiny twin (same
class and code path, same family features: GQA ratio, MoE routing with top-k < experts, GPT-OSS's
alternating sliding/full attention with sinks, Mamba2's grouped SSD scan over several chunks).
Nothing is downloaded: `make_config` builds the config from this table.

`build_model` creates the model directly on the target device in the target dtype with transformers' own
weight init switched off, then fills the weights with a fast deterministic init (`fast_init`); buffers such
as RoPE frequencies are computed by the modules' constructors as usual.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

_YARN_GPT_OSS = {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                 "truncate": False, "original_max_position_embeddings": 4096}


@dataclass(frozen=True)
class PaperModel:
    """One of the paper's models: its config class, published shape, source, and tiny-twin overrides."""

    name: str
    config_class: str
    family: str
    source: str
    shape: dict
    tiny: dict = field(default_factory=dict)


PAPER_MODELS: dict[str, PaperModel] = {m.name: m for m in [
    PaperModel(
        "llama2-7b", "LlamaConfig", "dense", "meta-llama/Llama-2-7b-hf config.json",
        dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
             rope_theta=10000.0, tie_word_embeddings=False),
        dict(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=4)),
    PaperModel(
        "llama3-8b", "LlamaConfig", "dense", "meta-llama/Meta-Llama-3-8B config.json",
        dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5,
             rope_theta=500000.0, tie_word_embeddings=False),
        dict(vocab_size=1024, hidden_size=64, intermediate_size=224, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=1)),
    PaperModel(
        "qwen2-7b", "Qwen2Config", "dense", "Qwen/Qwen2-7B config.json",
        dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
             num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=131072, rms_norm_eps=1e-6,
             rope_theta=1000000.0, use_sliding_window=False, tie_word_embeddings=False),
        dict(vocab_size=1024, hidden_size=56, intermediate_size=296, num_hidden_layers=3, num_attention_heads=7,
             num_key_value_heads=1)),
    PaperModel(
        "qwen3-8b", "Qwen3Config", "dense", "Qwen/Qwen3-8B config.json",
        dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
             num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
             rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False, tie_word_embeddings=False),
        dict(vocab_size=1024, hidden_size=64, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=1, head_dim=16)),
    PaperModel(
        "gpt-oss-20b", "GptOssConfig", "moe", "openai/gpt-oss-20b config.json",
        dict(vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=24,
             num_attention_heads=64, num_key_value_heads=8, head_dim=64, num_local_experts=32,
             num_experts_per_tok=4, sliding_window=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
             rope_parameters=_YARN_GPT_OSS, attention_bias=True, swiglu_limit=7.0, tie_word_embeddings=False),
        dict(vocab_size=1024, hidden_size=64, intermediate_size=64, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=8)),
    PaperModel(
        "qwen3-30b-a3b", "Qwen3MoeConfig", "moe", "Qwen/Qwen3-30B-A3B config.json",
        dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
             num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
             num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
             max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False,
             tie_word_embeddings=False),
        dict(vocab_size=1024, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
             num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16, num_experts=8,
             num_experts_per_tok=2)),
    PaperModel(
        "mamba2-7b", "Mamba2Config", "ssm", "mistralai/Mamba-Codestral-7B-v0.1 config.json",
        dict(vocab_size=32768, hidden_size=4096, num_hidden_layers=64, num_heads=128, head_dim=64, expand=2,
             n_groups=8, state_size=128, conv_kernel=4, chunk_size=256, layer_norm_epsilon=1e-5,
             residual_in_fp32=True, use_bias=False, use_conv_bias=True, time_step_limit=(0.0, float("inf")),
             tie_word_embeddings=False),
        dict(vocab_size=512, hidden_size=64, num_hidden_layers=3, num_heads=8, head_dim=16, n_groups=2,
             state_size=16, chunk_size=16)),
]}


def resolve_names(spec: str) -> list[str]:
    """'all' or a comma-separated list of names from PAPER_MODELS, checked."""
    names = list(PAPER_MODELS) if spec.strip() in ("", "all") else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in PAPER_MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from: {', '.join(PAPER_MODELS)} (or 'all')")
    return names


def make_config(name: str, tiny: bool = False):
    """The transformers config of `name` in its published shape (or its tiny twin)."""
    import transformers

    m = PAPER_MODELS[name]
    kwargs = dict(m.shape)
    if tiny:
        kwargs.update(m.tiny)
    return getattr(transformers, m.config_class)(**kwargs)


def _no_init():
    """transformers' context that turns its (and torch's) weight init into no-ops, across versions."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


@torch.no_grad()
def fast_init(model, seed: int = 0, std: float = 0.02) -> None:
    """Deterministic weights, generated on the model's device: N(0, std) for matrices, ones for norm gains,
    zeros for biases and attention sinks, and Mamba2's S4D-real A (A_log = log 1..H), D = 1, dt = 0.01."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "A_log":
            p.copy_(torch.log(torch.arange(1, p.numel() + 1, device=device, dtype=torch.float32)).view_as(p))
        elif leaf == "D":
            p.fill_(1.0)
        elif leaf == "dt_bias":
            p.fill_(math.log(math.expm1(0.01)))  # softplus(dt_bias) = 0.01
        elif p.dim() == 1 and "norm" in name:
            p.fill_(1.0)
        elif "bias" in leaf or leaf == "sinks":
            p.zero_()
        else:
            p.normal_(0.0, std, generator=gen)


def build_model(name: str, *, tiny: bool, device: str, dtype: torch.dtype, seed: int = 0,
                experts_implementation: str | None = None, attn_implementation: str | None = None):
    """The random-init model, built on `device` in `dtype` without a CPU copy or transformers' slow init."""
    from transformers import AutoModelForCausalLM

    cfg = make_config(name, tiny)
    kwargs = {"dtype": dtype}
    if experts_implementation and PAPER_MODELS[name].family == "moe":
        kwargs["experts_implementation"] = experts_implementation
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with torch.device(device), _no_init():
        model = AutoModelForCausalLM.from_config(cfg, **kwargs)
    fast_init(model, seed)
    return model.eval()


def count_matmul_params(model) -> tuple[int, int]:
    """(total, active) multiply-accumulate weights per token in the blocks: parameters with >= 2 dims (matrices,
    fused expert tensors, depthwise conv kernels); routed-expert tensors count top_k / n_experts of their size."""
    cfg = model.config
    n_exp = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
    top_k = getattr(cfg, "num_experts_per_tok", None)
    total = active = 0
    blocks = model.base_model.layers
    for name, p in blocks.named_parameters():
        if p.dim() < 2:
            continue
        n = p.numel()
        total += n
        routed = n_exp and top_k and "experts" in name.split(".")
        active += n * top_k / n_exp if routed else n
    return total, int(active)


def shape_facts(cfg) -> dict:
    """What the FLOP count needs from a config: layers, width, vocab, attention layers (query width, window)
    and, for Mamba2, the SSD scan's sizes."""
    L, d, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    facts = {"n_layers": L, "d_model": d, "vocab": V, "attn": [], "ssd": None}
    if cfg.model_type == "mamba2":
        facts["ssd"] = {"layers": L, "heads": cfg.num_heads, "head_dim": cfg.head_dim, "groups": cfg.n_groups,
                        "state": cfg.state_size, "chunk": cfg.chunk_size}
        return facts
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    width = cfg.num_attention_heads * head_dim
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * L
    for t in types:
        window = cfg.sliding_window if t == "sliding_attention" else None
        facts["attn"].append((width, window))
    return facts
