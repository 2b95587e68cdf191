"""Realised early-exit greedy decoding: per-token exit under a rule, through the model's own final norm
and head, with the skipped layers' cache debt paid by one of two strategies.

The decoder drives the model's blocks one by one with the model's own cache object
(transformers' ``DynamicCache``: key/value layers for attention, conv + recurrent state layers for
Mamba), so a token can stop after any block. Each token is read out at the layers its rule needs
(``LoadedModel.layer_logits``: final norm, head, logit transforms), and the exit decision is taken by
``eeutils.exits.rule_fires``, the same predicate the readout-based simulation uses.

What skipped layers owe later tokens (a token at position t that exits at layer e never ran blocks
e+1..L, but the token at t+1 attends to / recurs over position t in those blocks):

- ``strategy="propagate"`` (CALM): the exited state h_t^e is copied upward as the *input* of every
  skipped block. For an attention block the block is run on the copied state only until it has
  written position t's key and value into the cache (input norm, q/k/v projections, rotary, the
  cache write); the attention product, output projection and MLP / MoE are skipped. The cache is
  then complete but approximate (entries computed from a copied, not a real, state). For an SSM
  block the recurrent and conv states must still advance, so the whole block (norm + mixer) runs
  on the copied state and its output is discarded: on a pure SSM, propagate saves no block compute.
- ``strategy="defer"``: nothing is written for the skipped blocks at exit time. Position t stays
  pending, with its last computed state h_t^e; the next token that reaches block e+1 runs it for
  the pending positions and itself in one batched call (the pending rows' outputs feed block e+2,
  and so on). Each block sees every position exactly once, in order, with its true input, so the
  cache is *exact*: identical to a full forward over the realised tokens (up to float rounding).
  This holds for SSM blocks too: the pending positions are scanned in order, continuing from the
  cached state (Mamba2 continues a multi-token chunk from its state; Mamba-1, whose chunk scan
  restarts from zero, gets the pending positions one at a time). With ``complete_cache=True``
  (default) positions still pending at the end are flushed so the returned cache is exact and
  complete; that work is reported apart (``flush_rows``, ``flush_seconds``), not in the timing.

The prompt is processed as: tokens 0..n-2 through all blocks in one batched prefill (exact), then
the last prompt token is decoded like every generated token (so the first new token's exit is a real
early exit). After N new tokens the cache holds ``len(prompt) + N - 1`` positions, as with
``model.generate``.

Families: Llama-like dense and MoE decoders (llama, mistral, qwen2/3, olmo/olmo2, phi3, gemma*,
cohere, granite, mixtral, qwen2_moe, qwen3_moe, olmoe, gpt_oss, deepseek_v3, ...), GPT-2, GPT-NeoX,
the SSMs mamba, mamba2, falcon_mamba and the hybrids jamba and bamba (attention layers as above,
SSM layers as SSMs; propagate runs only a skipped SSM layer's mixer). Other hybrids are refused
with DecodingUnsupported. See docs/DECODING.md.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .loading import LoadedModel, load_model, wrap_model

try:  # the shared predicate with the simulator (eeutils/exits.py)
    from .exits import ExitRule, rule_fires, update_streak
except ImportError:  # pragma: no cover - exits.py is part of the kit; kept for partial checkouts
    ExitRule = None
    rule_fires = None
    update_streak = None

__all__ = ["GenerationResult", "DecodingUnsupported", "generate_early_exit", "generate_full",
           "generate_self_speculative", "supported_model_types", "STRATEGIES"]

STRATEGIES = ("propagate", "defer")

# statistics the decoder can compute for the token being generated (Readout definitions, fp32)
_LENS_STATS = ("max_prob", "margin", "entropy", "top1_streak")
_REALISABLE = ("static", "max_prob", "margin", "entropy", "hidden_saturation", "consecutive")


class DecodingUnsupported(NotImplementedError):
    """The model's architecture (or this strategy on it) is not supported by the early-exit decoder."""


