"""Classic logit-lens mistakes, measured on a real model so a notebook can show them.

- applying the final norm twice (or skipping it) at the last layer;
- trusting `output_hidden_states` indexing, which differs between families;
- reading layer 0 of a tied-embedding model (it predicts the input token back);
- reading agreement curves without a random-init baseline.
"""
from __future__ import annotations

import numpy as np
import torch

from ..arch.loading import LoadedModel, wrap_model
from .capture import capture_forward


@torch.inference_mode()
def norm_mistakes(model: LoadedModel, input_ids) -> dict:
    """Max |logits - model logits| at the last layer for: correct lens, norm applied twice, no norm."""
    out, states = capture_forward(model, input_ids)
    own, h = out.logits.float(), states[-1]

    def err(z):
        return float((model.logit_fn(z.float()).to(own.device) - own).abs().max())
    return {
        "correct (norm once)": err(model.head(model.final_norm(h))),
        "norm applied twice": err(model.head(model.final_norm(model.final_norm(h)))),
        "no final norm": err(model.head(h)),
    }


@torch.inference_mode()
def hidden_states_layout(model: LoadedModel, input_ids) -> dict:
    """How this family's `output_hidden_states` lines up with the blocks (compare with the hooks)."""
    out, hooks = capture_forward(model, input_ids, output_hidden_states=True)
    hs = out.hidden_states
    last_is_normed = bool(torch.allclose(hs[-1], model.final_norm(hooks[-1]), atol=1e-5))
    first_is_embedding = bool(torch.allclose(hs[0], hooks[0], atol=1e-6))
    return {"n_hidden_states": len(hs), "n_blocks": model.n_layers, "first_is_embedding": first_is_embedding,
            "last_is_final_normed": last_is_normed}


def tied_embeddings(model: LoadedModel) -> bool:
    emb = model.model.get_input_embeddings().weight
    return emb.data_ptr() == model.head.weight.data_ptr()


def layer0_echo_rate(readout) -> float:
    """Fraction of positions whose layer-0 top-1 is the input token itself (tied embeddings do this)."""
    return float(np.mean(readout["top1"][:, 0] == readout.token))


def random_init_twin(model: LoadedModel, seed: int = 0) -> LoadedModel:
    """Same config and tokenizer, fresh random weights: the baseline for any agreement curve."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    twin = AutoModelForCausalLM.from_config(model.config)
    twin.to(model.dtype)
    return wrap_model(twin, tokenizer=model.tokenizer, name=f"{model.name} (random init)")
