"""Declarative zoo recipes: one config builder per family, one row per model.

Every model sees the same corpus, the same tokenizer, the same optimiser and the same
schedule shape (linear warmup + cosine decay). Rows differ only in architecture, size,
seed, and (documented) in the number of tokens: gpt2-mid sees fewer tokens per parameter
(the "previous generation" analogue) and dense-mid-tuned is a short fine-tune of dense-mid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

VOCAB_SIZE = 2048
CONTEXT = 128
MID_LAYERS = 6
MID_WIDTH = 128
HEAD_DIM = 32
# special token ids fixed by the tokenizer trainer (see eeutils.zoo.tokenizer)
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2


def _common(vocab_size: int):
    return dict(vocab_size=vocab_size, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)


def llama_config(d: int, layers: int, vocab_size: int = VOCAB_SIZE, context: int = CONTEXT):
    from transformers import LlamaConfig

    heads = max(1, d // HEAD_DIM)
    return LlamaConfig(
        hidden_size=d, intermediate_size=_swiglu_width(d), num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=context,
        tie_word_embeddings=True, rms_norm_eps=1e-5, initializer_range=0.02, **_common(vocab_size))


def gpt2_config(d: int, layers: int, vocab_size: int = VOCAB_SIZE, context: int = CONTEXT):
    from transformers import GPT2Config

    return GPT2Config(
        n_embd=d, n_layer=layers, n_head=max(1, d // HEAD_DIM), n_inner=4 * d, n_positions=context,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=True, **_common(vocab_size))


def moe_config(d: int, layers: int, vocab_size: int = VOCAB_SIZE, context: int = CONTEXT,
               experts: int = 8, top_k: int = 2):
    """Qwen3-MoE block: each expert is a SwiGLU of width dense_width/top_k, so the ACTIVE
    MLP parameters per token equal the dense model's MLP."""
    from transformers import Qwen3MoeConfig

    heads = max(1, d // HEAD_DIM)
    return Qwen3MoeConfig(
        hidden_size=d, intermediate_size=_swiglu_width(d), moe_intermediate_size=_swiglu_width(d) // top_k,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads, head_dim=HEAD_DIM,
        num_experts=experts, num_experts_per_tok=top_k, norm_topk_prob=True, router_aux_loss_coef=0.01,
        output_router_logits=False, max_position_embeddings=context, tie_word_embeddings=True,
        decoder_sparse_step=1, **_common(vocab_size))


def mamba2_config(d: int, layers: int, vocab_size: int = VOCAB_SIZE, context: int = CONTEXT, expand: int = 2):
    """Mamba2 (SSD), same depth and width as dense-mid. With the usual expand=2 one Mamba2 block
    has about half the parameters of an attention+SwiGLU block (ssm-mid: 0.9M vs 1.45M total);
    expand=4 would match parameters too but costs twice the CPU time of expand=2 here
    (the reference PyTorch scan), so the default build uses expand=2 (documented in docs/ZOO.md)."""
    from transformers import Mamba2Config

    return Mamba2Config(
        hidden_size=d, num_hidden_layers=layers, expand=expand, head_dim=HEAD_DIM,
        num_heads=expand * d // HEAD_DIM, state_size=32, n_groups=1, conv_kernel=4, chunk_size=64,
        initializer_range=0.02, tie_word_embeddings=True, residual_in_fp32=True, **_common(vocab_size))


def bamba_config(d: int, layers: int, vocab_size: int = VOCAB_SIZE, context: int = CONTEXT):
    """Bamba hybrid: Mamba2 mixers with attention at every third layer, SwiGLU MLP in every layer."""
    from transformers import BambaConfig

    heads = max(1, d // HEAD_DIM)
    return BambaConfig(
        hidden_size=d, intermediate_size=_swiglu_width(d), num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=context,
        attn_layer_indices=[i for i in range(layers) if i % 3 == 2],
        mamba_n_heads=2 * d // HEAD_DIM, mamba_d_head=HEAD_DIM, mamba_n_groups=1, mamba_d_state=32,
        mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=64, tie_word_embeddings=True,
        num_logits_to_keep=None, **_common(vocab_size))


def _swiglu_width(d: int) -> int:
    # 8/3 * d rounded to a multiple of 8: SwiGLU with the parameter count of a 4d GELU MLP
    return int(round(8 * d / 3 / 8)) * 8


# arch -> (family: a family of eeutils.arch.table, class, config builder). gpt2-mid is the "previous
# generation" dense analogue (its recipe note says so); cards built before this table said "dense-prevgen".
FAMILIES = {
    "llama": ("dense", "LlamaForCausalLM", llama_config),
    "gpt2": ("dense", "GPT2LMHeadModel", gpt2_config),
    "moe": ("moe", "Qwen3MoeForCausalLM", moe_config),
    "mamba2": ("ssm", "Mamba2ForCausalLM", mamba2_config),
    "bamba": ("hybrid", "BambaForCausalLM", bamba_config),
}


@dataclass(frozen=True)
class Recipe:
    name: str
    arch: str  # key of FAMILIES
    d: int
    layers: int
    steps: int
    seed: int = 0
    batch: int = 8
    lr: float = 3e-3
    warmup: int = 32
    checkpoints: tuple[int, ...] = ()  # steps saved as revisions step-<n>
    finetune_of: str | None = None  # instruction-tune this (already built) model
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return FAMILIES[self.arch][0]

    @property
    def class_name(self) -> str:
        return FAMILIES[self.arch][1]

    def config(self, vocab_size: int = VOCAB_SIZE):
        return FAMILIES[self.arch][2](self.d, self.layers, vocab_size=vocab_size, **self.extra)