# ---------------------------------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------------------------------
@dataclass
class GenerationResult:
    """What one generation produced and what it cost.

    tokens: generated ids (the prompt excluded); prompt_ids; text: decoded tokens (None without a
    tokenizer). exit_layers: per generated token, the block after which it was predicted (1..L; L =
    the full model). Cost (in block-rows: one block applied to one position): layers_run = sum of
    exit layers (each token's own blocks); deferred_rows = blocks run later for earlier positions
    (defer); state_rows = skipped SSM blocks run on the copied state (propagate on SSM);
    kv_writes = skipped attention blocks that only wrote K/V (propagate); owed_rows = blocks the
    pending positions still owed when generation stopped (defer: work deferred but never needed by
    a later token); flush_rows = the end-of-run completion of the cache that pays it (defer with
    complete_cache; not part of the timing). lens_calls = layer
    readouts (final norm + head) evaluated for exit decisions and predictions.
    Times in seconds: prefill_seconds (prompt[:-1]), decode_seconds (the per-token loop),
    wall_time = prefill + decode. cache: the model's cache object after generation.
    """

    tokens: list[int]
    prompt_ids: list[int]
    exit_layers: np.ndarray
    n_layers: int
    strategy: str
    rule: object = None
    text: str | None = None
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    flush_seconds: float = 0.0
    layers_run: int = 0
    deferred_rows: int = 0
    state_rows: int = 0
    kv_writes: int = 0
    owed_rows: int = 0
    flush_rows: int = 0
    lens_calls: int = 0
    cache: object = field(default=None, repr=False)
    cache_lengths: list[int] | None = None
    trace: list[dict] | None = field(default=None, repr=False)
    backend: str = "driver"
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def wall_time(self) -> float:
        return self.prefill_seconds + self.decode_seconds

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of the decode loop (prefill excluded)."""
        return self.n_tokens / self.decode_seconds if self.decode_seconds > 0 else float("nan")

    @property
    def mean_exit_layer(self) -> float:
        return float(np.mean(self.exit_layers)) if len(self.exit_layers) else float("nan")

    @property
    def skip_ratio(self) -> float:
        """Mean (L - exit) / L over generated tokens: what the exits skip, before any cache repair."""
        if not len(self.exit_layers):
            return float("nan")
        return float(np.mean((self.n_layers - np.asarray(self.exit_layers)) / self.n_layers))

    @property
    def layers_computed(self) -> int:
        """Whole-block rows actually run during decoding: own layers + deferred + SSM state updates."""
        return int(self.layers_run + self.deferred_rows + self.state_rows)

    @property
    def mean_layers_computed(self) -> float:
        """layers_computed per generated token (L for the full model; K/V-only writes not counted)."""
        return self.layers_computed / self.n_tokens if self.n_tokens else float("nan")

    @property
    def compute_ratio(self) -> float:
        """layers_computed / (n_tokens * L): the share of full-model block work that was done."""
        return self.mean_layers_computed / self.n_layers if self.n_tokens else float("nan")

    def summary(self) -> dict:
        return dict(strategy=self.strategy, rule=getattr(self.rule, "label", str(self.rule)), n_tokens=self.n_tokens,
                    n_layers=self.n_layers, mean_exit_layer=self.mean_exit_layer, skip_ratio=self.skip_ratio,
                    mean_layers_computed=self.mean_layers_computed, compute_ratio=self.compute_ratio,
                    deferred_rows=self.deferred_rows, state_rows=self.state_rows, kv_writes=self.kv_writes,
                    owed_rows=self.owed_rows, flush_rows=self.flush_rows, lens_calls=self.lens_calls,
                    tokens_per_s=self.tokens_per_s, wall_time=self.wall_time, backend=self.backend)


# ---------------------------------------------------------------------------------------------------
# per-family drivers: embed, run one block on a run of consecutive positions, write K/V only
# ---------------------------------------------------------------------------------------------------
class _KVWritten(Exception):
    """Raised by the patched cache.update once a block has written its key/value entries."""


_SSM_TYPES = ("mamba", "mamba2", "falcon_mamba")
# hybrids whose forward (layer_types with full_attention / linear_attention, masks, rotary) the driver reproduces
_HYBRID_TYPES = ("jamba", "bamba")
# SSM mixers whose multi-token path continues from the cached recurrent state (Mamba-1's does not)
_SSM_CHUNK_CONTINUES = ("mamba2", "bamba")


def supported_model_types() -> list[str]:
    """model_types the decoder drives: adapter rows of the dense and moe families, the SSMs and the hybrids listed.
    (Auto-discovered dense/moe models are tried too; the never-exit check in the tests is the proof.)"""
    from .adapters import ADAPTERS
    return sorted(mt for mt, spec in ADAPTERS.items()
                  if spec.family in ("dense", "moe") or mt in _SSM_TYPES or mt in _HYBRID_TYPES)


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


class _Driver:
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


class _AttentionDriver(_Driver):
    """Llama-like (dense and MoE), GPT-2, GPT-NeoX and attention/SSM hybrids (jamba, bamba): embeddings,
    rotary or learned positions, one causal mask per attention layer type (none for SSM layers), blocks
    called the way the model's own forward calls them."""

    def __init__(self, lm: LoadedModel):
        super().__init__(lm)
        mt = self.config.model_type
        self.inner = self.model.base_model
        self.embed_tokens = self.model.get_input_embeddings()
        self.wpe = getattr(self.inner, "wpe", None)  # GPT-2 learned positions
        self.embed_scale = getattr(self.config, "embedding_multiplier", None)  # granite
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
        self.chunk_continues = mt in _SSM_CHUNK_CONTINUES
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


