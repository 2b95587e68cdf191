"""Declarative zoo recipes: one config builder per family, one row per model (``ZOO``).

Every model sees the same corpus, the same tokenizer, the same optimiser and the same
schedule shape (linear warmup + cosine decay). Rows differ in architecture, size, seed,
training objective (LayerSkip) and, by the stated rules below, in the number of tokens.
The reasons for every row are in docs/ZOO.md ("Rebuild 2 plan").
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
    data_seed: int = 0  # order of the training windows (train.Batches); only the -s2 seeds change it
    batch: int = 8
    lr: float = 3e-3
    warmup: int = 32
    checkpoints: tuple[int, ...] = ()  # steps saved as revisions step-<n>
    finetune_of: str | None = None  # instruction-tune this (already built) model
    note: str = ""
    extra: dict = field(default_factory=dict)
    layerskip: dict | None = None  # LayerSkip objective settings (eeutils.zoo.layerskip.LayerSkipConfig fields)
    generation: str = "current"  # "previous" for the GPT-2-block analogue
    tokens_rule: str = "main budget"  # which token-budget rule set ``steps`` (docs/ZOO.md)

    @property
    def family(self) -> str:
        return FAMILIES[self.arch][0]

    @property
    def class_name(self) -> str:
        return FAMILIES[self.arch][1]

    def config(self, vocab_size: int = VOCAB_SIZE):
        return FAMILIES[self.arch][2](self.d, self.layers, vocab_size=vocab_size, **self.extra)

    @property
    def depends_on(self) -> str | None:
        """The zoo model that must be finished before this one can start (fine-tunes)."""
        return self.finetune_of


# ------------------------------------------------------------------ the rebuild-2 plan
MAIN_STEPS = 448  # dense-mid's budget: 448 steps x batch 8 x context 128 = 458,752 tokens
MAIN_PARAMS = 1_449_600  # dense-mid's total parameters (tied embeddings counted once)
# dense-mid (and its seed twin) revisions: the init (0), log-spaced early steps (8, 16, 32, 64), the token
# counts of gpt2-mid (112) and dense-small (264) for equal-token comparisons, roughly linear later (192, 352);
# the final step-448 is the main folder, so each seed has 10 revisions (9 checkpoint folders + main).
MID_CHECKPOINTS = (0, 8, 16, 32, 64, 112, 192, 264, 352)
# revisions of dense-mid-s2 (size budget): log-spaced points of the trend that all three seeds ship, and the
# equal-token points 112 and 264
S2_MID_CHECKPOINTS = (8, 32, 112, 264)
# ssm-mid reaches dense-mid's final validation loss (4.46, mean of three seeds) around step 144 (its training
# curve); this revision is the matched-loss point of dense vs SSM (chosen from loss, never from EAS)
SSM_MATCHED_STEP = 144
MOE = {"experts": 4, "top_k": 2}
# Scale sweep at dense-mid's depth (6 blocks), width only: the EAS ceiling and the exit grid depend on depth,
# so equal depth compares like with like, and width + tokens both growing makes the loss order robust.
SCALE_WIDTHS = {"dense-small": 96, "dense-mid": 128, "dense-large": 160}
# Total parameters of the llama rows at depth 6 (vocab 2048, tied embeddings), checked by tests/test_zoo_plan.py
PARAMS = {"dense-small": 861_408, "dense-mid": 1_449_600, "dense-large": 2_165_280}


def tokens_proportional_steps(params: int, multiple: int = 8) -> int:
    """Scale rule: constant tokens per parameter (dense-mid's: 458,752 / 1,449,600 = 0.32),
    so a larger model gets proportionally more tokens (the Chinchilla-style D proportional to N
    rule at this toy budget). Steps rounded to a multiple of 8."""
    return max(multiple, round(MAIN_STEPS * params / MAIN_PARAMS / multiple) * multiple)


# LayerSkip settings for dense-mid-layerskip (reasons and sources: eeutils/zoo/layerskip.py, docs/ZOO.md)
LAYERSKIP = {"p_max": 0.2, "depth_scale": "exp", "time_scale": "exp", "e_scale": 1.0,
             "curriculum": "rotational", "rotation": 2}


def _twins(r: Recipe, twin_checkpoints: tuple | None = None, third: tuple | None = None) -> list:
    """``r`` and its seed twins (a fine-tune's twin tunes the base's twin of the same seed).

    -s1 changes the initialisation only; -s2 (built when ``third`` is given: its checkpoints) changes the
    initialisation **and** the data order, so three seeds span both sources of run-to-run noise.
    """
    from dataclasses import replace

    def seed(k: int, data_seed: int, checkpoints: tuple) -> Recipe:
        return replace(r, name=f"{r.name}-s{k}", seed=k, data_seed=data_seed, checkpoints=checkpoints,
                       finetune_of=f"{r.finetune_of}-s{k}" if r.finetune_of else None)

    rows = [r, seed(1, r.data_seed, r.checkpoints if twin_checkpoints is None else twin_checkpoints)]
    return rows + ([seed(2, 2, third)] if third is not None else [])


def _plan() -> list:
    """The zoo, in build order (longest and most depended-on first, for the two-worker schedule)."""
    L, W = MID_LAYERS, MID_WIDTH
    rows = []
    rows += _twins(Recipe("dense-large", "llama", SCALE_WIDTHS["dense-large"], L,
                          tokens_proportional_steps(PARAMS["dense-large"]), checkpoints=(MAIN_STEPS,),
                          tokens_rule="tokens proportional to parameters",
                          note="scale sweep at fixed depth 6: width 160; revision step-448 has dense-mid's tokens"),
                     twin_checkpoints=())
    # the third seed keeps the revisions of the three-seed trend and the equal-token rows (size budget, docs/ZOO.md)
    rows += _twins(Recipe("dense-mid", "llama", W, L, MAIN_STEPS, checkpoints=MID_CHECKPOINTS),
                   third=S2_MID_CHECKPOINTS)
    rows += _twins(Recipe("dense-mid-layerskip", "llama", W, L, MAIN_STEPS, layerskip=dict(LAYERSKIP),
                          note="dense-mid trained with the LayerSkip recipe (layer dropout + early-exit loss)"), third=())
    rows += _twins(Recipe("hybrid-mid", "bamba", W, L, MAIN_STEPS), third=())
    rows += _twins(Recipe("moe-mid", "moe", W, L, MAIN_STEPS, extra=dict(MOE)), third=())
    rows += _twins(Recipe("ssm-mid", "mamba2", W, L, MAIN_STEPS, checkpoints=(SSM_MATCHED_STEP,)),
                   third=(SSM_MATCHED_STEP,))
    rows += _twins(Recipe("gpt2-mid-full", "gpt2", W, L, MAIN_STEPS, generation="previous",
                          note="previous-generation analogue: GPT-2 block (LayerNorm, GELU, learned positions), "
                               "dense-mid's token budget"), third=())
    # no seed twin (size budget): its noise floor is borrowed from the gpt2-mid-full twins (docs/ZOO.md)
    rows.append(Recipe("gpt2-mid", "gpt2", W, L, MAIN_STEPS // 4, warmup=16, generation="previous",
                       tokens_rule="1/4 of the main budget",
                       note="previous-generation analogue: GPT-2 block (LayerNorm, GELU, learned positions), "
                            "1/4 of the tokens"))
    rows += _twins(Recipe("dense-small", "llama", SCALE_WIDTHS["dense-small"], L,
                          tokens_proportional_steps(PARAMS["dense-small"]),
                          tokens_rule="tokens proportional to parameters",
                          note="scale sweep at fixed depth 6: width 96"), third=())
    rows += _twins(Recipe("dense-mid-tuned", "llama", W, L, 64, batch=16, lr=1e-3, warmup=8, finetune_of="dense-mid",
                          tokens_rule="fine-tune",
                          note="dense-mid fine-tuned on '### Question/### Answer' items (task + verse completion), "
                               "loss on answers only"), third=())
    return rows


ZOO: list = _plan()
RECIPES = {r.name: r for r in ZOO}
