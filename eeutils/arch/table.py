"""Architecture table: every fact the kit knows about a model family, one `ArchSpec` row per family.

Each supported family is one row of `ADAPTERS`, keyed by `config.model_type`.
A row names module paths (first match wins, so one row can cover renamed
attributes across transformers versions), the transforms the model applies
to its logits after the head, and what the early-exit decoder needs: its driver
kind (attention / ssm / hybrid, or none), whether an SSM mixer continues a
multi-token chunk from its cached state, the K/V projection names and an
embedding multiplier. Anything unlisted goes through `discover`, which
finds the longest repeated-block ModuleList, the output embeddings and the
norm just before them (`eeutils.arch.discovery`), and keeps the combination that reproduces the
model's own logits on a short input.

To add a family::

    from eeutils.arch import ArchSpec, register_adapter
    register_adapter(ArchSpec(model_types=("my_model",), family="dense",
                              blocks=("model.layers",), final_norm=("model.norm",)))

The tests build a tiny random model of every row (tests/tiny_models.py) and check that the readout
at the last layer reproduces the model's logits; `families()` and `model_types()` list the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn


FAMILIES = ("dense", "moe", "ssm", "hybrid")
DRIVERS = ("attention", "ssm", "hybrid")  # how the early-exit decoder runs a family's blocks (see eeutils.decoding)
# projections a block runs to write its K/V entries (input norm aside): q, k, v and fused variants
KV_NAMES = ("q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "q_a_proj", "q_b_proj",
            "kv_a_proj_with_mqa", "kv_b_proj", "Wqkv", "in_proj_qkv")
LOGIT_OPS = ("mul", "div", "softcap")


@dataclass(frozen=True)
class ArchSpec:
    """One architecture row.

    blocks, final_norm, head: candidate dotted paths from the *ForCausalLM module; final_norm=() for a
    post-norm model with no norm before the head. projection: a module between the final norm and the
    head (OPT's project_out when word_embed_proj_dim != hidden_size), () for none.
    logit_ops: what the model does to the head's output, in order, each op a
    (kind, config attribute) pair: ("mul", "logit_scale"), ("div", "logits_scaling"),
    ("softcap", "final_logit_softcapping"). Ops whose attribute is None are skipped.
    A block's output is its residual stream: a tensor, or the first element of a tuple.
    driver: how the early-exit decoder runs the blocks: "attention", "ssm", "hybrid" (attention and
    SSM layers), or None (not driven; the readout and the simulation still work). Default: "attention"
    for dense and moe rows, None otherwise. ssm_chunk_continues: the SSM mixer's multi-token path
    continues from the cached recurrent state (Mamba2) rather than restarting from zero (Mamba-1).
    kv_names: parameter names of the projections that write K/V (the decoder's cost model).
    embed_scale: config attribute the embeddings are multiplied by (Granite's embedding_multiplier).
    """

    model_types: tuple[str, ...]
    family: str
    blocks: tuple[str, ...] = ("model.layers",)
    final_norm: tuple[str, ...] = ("model.norm",)
    head: tuple[str, ...] = ("lm_head",)
    logit_ops: tuple[tuple[str, str], ...] = ()
    projection: tuple[str, ...] = ()
    notes: str = ""
    driver: str | None = "auto"
    ssm_chunk_continues: bool = False
    kv_names: tuple[str, ...] = KV_NAMES
    embed_scale: str | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.driver == "auto":
            object.__setattr__(self, "driver", "attention" if self.family in ("dense", "moe") else None)
        if self.driver is not None and self.driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS} or None, got {self.driver!r}")
        bad = [k for k, _ in self.logit_ops if k not in LOGIT_OPS]
        if bad:
            raise ValueError(f"unknown logit op(s) {bad}; known: {LOGIT_OPS}")


_LLAMA_LIKE = dict(blocks=("model.layers",), final_norm=("model.norm",), head=("lm_head",))
_SOFTCAP = (("softcap", "final_logit_softcapping"),)

ADAPTERS: dict[str, ArchSpec] = {}


def register_adapter(spec: ArchSpec, overwrite: bool = False) -> ArchSpec:
    """Add a row to the table (for every model_type it lists)."""
    for mt in spec.model_types:
        if mt in ADAPTERS and not overwrite:
            raise ValueError(f"an adapter for model_type {mt!r} exists; pass overwrite=True to replace it")
        ADAPTERS[mt] = spec
    return spec


_GRANITE = dict(logit_ops=(("div", "logits_scaling"),), embed_scale="embedding_multiplier")

for _spec in [
    ArchSpec(("gpt2",), "dense", blocks=("transformer.h",), final_norm=("transformer.ln_f",)),
    ArchSpec(("gpt_neox",), "dense", blocks=("gpt_neox.layers",), final_norm=("gpt_neox.final_layer_norm",),
             head=("lm_head", "embed_out"), notes="Pythia"),
    ArchSpec(("llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "olmo3", "phi3", "smollm3"), "dense", **_LLAMA_LIKE),
    ArchSpec(("gemma",), "dense", **_LLAMA_LIKE, notes="embeddings scaled by sqrt(d); norm gain is (1 + w)"),
    ArchSpec(("gemma2", "gemma3_text"), "dense", **_LLAMA_LIKE, logit_ops=_SOFTCAP),
    ArchSpec(("cohere", "cohere2"), "dense", **_LLAMA_LIKE, logit_ops=(("mul", "logit_scale"),)),
    ArchSpec(("granite",), "dense", **_LLAMA_LIKE, **_GRANITE),
    ArchSpec(("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v2", "deepseek_v3",
              "phimoe"), "moe", **_LLAMA_LIKE),
    ArchSpec(("granitemoe",), "moe", **_LLAMA_LIKE, **_GRANITE),
    ArchSpec(("mamba", "falcon_mamba"), "ssm", blocks=("backbone.layers",), final_norm=("backbone.norm_f",),
             driver="ssm"),
    ArchSpec(("mamba2",), "ssm", blocks=("backbone.layers",), final_norm=("backbone.norm_f",), driver="ssm",
             ssm_chunk_continues=True),
    ArchSpec(("jamba",), "hybrid", blocks=("model.layers",), final_norm=("model.final_layernorm", "model.norm"),
             driver="hybrid"),
    ArchSpec(("bamba",), "hybrid", blocks=("model.layers",), final_norm=("model.final_layernorm", "model.norm"),
             driver="hybrid", ssm_chunk_continues=True),
    ArchSpec(("falcon_h1",), "hybrid", blocks=("model.layers",), final_norm=("model.final_layernorm",),
             logit_ops=(("mul", "lm_head_multiplier"),)),
    ArchSpec(("granitemoehybrid",), "hybrid", **_LLAMA_LIKE, **_GRANITE),
    ArchSpec(("nemotron_h",), "hybrid", blocks=("backbone.layers", "model.layers"),
             final_norm=("backbone.norm_f", "model.norm_f")),
]:
    register_adapter(_spec)


def model_types(family: str | None = None, driver: str | None = None) -> list[str]:
    """model_types of the table, optionally of one family and/or one decoder driver kind."""
    return sorted(mt for mt, spec in ADAPTERS.items()
                  if (family is None or spec.family == family) and (driver is None or spec.driver == driver))


def families() -> dict[str, str]:
    """{model_type: family} for every row of the table."""
    return {mt: spec.family for mt, spec in sorted(ADAPTERS.items())}


class AdapterError(RuntimeError):
    """The kit cannot find a model's blocks, final norm or head."""


def get_path(root: nn.Module, dotted: str):
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


@dataclass
class Resolved:
    """An adapter applied to one model instance."""

    spec: ArchSpec
    blocks: nn.ModuleList
    final_norm: nn.Module
    head: nn.Module
    paths: dict = field(default_factory=dict)
    discovered: bool = False


def how_to_register(model_type: str) -> str:
    return (
        f"To support model_type {model_type!r}, add a row:\n"
        "    from eeutils.arch import ArchSpec, register_adapter\n"
        f"    register_adapter(ArchSpec(model_types=({model_type!r},), family='dense',\n"
        "        blocks=('model.layers',), final_norm=('model.norm',), head=('lm_head',)))\n"
        "with the dotted paths of its repeated blocks, the norm applied before the head, and the head."
    )


def apply_logit_ops(logits: torch.Tensor, ops, inplace: bool = False) -> torch.Tensor:
    """The model's post-head transforms, ops = ((kind, value), ...), on fp32 logits (in place if asked)."""
    for kind, v in ops:
        if kind == "mul":
            logits = logits.mul_(v) if inplace else logits * v
        elif kind == "div":
            logits = logits.div_(v) if inplace else logits / v
        elif kind == "softcap":
            logits = logits.div_(v).tanh_().mul_(v) if inplace else torch.tanh(logits / v) * v
        else:
            raise ValueError(f"unknown logit op {kind!r}")
    return logits


def logit_op_values(spec: ArchSpec, config) -> tuple[tuple[str, float], ...]:
    """The row's logit ops with their values read from the config (ops whose attribute is None dropped)."""
    ops = []
    for kind, attr in spec.logit_ops:
        value = getattr(config, attr, None)
        if value is None and hasattr(config, "get_text_config"):
            value = getattr(config.get_text_config(), attr, None)
        if value is None:
            continue
        ops.append((kind, float(value)))
    return tuple(ops)


def make_logit_fn(spec: ArchSpec, config):
    """A function applying the model's post-head transforms to fp32 logits (`apply_logit_ops`). The transforms
    themselves, as data, are `logit_op_values` (what `LoadedModel.logit_ops` and the lenses hold)."""
    return ops_fn(logit_op_values(spec, config))


def ops_fn(ops):
    """The function z -> `apply_logit_ops`(z, ops) for fixed ops ((kind, value), ...)."""
    return partial(apply_logit_ops, ops=tuple(ops))