class _SSMDriver(_Driver):
    """Mamba / Mamba2 / FalconMamba: blocks are norm + mixer; the cache holds conv and recurrent states."""

    def __init__(self, lm: LoadedModel):
        super().__init__(lm)
        self.inner = self.model.base_model
        self.embed_tokens = self.model.get_input_embeddings()
        self.is_ssm = [True] * len(self.blocks)
        self.chunk_continues = self.config.model_type in _SSM_CHUNK_CONTINUES

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


def _make_driver(lm: LoadedModel) -> _Driver:
    mt = lm.config.model_type
    if mt in _SSM_TYPES:
        return _SSMDriver(lm)
    if lm.family == "ssm":
        raise DecodingUnsupported(f"SSM model_type {mt!r} is not driven; supported SSMs: {', '.join(_SSM_TYPES)}")
    if lm.family == "hybrid" and mt not in _HYBRID_TYPES:
        raise DecodingUnsupported(
            f"{lm.name} ({mt}) is a hybrid of attention and SSM layers whose forward the early-exit decoder has not "
            f"been checked against; supported hybrids: {', '.join(_HYBRID_TYPES)}; all supported model_types: "
            f"{', '.join(supported_model_types())}. The readout-based simulation (eeutils.exits) works for any model.")
    return _AttentionDriver(lm)


# ---------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------
def _as_loaded(model) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return load_model(model)
    if isinstance(model, torch.nn.Module):
        return wrap_model(model)
    raise TypeError(f"model must be a LoadedModel, a model name or a torch.nn.Module, got {type(model).__name__}")


def _prompt_ids(lm: LoadedModel, prompt) -> list[int]:
    if isinstance(prompt, str):
        if lm.tokenizer is None:
            raise ValueError(f"{lm.name} has no tokenizer: pass the prompt as a list of token ids")
        ids = lm.encode(prompt)
    elif isinstance(prompt, torch.Tensor):
        if prompt.dim() == 2 and prompt.shape[0] == 1:
            prompt = prompt[0]
        if prompt.dim() != 1:
            raise ValueError(f"prompt must be one sequence (batch size 1), got a tensor of shape {tuple(prompt.shape)}")
        ids = [int(t) for t in prompt.tolist()]
    elif isinstance(prompt, np.ndarray):
        return _prompt_ids(lm, torch.as_tensor(prompt))
    else:
        try:
            ids = [int(t) for t in prompt]
        except (TypeError, ValueError):
            raise ValueError(f"prompt must be text or a sequence of token ids, got {type(prompt).__name__}") from None
    if not ids:
        raise ValueError("the prompt has no tokens: pass at least one token (e.g. the BOS token id)")
    V = lm.vocab_size
    bad = [t for t in ids if not 0 <= t < V]
    if bad:
        raise ValueError(f"prompt token ids must be in [0, {V}); got {bad[:5]}")
    return ids


