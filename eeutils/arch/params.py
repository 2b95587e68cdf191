"""Parameter counts and MoE shape: read from a model's config in one place."""
from __future__ import annotations

from torch import nn

# config attributes naming the number of routed experts and how many a token uses, in every MoE family
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
TOP_K_KEYS = ("num_experts_per_tok", "moe_topk", "top_k", "experts_per_token")


def _first_positive_int(config, keys):
    return next((getattr(config, a) for a in keys
                 if isinstance(getattr(config, a, None), int) and getattr(config, a) > 0), None)


def moe_shape(config) -> tuple[int, int | None] | None:
    """(n_experts, top_k) of a mixture-of-experts config (top_k None if the config names none); None if dense."""
    n_exp = _first_positive_int(config, EXPERT_COUNT_KEYS)
    if not n_exp:
        return None
    return n_exp, _first_positive_int(config, TOP_K_KEYS)


def active_fraction(config) -> float:
    """Share of a routed expert's parameters a token uses: top_k / n_experts (1.0 for dense models)."""
    shape = moe_shape(config)
    return shape[1] / shape[0] if shape and shape[1] else 1.0


def is_expert_param(name: str) -> bool:
    """A parameter of a routed expert (a module path with an "experts" component)."""
    return "experts" in name.split(".")


def hidden_size(config) -> int | None:
    for attr in ("hidden_size", "n_embd", "d_model"):
        v = getattr(config, attr, None)
        if isinstance(v, int):
            return v
    return None


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, active) parameters; for MoE, routed experts count top_k / n_experts of their size."""
    total = sum(p.numel() for p in model.parameters())
    shape = moe_shape(model.config)
    if not shape or not shape[1]:
        return total, total
    n_exp, top_k = shape
    routed = sum(p.numel() for n, p in model.named_parameters() if is_expert_param(n))
    return total, int(total - routed + routed * top_k / n_exp)
