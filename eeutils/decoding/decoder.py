"""Realised early-exit greedy decoding: per-token exit under a rule, through the model's own final norm
and head, with the skipped layers' cache debt paid by one of two strategies.

The decoder drives the model's blocks one by one with the model's own cache object
(transformers' ``DynamicCache``: key/value layers for attention, conv + recurrent state layers for
Mamba), so a token can stop after any block. Each token is checked at the layers its rule checks, by
the rule's check kind (``eeutils.decoding.checks``: a full readout through ``LoadedModel.layer_logits``, a
state cosine, or a candidate-set head verified by the full readout), and the exit decision is taken by
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

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.rule_parse import as_rule
from ..analysis.rules import REALISABLE, ExitRule
from ..arch.loading import LoadedModel
from ..core.checks import check_bools
from ..core.settings import with_settings
from ..lens.statistics import token_statistics
from ..lens.lenses import Lens, as_lens
from .checks import CheckCosts, make_check
from .drivers import Driver, make_driver
from .inputs import as_loaded, check_lengths, eos_ids, prompt_ids
from .result import STRATEGIES, GenerationResult


def _coerce_rule(rule, n_layers: int, min_layer):
    rule = ExitRule("static", n_layers) if rule is None else as_rule(rule)
    if not rule.realisable:
        raise ValueError(f"rule {rule.kind!r} is not realisable while decoding (it needs the final layer's "
                         f"prediction or the reference token); realisable kinds: {', '.join(REALISABLE)}. "
                         "Use eeutils.exits.simulate for oracle bounds.")
    if isinstance(min_layer, bool) or not isinstance(min_layer, (int, np.integer)) or min_layer < 1:
        raise ValueError(f"min_layer must be an int >= 1 (layer 0, the embeddings, never exits), got {min_layer!r}")
    if min_layer > n_layers:
        raise ValueError(f"min_layer {min_layer} exceeds the model's {n_layers} layers")
    if min_layer > rule.min_layer:
        rule = ExitRule(**dict(rule.__dict__, min_layer=int(min_layer)))
    rule.validate_for(n_layers)
    return rule


class _Decoder:
    def __init__(self, lm: LoadedModel, driver: Driver, rule, strategy: str, trace: bool, lens: Lens):
        self.lm, self.drv, self.rule, self.strategy = lm, driver, rule, strategy
        self.L = lm.n_layers
        self.cache = driver.new_cache()
        self.done = [0] * (self.L + 1)  # done[j]: positions whose block-j output is in the cache (j = 1..L)
        self.store: dict[int, tuple[int, torch.Tensor]] = {}  # defer: pending position -> (layer m, h^m [1,1,d])
        self.P = 0  # positions processed
        self.trace = [] if trace else None
        self.layers_run = self.deferred_rows = self.state_rows = self.kv_writes = 0
        self.exits: list[int] = []
        self.costs = CheckCosts(d=int(lm.head.weight.shape[1]), vocab=lm.vocab_size, lens=lens)
        self.check = make_check(lm, rule, self.costs)

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
        check = self.check
        check.begin_token()
        rec = {"position": p, "input": int(token), "stats": {}} if self.trace is not None else None
        exit_layer, logits, deferred = L, None, 0
        for j in range(1, L + 1):
            carried, cs = self._layer(j, carried, cs, p + 1)
            deferred += carried.shape[1] - 1
            h = carried[:, -1]
            if j == L:
                break
            if check.observes(j):
                fires, logits, stats = check.at(j, h, prev)
                if rec is not None and self.rule.checks_at(j):
                    rec["stats"][j] = dict(stats)
                if fires:
                    exit_layer = j
                    break
            prev = h
            logits = None
        if logits is None:  # static rules, the last layer, or a check without a full readout
            logits = self.costs.readout(self.costs.lens_state(exit_layer, h))
            if not bool(torch.isfinite(logits).all()):
                token_statistics(logits)  # raises with an explanation
        check.end_token(logits)
        nxt = int(torch.argmax(logits[0]))
        self.costs.host_syncs += 1
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


@dataclass(frozen=True)
class DecodeConfig:
    """How `generate_early_exit` decodes (see its docstring): new tokens at most, the cache strategy, the lowest
    exit layer, whether to keep a per-token trace, to complete a deferred cache, to stop after EOS."""

    max_new_tokens: int = 32
    strategy: str = "propagate"
    min_layer: int = 1
    return_trace: bool = True
    complete_cache: bool = True
    stop_at_eos: bool = True


@torch.inference_mode()
def generate_early_exit(model, prompt, rule=None, *, lens="logit", lens_settings=None,
                        config: DecodeConfig | None = None, **settings) -> GenerationResult:
    """Greedy generation with per-token early exit.

    model: a LoadedModel (or a name / nn.Module, wrapped). prompt: text (needs a tokenizer) or token ids.
    rule: an eeutils.exits.ExitRule (or a (kind, threshold) tuple); kinds static, max_prob, margin,
    entropy, hidden_saturation, consecutive, with the rule's checked layers (min_layer, every, layers) and
    check (`CHECK_KINDS`: candidates=K scores a carried candidate set and verifies a firing check with the
    full head; see eeutils.decoding.checks). None = never exit early (the full model). Oracle rules
    are not realisable and are refused.
    config / settings: a `DecodeConfig`, or its fields as keywords (keywords override the config):
    max_new_tokens=32; min_layer=1: no exit before this block (combined with the rule's own min_layer, the
    larger wins); strategy: "propagate" (copy the exited state up: attention blocks write K/V from it, SSM blocks
    run their mixer on it) or "defer" (run skipped blocks later for the pending positions, batched
    with the next token that needs them: exact cache), see the module docstring and docs/DECODING.md;
    complete_cache (defer): flush pending positions at the end so the returned cache is complete
    and exact (work reported apart, not timed); stop_at_eos: stop after the model's EOS token, as
    model.generate does; return_trace: keep each token's checked statistics.
    lens: a lens object (`eeutils.lens.lenses.Lens`) or "logit" (default) / "tuned" with `lens_settings`
    (`as_lens`): every head-reading check and an early exit's prediction decode the lens' transformed state
    (`eeutils.lens.tuned` for the translators), each transform's multiply-adds counted in check_macs["translator"].
    Returns a GenerationResult (tokens, text, exit_layers, costs, times, cache, trace).
    """
    cfg = with_settings(config, settings, DecodeConfig, "generate_early_exit")
    lm = as_loaded(model)
    check_bools(return_trace=cfg.return_trace, complete_cache=cfg.complete_cache, stop_at_eos=cfg.stop_at_eos)
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {cfg.strategy!r}")
    rule = _coerce_rule(rule, lm.n_layers, cfg.min_layer)
    ids = prompt_ids(lm, prompt)
    n_new = check_lengths(lm, ids, cfg.max_new_tokens)
    chosen = as_lens(lm, lens, lens_settings)
    dec = _Decoder(lm, make_driver(lm), rule, cfg.strategy, cfg.return_trace, chosen)
    run = _decode(dec, ids, n_new, eos_ids(lm) if cfg.stop_at_eos else set(),
                  flush=cfg.strategy == "defer" and cfg.complete_cache)
    return _result(dec, ids, run)


def _decode(dec: _Decoder, ids: list[int], n_new: int, eos: set, flush: bool) -> dict:
    """Prefill the prompt, decode up to n_new tokens (stopping after one in `eos`), flush a deferred cache if
    asked: the tokens, the rows still owed before the flush, the rows flushed and the three phases' seconds."""
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
    flush_rows = dec.flush() if flush else 0
    t3 = time.perf_counter()
    return dict(tokens=tokens, owed_rows=owed, flush_rows=flush_rows, prefill_seconds=t1 - t0,
                decode_seconds=t2 - t1, flush_seconds=t3 - t2)