def _check_lengths(lm: LoadedModel, ids: list[int], max_new_tokens) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    n = int(max_new_tokens)
    if n <= 0:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    ctx = lm.max_length
    if ctx is not None:
        if len(ids) > ctx:
            raise ValueError(f"the prompt has {len(ids)} tokens, longer than the model's context of {ctx}: "
                             f"shorten it to at most {ctx - 1} tokens")
        if len(ids) + n - 1 > ctx:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({n}) exceeds the model's context of "
                             f"{ctx} positions: lower max_new_tokens to {ctx - len(ids) + 1} or shorten the prompt")
    return n


def _coerce_rule(rule, n_layers: int, min_layer):
    if ExitRule is None:  # pragma: no cover
        raise ImportError("eeutils.exits is missing: the decoder shares its ExitRule and rule_fires")
    if rule is None:
        rule = ExitRule("static", n_layers)
    elif isinstance(rule, (tuple, list)):
        rule = ExitRule(*rule)
    elif isinstance(rule, dict):
        rule = ExitRule(**rule)
    elif not isinstance(rule, ExitRule):
        raise TypeError(f"rule must be an eeutils.exits.ExitRule, a (kind, threshold) tuple or None, got {rule!r}")
    if rule.kind not in _REALISABLE:
        raise ValueError(f"rule {rule.kind!r} is not realisable while decoding (it needs the final layer's "
                         f"prediction or the reference token); realisable kinds: {', '.join(_REALISABLE)}. "
                         "Use eeutils.exits.simulate for oracle bounds.")
    if isinstance(min_layer, bool) or not isinstance(min_layer, (int, np.integer)) or min_layer < 1:
        raise ValueError(f"min_layer must be an int >= 1 (layer 0, the embeddings, never exits), got {min_layer!r}")
    if min_layer > n_layers:
        raise ValueError(f"min_layer {min_layer} exceeds the model's {n_layers} layers")
    if min_layer > rule.min_layer:
        rule = ExitRule(rule.kind, rule.threshold, int(min_layer))
    rule.validate_for(n_layers)
    return rule


def _eos_ids(lm: LoadedModel) -> set[int]:
    gc = getattr(lm.model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None) if gc is not None else None
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


# ---------------------------------------------------------------------------------------------------
# the decoder
# ---------------------------------------------------------------------------------------------------
def _lens_stats(z: torch.Tensor, need=("max_prob", "margin", "entropy", "top1")) -> dict:
    """Statistics of one row of fp32 logits, as eeutils.stats defines them; only those in `need`
    (top1, max_prob, margin, entropy) are computed, since each costs a pass over the vocabulary."""
    lse = torch.logsumexp(z, dim=-1)
    if not bool(torch.isfinite(lse).all()):
        raise FloatingPointError("NaN or inf logits while decoding: load the model in float32 or bfloat16 "
                                 "(fp16 overflows), or check the weights")
    out = {}
    vals, ids = torch.topk(z, 2 if "margin" in need else 1, dim=-1)
    top_p = torch.exp(vals - lse[..., None])
    out["top1"] = int(ids[0, 0])
    if "max_prob" in need or "margin" in need:
        out["max_prob"] = float(top_p[0, 0])
    if "margin" in need:
        out["margin"] = float(top_p[0, 0] - top_p[0, 1])
    if "entropy" in need:
        p = torch.exp(z - lse[..., None])
        out["entropy"] = float((lse - (p * z).sum(-1)).clamp_min(0.0)[0])
    return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    from .stats import _cos
    return float(_cos(a.float(), b.float())[0])


