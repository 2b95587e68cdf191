"""Per-family drivers of the early-exit decoder: embed, run one block on a run of consecutive positions,
write K/V only. Which driver a model gets is its `ArchSpec.driver` (attention, ssm or hybrid)."""
from __future__ import annotations

import inspect

import torch

from ..arch.loading import LoadedModel
from ..arch.table import ADAPTERS, model_types
from .result import DecodingUnsupported


class _KVWritten(Exception):
    """Raised by the patched cache.update once a block has written its key/value entries."""


def supported_model_types() -> list[str]:
    """model_types the decoder drives: the table rows with a driver kind (attention, ssm, hybrid).
    (Auto-discovered dense/moe models are tried too; the never-exit check in the tests is the proof.)"""
    return sorted(mt for mt, spec in ADAPTERS.items() if spec.driver is not None)


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    h = getattr(out, "hidden_states", None)
    return h if isinstance(h, torch.Tensor) else out[0]


class Driver:
    is_ssm: list[bool]

    def __init__(self, lm: LoadedModel):
        self.lm = lm
        self.model = lm.model
        self.config = lm.model.config
        self.blocks = lm.blocks
        self.device = self.model.get_input_embeddings().weight.device
        self._memo: dict = {}

    def new_cache(self):
        from transformers import DynamicCache
        return DynamicCache(config=self.config)

    def begin_step(self):
        self._memo.clear()

    def embed(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        raise NotImplementedError

    def run_block(self, i: int, h: torch.Tensor, start: int, cache) -> torch.Tensor:
        raise NotImplementedError

    def write_kv(self, i: int, h: torch.Tensor, start: int, cache) -> None:
        """Write position(s) start.. of block i's cache from the (copied) input h, without finishing the block."""
        orig = cache.update

        def update(*args, **kwargs):
            orig(*args, **kwargs)
            raise _KVWritten

        cache.update = update  # instance attribute shadows the method for this call only
        try:
            self.run_block(i, h, start, cache)
        except _KVWritten:
            return
        finally:
            del cache.update
        raise RuntimeError(f"block {i + 1} finished without writing to the cache: cannot propagate K/V into it")


_LINEAR_TYPES = ("linear_attention", "mamba")


class _AttentionDriver(Driver):
    """Llama-like (dense and MoE), GPT-2, GPT-NeoX and attention/SSM hybrids (jamba, bamba): embeddings,
    rotary or learned positions, one causal mask per attention layer type (none for SSM layers), blocks
    called the way the model's own forward calls them."""

    def __init__(self, lm: LoadedModel):
        super().__init__(lm)
        mt = self.config.model_type
        self.inner = self.model.base_model
        self.embed_tokens = self.model.get_input_embeddings()
        self.wpe = getattr(self.inner, "wpe", None)  # GPT-2 learned positions
        spec = lm.resolved.spec
        self.embed_scale = getattr(self.config, spec.embed_scale, None) if spec.embed_scale else None
        self.rotary = getattr(self.inner, "rotary_emb", None)
        self.rotary_by_type = self.rotary is not None and "layer_type" in inspect.signature(
            self.rotary.forward).parameters
        n = len(self.blocks)
        types = getattr(self.config, "layer_types", None) or getattr(self.config, "layers_block_type", None)
        if types is None:
            sw = getattr(self.config, "sliding_window", None)
            types = ["sliding_attention" if sw else "full_attention"] * n
        types = [{"attention": "full_attention", "mamba": "linear_attention"}.get(t, t) for t in list(types)[:n]]
        self.layer_types = types
        from transformers.masking_utils import LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING
        bad = sorted({t for t in types if t not in LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING and t not in _LINEAR_TYPES})
        if bad:
            raise DecodingUnsupported(f"model_type {mt!r} has layer types {bad} the decoder cannot mask")
        self.mask_fns = LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING
        self.is_ssm = [t in _LINEAR_TYPES for t in types]
        self.chunk_continues = spec.ssm_chunk_continues
        fwd = self.blocks[0].forward
        self.cache_kw = next((k for k in ("cache", "layer_past", "past_key_values")
                              if k in inspect.signature(fwd).parameters), "cache")
        self.pass_pe = self.rotary is not None
        self.pass_use_cache = _accepts(fwd, "use_cache")

    def embed(self, ids, start):
        h = self.embed_tokens(ids)
        if self.wpe is not None:
            pos = torch.arange(start, start + ids.shape[1], device=ids.device)[None]
            h = h + self.wpe(pos).to(h.dtype)
        if self.embed_scale is not None:
            h = h * self.embed_scale
        return h

    def _positions(self, start, n):
        key = ("pos", start, n)
        if key not in self._memo:
            self._memo[key] = torch.arange(start, start + n, device=self.device)[None]
        return self._memo[key]

    def _rope(self, h, pos, layer_type):
        key = ("rope", pos.shape[1], int(pos[0, 0]), layer_type if self.rotary_by_type else None)
        if key not in self._memo:
            self._memo[key] = (self.rotary(h, pos, layer_type) if self.rotary_by_type else self.rotary(h, pos))
        return self._memo[key]

    def _mask(self, i, h, pos, cache):
        lt = self.layer_types[i]
        if lt in _LINEAR_TYPES:  # SSM layers of a hybrid: no padding, no mask (as the model passes None)
            return None
        # the mask depends on the layer's cached length (== start, an invariant of the decoder) and q length
        key = ("mask", lt, int(pos[0, 0]), pos.shape[1])
        if key not in self._memo:
            self._memo[key] = self.mask_fns[lt](config=self.config, inputs_embeds=h, attention_mask=None,
                                                cache=cache, position_ids=pos, layer_idx=i)
        return self._memo[key]

    def run_block(self, i, h, start, cache):
        if self.is_ssm[i] and h.shape[1] > 1 and not self.chunk_continues and cache.has_previous_state(i):
            # this mixer's chunk scan restarts from a zero state: feed the positions one at a time
            return torch.cat([self.run_block(i, h[:, r:r + 1], start + r, cache) for r in range(h.shape[1])], dim=1)
        pos = self._positions(start, h.shape[1])
        kw = {self.cache_kw: cache, "attention_mask": self._mask(i, h, pos, cache), "position_ids": pos}
        if self.pass_pe:
            kw["position_embeddings"] = self._rope(h, pos, self.layer_types[i])
        if self.pass_use_cache:
            kw["use_cache"] = True
        return _first_tensor(self.blocks[i](h, **kw))

    def write_kv(self, i, h, start, cache):
        block = self.blocks[i]
        if not self.is_ssm[i]:
            return super().write_kv(i, h, start, cache)
        mixer, norm = getattr(block, "mamba", None), getattr(block, "input_layernorm", None)
        if mixer is not None and norm is not None:
            # a hybrid's SSM layer: advance its conv/recurrent state with the mixer alone (its MLP is skipped)
            mixer(hidden_states=norm(h), cache=cache, attention_mask=None)
        else:
            self.run_block(i, h, start, cache)


class _SSMDriver(Driver):
    """Mamba / Mamba2 / FalconMamba: blocks are norm + mixer; the cache holds conv and recurrent states."""

    def __init__(self, lm: LoadedModel):
        super().__init__(lm)
        self.inner = self.model.base_model
        self.embed_tokens = self.model.get_input_embeddings()
        self.is_ssm = [True] * len(self.blocks)
        self.chunk_continues = lm.resolved.spec.ssm_chunk_continues

    def embed(self, ids, start):
        return self.embed_tokens(ids)

    def run_block(self, i, h, start, cache):
        block = self.blocks[i]
        if h.shape[1] > 1 and not self.chunk_continues and cache.has_previous_state(i):
            # this mixer's chunk scan would restart from a zero state: feed the positions one at a time
            return torch.cat([_first_tensor(block(h[:, r:r + 1], cache=cache, attention_mask=None))
                              for r in range(h.shape[1])], dim=1)
        return _first_tensor(block(h, cache=cache, attention_mask=None))

    def write_kv(self, i, h, start, cache):
        # an SSM block has no K/V to write: its state must advance, so the mixer runs on the copied state
        self.run_block(i, h, start, cache)


DRIVER_CLASSES = {"attention": _AttentionDriver, "hybrid": _AttentionDriver, "ssm": _SSMDriver}


def make_driver(lm: LoadedModel) -> Driver:
    """The driver of the model's table row (`ArchSpec.driver`); DecodingUnsupported for rows without one."""
    mt = lm.config.model_type
    spec = lm.resolved.spec
    if spec.driver is not None:
        return DRIVER_CLASSES[spec.driver](lm)
    if lm.family == "ssm":
        raise DecodingUnsupported(f"SSM model_type {mt!r} is not driven; supported SSMs: "
                                  f"{', '.join(model_types(driver='ssm'))}")
    hybrids = ", ".join(model_types(driver="hybrid"))
    raise DecodingUnsupported(
        f"{lm.name} ({mt}) is a {lm.family} model (attention and SSM layers) whose forward the early-exit decoder "
        f"has not been checked against; supported hybrids: {hybrids}; all supported model_types: "
        f"{', '.join(supported_model_types())}. The readout-based simulation (eeutils.exits) works for any model.")