def _result(dec: _Decoder, ids: list[int], run: dict) -> GenerationResult:
    """The GenerationResult of a finished decode (`_decode`'s record) with the decoder's counters."""
    lm, costs, lens = dec.lm, dec.costs, dec.costs.lens.record()
    tokens = run["tokens"]
    return GenerationResult(
        tokens=tokens, prompt_ids=ids, exit_layers=np.asarray(dec.exits, dtype=np.int64), n_layers=lm.n_layers,
        strategy=dec.strategy, rule=dec.rule, text=lm.tokenizer.decode(tokens) if lm.tokenizer is not None else None,
        prefill_seconds=run["prefill_seconds"], decode_seconds=run["decode_seconds"],
        flush_seconds=run["flush_seconds"], layers_run=dec.layers_run, deferred_rows=dec.deferred_rows,
        state_rows=dec.state_rows, kv_writes=dec.kv_writes, owed_rows=run["owed_rows"],
        flush_rows=run["flush_rows"], lens_calls=costs.lens_calls, check_macs=dict(costs.check_macs),
        verify_calls=costs.verify_calls, failed_verifies=costs.failed_verifies, host_syncs=costs.host_syncs,
        cache=dec.cache, cache_lengths=dec.cache_lengths(), trace=dec.trace, backend="driver",
        meta=dict(model=lm.name, family=lm.family, model_type=lm.config.model_type, lens=lens["lens"],
                  lens_digest=lens["lens_digest"]))