class _Decoder:
    def __init__(self, lm: LoadedModel, driver: _Driver, rule, strategy: str, trace: bool):
        self.lm, self.drv, self.rule, self.strategy = lm, driver, rule, strategy
        self.L = lm.n_layers
        self.cache = driver.new_cache()
        self.done = [0] * (self.L + 1)  # done[j]: positions whose block-j output is in the cache (j = 1..L)
        self.store: dict[int, tuple[int, torch.Tensor]] = {}  # defer: pending position -> (layer m, h^m [1,1,d])
        self.P = 0  # positions processed
        self.trace = [] if trace else None
        self.layers_run = self.deferred_rows = self.state_rows = self.kv_writes = self.lens_calls = 0
        self.exits: list[int] = []
        kinds = rule.required_stats
        self.need_lens = any(s in _LENS_STATS for s in kinds)
        self.need_cos = "hidden_cos_prev" in kinds
        self.streak = "top1_streak" in kinds

    # one block on the run of positions [cs, end), prepending pending rows the block still owes
    def _layer(self, j: int, carried, cs: int, end: int):
        start = self.done[j]
        if start < cs:
            rows = []
            for q in range(start, cs):
                m, hq = self.store[q]
                if m != j - 1:  # invariant: positions pending at block j have their block j-1 output stored
                    raise RuntimeError(f"internal: position {q} is at layer {m}, expected {j - 1}")
                rows.append(hq)
            carried = torch.cat(rows + ([carried] if carried is not None else []), dim=1)
            cs = start
        if carried is None:
            return None, cs
        carried = self.drv.run_block(j - 1, carried, cs, self.cache)
        self.done[j] = end
        return carried, cs

    def prefill(self, ids: list[int]):
        if not ids:
            return
        self.drv.begin_step()
        x = torch.tensor([ids], dtype=torch.long, device=self.drv.device)
        h = self.drv.embed(x, 0)
        for j in range(1, self.L + 1):
            h = self.drv.run_block(j - 1, h, 0, self.cache)
            self.done[j] = len(ids)
        self.P = len(ids)

    def step(self, token: int) -> int:
        """Feed `token` at position P, return the predicted next token."""
        drv, L, p = self.drv, self.L, self.P
        drv.begin_step()
        x = torch.tensor([[token]], dtype=torch.long, device=drv.device)
        carried = drv.embed(x, p)
        cs = p
        prev = carried[:, -1]
        streak, prev_top1 = None, None
        rec = {"position": p, "input": int(token), "stats": {}} if self.trace is not None else None
        exit_layer, logits, deferred = L, None, 0
        for j in range(1, L + 1):
            carried, cs = self._layer(j, carried, cs, p + 1)
            deferred += carried.shape[1] - 1
            h = carried[:, -1]
            if j == L:
                break
            stats: dict = {}
            if self.need_lens and (j >= self.rule.min_layer or self.streak):
                z = self.lm.layer_logits(h)
                self.lens_calls += 1
                s = _lens_stats(z, self.rule.required_stats)
                stats.update(s)
                if self.streak:
                    streak = update_streak(streak if streak is not None else 0, prev_top1, s["top1"])
                    prev_top1 = s["top1"]
                    stats["top1_streak"] = int(streak[0])
                logits = z
            if self.need_cos:
                stats["hidden_cos_prev"] = _cosine(h, prev)
            prev = h
            if j >= self.rule.min_layer:
                fires = bool(rule_fires(self.rule, {k: stats[k] for k in self.rule.required_stats}, j, L)[0])
                if rec is not None:
                    rec["stats"][j] = {k: v for k, v in stats.items()}
                if fires:
                    exit_layer = j
                    break
            logits = None
        if logits is None:  # static rules, the last layer, or a rule that needs no readout
            logits = self.lm.layer_logits(h)
            self.lens_calls += 1
            if not bool(torch.isfinite(logits).all()):
                _lens_stats(logits)  # raises with an explanation
        nxt = int(torch.argmax(logits[0]))
        self.layers_run += exit_layer
        self.deferred_rows += deferred
        self.exits.append(exit_layer)
        # pay (or record) what the skipped blocks owe
        if exit_layer < L:
            if self.strategy == "propagate":
                copied = h[:, None]
                for j in range(exit_layer + 1, L + 1):
                    drv.write_kv(j - 1, copied, p, self.cache)
                    self.done[j] = p + 1
                    if drv.is_ssm[j - 1]:
                        self.state_rows += 1
                    else:
                        self.kv_writes += 1
            else:
                for r, q in enumerate(range(cs, p + 1)):
                    self.store[q] = (exit_layer, carried[:, r:r + 1])
        else:
            for q in range(cs, p + 1):
                self.store.pop(q, None)
        self.P = p + 1
        if rec is not None:
            rec.update(exit_layer=exit_layer, token=nxt, deferred_rows=deferred)
            self.trace.append(rec)
        return nxt

    def owed_rows(self) -> int:
        """Block-rows the pending positions still owe (defer): sum over them of L - their layer."""
        return sum(self.L - m for m, _ in self.store.values())

    def flush(self) -> int:
        """Run every pending position through the blocks it still owes (defer); returns block-rows run."""
        if not self.store:
            return 0
        self.drv.begin_step()
        carried, cs, rows = None, self.P, 0
        for j in range(1, self.L + 1):
            carried, cs = self._layer(j, carried, cs, self.P)
            if carried is not None:
                rows += carried.shape[1]
        self.store.clear()
        return rows

    def cache_lengths(self) -> list[int]:
        return list(self.done[1:])


