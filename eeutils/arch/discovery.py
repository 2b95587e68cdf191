"""Applying the architecture table to a model (`resolve`), and auto-discovery of a model without a row,
verified against the model's own logits (`discover`).

Candidates: the blocks are the longest ModuleList of identical modules that is not nested inside another
(so a layer's list of experts is never taken for the layers); the final norm is a norm-like child of the
blocks' parent, or none (post-norm models); a projection between the norm and the head is a Linear child
whose output width is the head's input width (OPT's project_out); the logit transforms are those of the
table's rows whose config attribute this model sets (soft-capping, scaling). One forward pass on a short
input picks the first combination whose lens at the last layer reproduces the model's logits; if none
does, or a part is missing, AdapterError says what was found and what is missing.
"""
from __future__ import annotations

import itertools

import torch
from torch import nn

from .params import moe_shape
from .table import (ADAPTERS, AdapterError, ArchSpec, Resolved, apply_logit_ops, get_path, how_to_register,
                    logit_op_values)

VERIFY_TOKENS = 8
_NORM_WORDS = ("norm", "ln_f", "ln_out")


def _first(root: nn.Module, paths) -> tuple[str, nn.Module] | tuple[None, None]:
    """The first of `paths` that exists in `root`: (path, module), or (None, None)."""
    for p in paths:
        m = get_path(root, p)
        if m is not None:
            return p, m
    return None, None


def _guess_family(model: nn.Module) -> str:
    """The family of a model without a table row, from its module names and config: hybrid, ssm, moe or dense."""
    cfg = getattr(model, "config", None)
    names = {type(m).__name__.lower() for m in model.modules()}
    has_ssm = any("mamba" in n or "mixer" in n and "ssm" in n for n in names)
    has_attn = any("attention" in n for n in names)
    n_experts = moe_shape(cfg) if cfg is not None else None
    if has_ssm and has_attn:
        return "hybrid"
    if has_ssm:
        return "ssm"
    return "moe" if n_experts else "dense"


def _block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Non-empty ModuleLists of one module class, outermost first, nested lists (experts) dropped."""
    lists = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(x) for x in m}) == 1]
    top = [(n, m) for n, m in lists if not any(n.startswith(o + ".") for o, _ in lists if o != n)]
    return sorted(top, key=lambda nm: -len(nm[1]))


def _children(model: nn.Module, prefix: str):
    parent = model.get_submodule(prefix) if prefix else model
    return [(f"{prefix}.{n}" if prefix else n, m) for n, m in parent.named_children()]


def _norm_candidates(model, prefix):
    found = [(n, m) for n, m in _children(model, prefix)
             if any(w in n.rsplit(".", 1)[-1].lower() for w in _NORM_WORDS) or "norm" in type(m).__name__.lower()]
    return list(reversed(found)) + [("", None)]  # the last-registered first; "" = no final norm (post-norm)


def _projection_candidates(model, prefix, head):
    width = getattr(head, "in_features", None) or getattr(getattr(head, "weight", None), "shape", (0, 0))[1]
    found = [(n, m) for n, m in _children(model, prefix) + _children(model, "")
             if isinstance(m, nn.Linear) and m is not head and m.out_features == width]
    return [("", None)] + found


def _op_candidates(config) -> list[tuple[tuple[str, str], ...]]:
    """No transform first, then the table's known transforms that this config sets."""
    known = sorted({op for spec in ADAPTERS.values() for op in spec.logit_ops})
    present = tuple(op for op in known if logit_op_values(ArchSpec(("x",), "dense", logit_ops=(op,)), config))
    return [()] + ([present] if present else [])


def _last_block_state(model, blocks, vocab: int):
    """(the model's own logits, the last block's output) on a short input."""
    state = {}

    def hook(module, args, output):
        h = output[0] if isinstance(output, (tuple, list)) else output
        state["h"] = h if isinstance(h, torch.Tensor) else getattr(output, "last_hidden_state", None)

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    device = emb.weight.device if emb is not None else next(model.parameters()).device
    ids = (torch.arange(VERIFY_TOKENS) * 7 + 3).remainder(max(vocab, 1))[None].to(device)
    handle = blocks[-1].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits.float(), state.get("h")


def _error(model_type, found: dict, missing: list, extra: str = "") -> AdapterError:
    parts = ", ".join(f"{k}={v}" for k, v in found.items()) or "nothing usable"
    return AdapterError(f"no adapter row for model_type {model_type!r}; auto-discovery found {parts}; missing: "
                        f"{', '.join(missing)}.{extra}\n" + how_to_register(model_type))


