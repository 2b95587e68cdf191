"""Tiny random-init models of every adapter row, built from configs (offline), with non-trivial norms.

The model types and their families come from the ArchSpec table (`eeutils.arch.ADAPTERS`): a new row
needs a tiny config here (or an entry in NO_TINY_CONFIG saying why not), which `test_readout` and
`test_decoding` then pick up.

Norm gains and biases are perturbed so that applying a final norm twice (or not at
all) changes the logits: a random-init model's identity norm would hide that bug.
"""
from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from eeutils.arch import ADAPTERS

VOCAB = 97
_ATTN = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, vocab_size=VOCAB)
_MOE = dict(_ATTN, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24)

CONFIGS: dict[str, dict] = {
    "gpt2": dict(n_embd=32, n_layer=3, n_head=4, n_positions=64, vocab_size=VOCAB),
    "gpt_neox": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                     max_position_embeddings=64, vocab_size=VOCAB),
    "llama": _ATTN, "mistral": _ATTN, "qwen2": _ATTN, "qwen3": dict(_ATTN, head_dim=8),
    "olmo": _ATTN, "olmo2": _ATTN, "phi3": dict(_ATTN, pad_token_id=0),
    "gemma": dict(_ATTN, head_dim=8), "gemma2": dict(_ATTN, head_dim=8, final_logit_softcapping=3.0),
    "gemma3_text": dict(_ATTN, head_dim=8, final_logit_softcapping=3.0),
    "cohere": dict(_ATTN, logit_scale=0.5), "granite": dict(_ATTN, logits_scaling=4.0),
    "mixtral": dict(_ATTN, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(_MOE, shared_expert_intermediate_size=24),
    "qwen3_moe": dict(_MOE, head_dim=8),
    "olmoe": dict(_MOE),
    "gpt_oss": dict(_ATTN, num_local_experts=4, num_experts_per_tok=2, head_dim=8, sliding_window=8),
    "deepseek_v3": dict(_ATTN, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=24,
                        n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1,
                        kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
                        v_head_dim=8, num_key_value_heads=4),
    "mamba": dict(hidden_size=32, state_size=8, num_hidden_layers=3, vocab_size=VOCAB, expand=2),
    "mamba2": dict(hidden_size=32, state_size=8, num_hidden_layers=3, vocab_size=VOCAB, expand=2,
                   num_heads=8, head_dim=8, n_groups=1, chunk_size=16),
    "falcon_mamba": dict(hidden_size=32, state_size=8, num_hidden_layers=3, vocab_size=VOCAB, expand=2),
    "jamba": dict(_ATTN, num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
                  expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=8,
                  mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=4, use_mamba_kernels=False),
    "bamba": dict(_ATTN, num_hidden_layers=4, attn_layer_indices=[1, 3], mamba_n_heads=8, mamba_d_head=8,
                  mamba_n_groups=1, mamba_d_state=8, mamba_chunk_size=16, mamba_expand=2),
}

# table rows without a tiny model here, and why
NO_TINY_CONFIG = {
    "olmo3": "same code path as olmo2; needs a newer transformers config class",
    "smollm3": "a Llama-like row; config needs no_rope_layers",
    "cohere2": "same row as cohere", "deepseek_v2": "same row as deepseek_v3", "phimoe": "same row as mixtral",
    "granitemoe": "covered by granite (logit scaling, embedding multiplier) and the MoE rows",
    "falcon_h1": "hybrid without a decoder driver; large minimal config",
    "granitemoehybrid": "hybrid without a decoder driver; large minimal config",
    "nemotron_h": "hybrid without a decoder driver; large minimal config",
}
# model_type -> family, read from the table (the tests check that loading resolves to that row)
FAMILY = {mt: ADAPTERS[mt].family for mt in CONFIGS}


def make_config(model_type: str):
    return AutoConfig.for_model(model_type, **CONFIGS[model_type])


def perturb_norms(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or ".ln_" in name or name.startswith("ln_") or "layernorm" in name.lower():
                p.add_(0.5 * torch.randn(p.shape, generator=g))


def make_model(model_type: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(model_type))
    perturb_norms(model, seed)
    return model.eval()