@torch.inference_mode()
def generate_early_exit(model, prompt, rule=None, *, max_new_tokens: int = 32, strategy: str = "propagate",
                        min_layer: int = 1, return_trace: bool = True, complete_cache: bool = True,
                        stop_at_eos: bool = True) -> GenerationResult:
    """Greedy generation with per-token early exit.

    model: a LoadedModel (or a name / nn.Module, wrapped). prompt: text (needs a tokenizer) or token ids.
    rule: an eeutils.exits.ExitRule (or a (kind, threshold) tuple); kinds static, max_prob, margin,
    entropy, hidden_saturation, consecutive. None = never exit early (the full model). Oracle rules
    are not realisable and are refused. min_layer: no exit before this block (combined with the
    rule's own min_layer, the larger wins).
    strategy: "propagate" (copy the exited state up: attention blocks write K/V from it, SSM blocks
    run their mixer on it) or "defer" (run skipped blocks later for the pending positions, batched
    with the next token that needs them: exact cache). See the module docstring and docs/DECODING.md.
    complete_cache (defer): flush pending positions at the end so the returned cache is complete
    and exact (work reported apart, not timed). stop_at_eos: stop after the model's EOS token, as
    model.generate does.
    Returns a GenerationResult (tokens, text, exit_layers, costs, times, cache, trace).
    """
    lm = _as_loaded(model)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    rule = _coerce_rule(rule, lm.n_layers, min_layer)
    ids = _prompt_ids(lm, prompt)
    n_new = _check_lengths(lm, ids, max_new_tokens)
    driver = _make_driver(lm)
    dec = _Decoder(lm, driver, rule, strategy, return_trace)
    eos = _eos_ids(lm) if stop_at_eos else set()

    t0 = time.perf_counter()
    dec.prefill(ids[:-1])
    t1 = time.perf_counter()
    tokens = []
    tok = ids[-1]
    for _ in range(n_new):
        tok = dec.step(tok)
        tokens.append(tok)
        if tok in eos:
            break
    t2 = time.perf_counter()
    owed = dec.owed_rows()
    flush_rows = dec.flush() if (strategy == "defer" and complete_cache) else 0
    t3 = time.perf_counter()
    text = lm.tokenizer.decode(tokens) if lm.tokenizer is not None else None
    return GenerationResult(
        tokens=tokens, prompt_ids=ids, exit_layers=np.asarray(dec.exits, dtype=np.int64), n_layers=lm.n_layers,
        strategy=strategy, rule=rule, text=text, prefill_seconds=t1 - t0, decode_seconds=t2 - t1,
        flush_seconds=t3 - t2, layers_run=dec.layers_run, deferred_rows=dec.deferred_rows, state_rows=dec.state_rows,
        kv_writes=dec.kv_writes, owed_rows=owed, flush_rows=flush_rows, lens_calls=dec.lens_calls, cache=dec.cache,
        cache_lengths=dec.cache_lengths(), trace=dec.trace, backend="driver",
        meta=dict(model=lm.name, family=lm.family, model_type=lm.config.model_type))


@torch.inference_mode()
def generate_full(model, prompt, max_new_tokens: int = 32, *, backend: str = "driver",
                  stop_at_eos: bool = True) -> GenerationResult:
    """Plain greedy decoding with a cache: the baseline.

    backend="driver" runs the same layer-by-layer driver as generate_early_exit with no exits (every
    token runs all L blocks, no per-layer readouts), so ratios against it isolate what exiting
    changes; backend="hf" calls model.generate(do_sample=False) (its own loop and overheads).
    """
    lm = _as_loaded(model)
    if backend == "driver":
        return generate_early_exit(lm, prompt, None, max_new_tokens=max_new_tokens, strategy="propagate",
                                   return_trace=True, stop_at_eos=stop_at_eos)
    if backend != "hf":
        raise ValueError(f"backend must be 'driver' or 'hf', got {backend!r}")
    ids = _prompt_ids(lm, prompt)
    n_new = _check_lengths(lm, ids, max_new_tokens)
    x = torch.tensor([ids], dtype=torch.long, device=lm.model.get_input_embeddings().weight.device)
    kw = {} if stop_at_eos else {"eos_token_id": None}
    t0 = time.perf_counter()
    out = lm.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n_new,
                            return_dict_in_generate=True, pad_token_id=_pad_id(lm), **kw)
    t1 = time.perf_counter()
    return _hf_result(lm, ids, out, t1 - t0, "hf")