def discover(model: nn.Module) -> Resolved:
    """A verified adapter for a model without a table row (see the module docstring), else AdapterError."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "unknown")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    lists = _block_lists(model)
    found = {}
    if lists:
        found["blocks"] = f"{lists[0][0]} ({len(lists[0][1])} x {type(lists[0][1][0]).__name__})"
    if head is not None:
        found["head"] = next((n for n, m in model.named_modules() if m is head), "?")
    if not lists or head is None:
        missing = [w for w, ok in (("a list of repeated blocks", lists), ("an output head (get_output_embeddings)",
                                                                           head is not None)) if not ok]
        raise _error(model_type, found, missing)
    blocks_path, blocks = lists[0]
    prefix = blocks_path.rsplit(".", 1)[0] if "." in blocks_path else ""
    norms, projs, op_sets = _norm_candidates(model, prefix), _projection_candidates(model, prefix, head), \
        _op_candidates(config)
    found["final norms"] = [n or "(none)" for n, _ in norms]
    if len(projs) > 1:
        found["projections"] = [n for n, _ in projs[1:]]
    vocab = int(getattr(head, "out_features", 0) or head.weight.shape[0])
    try:
        logits, h = _last_block_state(model, blocks, vocab)
    except Exception as err:  # noqa: BLE001 - the model itself could not run: say so
        raise _error(model_type, found, ["a forward pass to verify them"],
                     f" Running the model on {VERIFY_TOKENS} tokens failed: {type(err).__name__}: {err}") from err
    if h is None:
        raise _error(model_type, found, [f"a tensor output of {blocks_path}[-1] (the residual stream)"])
    scale = max(1.0, float(logits.abs().max()))
    tol = (1e-3 if logits.dtype == torch.float32 and h.dtype == torch.float32 else 3e-2) * scale
    errors = []
    for (n_path, norm), (p_path, proj), ops in itertools.product(norms, projs, op_sets):
        lens = nn.Sequential(*[m for m in (norm, proj) if m is not None]) if norm or proj else nn.Identity()
        try:
            with torch.inference_mode():
                z = apply_logit_ops(head(lens(h)).float(), logit_op_values(
                    ArchSpec(("x",), "dense", logit_ops=ops), config))
            err = float((z - logits).abs().max())
        except RuntimeError:  # shapes that do not fit: not this combination
            continue
        errors.append(err)
        if err <= tol:
            spec = ArchSpec((model_type,), _guess_family(model), blocks=(blocks_path,),
                            final_norm=(n_path,) if n_path else (), projection=(p_path,) if p_path else (),
                            head=(found["head"],), logit_ops=ops, notes="auto-discovered, verified")
            paths = {"blocks": blocks_path, "final_norm": n_path, "projection": p_path, "head": found["head"]}
            lens_module = lens if norm is not None and proj is not None else (norm or proj or nn.Identity())
            return Resolved(spec, blocks, lens_module, head, paths, discovered=True)
    hint = " Its config has is_decoder=False: it looks like an encoder, not a causal LM." \
        if getattr(config, "is_decoder", None) is False else ""
    best = f"{min(errors):.3g}" if errors else "no combination fits the head's shape"
    raise _error(model_type, found, ["a final norm / projection / logit transform that reproduces the model's "
                                     f"logits (smallest difference {best}, tolerance {tol:.3g})"], hint)


def resolve(model: nn.Module, spec: ArchSpec | None = None) -> Resolved:
    """Apply the table row for `model` (or `spec`), falling back to verified auto-discovery
    (`eeutils.arch.discovery`)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = spec or ADAPTERS.get(model_type)
    if spec is None:
        return discover(model)
    bp, blocks = _first(model, spec.blocks)
    np_, norm = _first(model, spec.final_norm) if spec.final_norm else ("", nn.Identity())
    pp, proj = _first(model, spec.projection) if spec.projection else ("", None)
    hp, head = _first(model, spec.head)
    parts = (("blocks", blocks), ("final_norm", norm), ("head", head)) + \
        ((("projection", proj),) if spec.projection else ())
    missing = [n for n, m in parts if m is None]
    if missing:
        raise AdapterError(
            f"adapter row for {model_type!r} does not match this model: {missing} not found "
            f"(tried {spec.blocks}, {spec.final_norm}, {spec.projection}, {spec.head}).\n" + how_to_register(model_type)
        )
    lens = norm if proj is None else nn.Sequential(norm, proj)
    return Resolved(spec, blocks, lens, head, {"blocks": bp, "final_norm": np_, "projection": pp, "head": hp})