def _pad_id(lm):
    gc = getattr(lm.model, "generation_config", None)
    pad = getattr(gc, "pad_token_id", None)
    if pad is None:
        eos = _eos_ids(lm)
        pad = min(eos) if eos else 0
    return pad


def _hf_result(lm, ids, out, seconds, backend, rule=None):
    tokens = [int(t) for t in out.sequences[0, len(ids):].tolist()]
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    text = lm.tokenizer.decode(tokens) if lm.tokenizer is not None else None
    L = lm.n_layers
    return GenerationResult(tokens=tokens, prompt_ids=ids, exit_layers=np.full(len(tokens), L), n_layers=L,
                            strategy=backend, rule=rule, text=text, prefill_seconds=0.0, decode_seconds=seconds,
                            layers_run=L * len(tokens), cache=cache, backend=backend,
                            meta=dict(model=lm.name, family=lm.family, model_type=lm.config.model_type))


def _supports_layer_truncation(lm: LoadedModel) -> bool:
    """Whether the base model's forward loops over `self.layers[: self.config.num_hidden_layers]`, which is
    what transformers' assistant_early_exit relies on (it lowers num_hidden_layers while drafting)."""
    base = lm.model.base_model
    fwd = type(base).forward
    try:
        src = inspect.getsource(inspect.unwrap(fwd))
    except (OSError, TypeError):
        return False
    return "[: self.config.num_hidden_layers]" in src.replace(" ", "").replace("[:self", "[: self")


@torch.inference_mode()
def generate_self_speculative(model, prompt, max_new_tokens: int = 32, early_exit_layer: int = 1, *,
                              num_assistant_tokens: int | None = None) -> GenerationResult:
    """LayerSkip-style self-speculative greedy decoding with transformers' own `assistant_early_exit`:
    the first `early_exit_layer` blocks (+ final norm and head) draft tokens, the full model verifies
    them in one pass. Greedy verification makes the output equal to full greedy decoding; the gain
    depends on how often drafts are accepted. Needs a model whose forward can be truncated by
    config.num_hidden_layers (Llama-like); others raise DecodingUnsupported.
    """
    lm = _as_loaded(model)
    L = lm.n_layers
    if isinstance(early_exit_layer, bool) or not isinstance(early_exit_layer, (int, np.integer)) \
            or not 1 <= early_exit_layer < L:
        raise ValueError(f"early_exit_layer must be an int in 1..{L - 1} (the draft's depth), got {early_exit_layer!r}")
    if not _supports_layer_truncation(lm):
        raise DecodingUnsupported(
            f"{lm.name} ({lm.config.model_type}) does not support transformers' assistant_early_exit: its forward "
            "runs every block regardless of config.num_hidden_layers, so the draft would be the full model. "
            "Use generate_early_exit instead, or a Llama-like model.")
    ids = _prompt_ids(lm, prompt)
    n_new = _check_lengths(lm, ids, max_new_tokens)
    x = torch.tensor([ids], dtype=torch.long, device=lm.model.get_input_embeddings().weight.device)
    kw = {} if num_assistant_tokens is None else {"num_assistant_tokens": int(num_assistant_tokens)}
    t0 = time.perf_counter()
    out = lm.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n_new,
                            assistant_early_exit=int(early_exit_layer), return_dict_in_generate=True,
                            pad_token_id=_pad_id(lm), **kw)
    t1 = time.perf_counter()
    res = _hf_result(lm, ids, out, t1 - t0, "self_speculative")
    res.strategy = "self_speculative"
    res.meta["early_exit_layer"] = int(early_exit_layer)
    return res
