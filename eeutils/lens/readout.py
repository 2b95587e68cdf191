"""The streaming readout: one forward pass per batch, every layer reduced to per-token statistics.

Each block's residual stream is captured with hooks (a pre-hook on the first
block gives layer 0, forward hooks give layers 1..L), so the result does not
depend on how a family lays out `output_hidden_states`. Only the backbone runs
(the model's own head is skipped); every layer, the last included, is then
decoded through the model's final norm, head and logit transforms in token
chunks, so memory holds at most [chunk x vocab] logits at a time, never
[layers x tokens x vocab].

Lens: `lens="logit"` decodes each layer's state as it is (the logit lens); `lens="tuned"` first maps it through
that layer's affine translator (`eeutils.lens.tuned`, trained and cached per model), one [chunk x d] x [d x d]
product per layer and chunk, where the layer's state enters the statistic kernel. The last layer has no
translator under either lens, so it always reproduces the model's own logits. Hidden-state statistics
(`hidden_cos*`) always read the untranslated residual stream: the lens changes what is decoded, not the state.
"""
from __future__ import annotations

import time
import warnings
import weakref

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import _version
from ..arch.loading import LoadedModel, load_model
from ..arch.table import apply_logit_ops
from ..core.checks import check_bool
from ..workloads.types import Doc, Workload
from .capture import StateStore, _Capture, capture_forward
from .inputs import as_documents, check_positive_int, check_token_ids, token_rows
from .fused import lens_gram
from .fused import wanted as _fused_wanted
from .kernel import ChunkReducer, NonFiniteLogits, auto_chunk_tokens, hidden_cosines, workspace_bytes
from .result import Readout
from .statistics import FLOAT_STATS, INT_STATS, SPECS
from .tuned import TunedLensSettings, resolve_lens

# least memory one batch's captured residual streams may take (`_states_budget`; more where the statistic workspace is
# bigger): small on CPU, where it keeps the readout's memory far below the naive lens' at small vocabularies; on an
# accelerator the batch is what keeps the device busy
STATES_BYTES = {"cpu": 16 * 2**20, "accelerator": 4 * 2**30}
# fewest tokens a batch is given room for, whatever the two budgets above say. Every forward call streams all the
# weights from memory once, a cost per call, not per token: at a 2k vocabulary (Gemma-3-270M's shape, CPU), one
# forward of 512 tokens instead of two of 256 took the readout from 1.18-1.22x to 1.10x its floor (malloc page
# faults held fixed; benchmarks/README.md). Memory: (L + 1) x 512 x d_model x dtype bytes, at most ~1/20 of the naive lens'
# two [L + 1, 2048, vocab] fp32 tensors unless the vocabulary is under ~2.5 d_model
MIN_BATCH_TOKENS = 512


def _fp32_linear_head(model: LoadedModel) -> bool:
    head = model.head
    weight = getattr(head, "weight", None)
    return (type(head) is torch.nn.Linear and weight is not None and weight.dtype == torch.float32
            and weight.dim() == 2)


_GRAMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # head module -> (key, Gram matrix)


def _linear_gram(model: LoadedModel):
    """The lens' Gram matrix (`fused.lens_gram`) when the lens after the norm is linear (an fp32 linear head and
    only mul/div logit transforms), else None. Cached per head weight and its in-place version counter, so a
    model whose weights change gets a new one."""
    ops = getattr(model.logit_fn, "ops", None)
    if ops is None or not _fp32_linear_head(model) or any(kind not in ("mul", "div") for kind, _ in ops):
        return None
    scale = 1.0
    for kind, v in ops:
        scale = scale * v if kind == "mul" else scale / v
    w, b = model.head.weight, model.head.bias
    key = (w._version, None if b is None else (b.data_ptr(), b._version), scale, w.data_ptr())
    hit = _GRAMS.get(model.head)
    if hit is None or hit[0] != key:
        hit = _GRAMS[model.head] = (key, lens_gram(w.detach(), None if b is None else b.detach(), scale))
    return hit[1]


def _lens_into(model: LoadedModel):
    """A function (h, out) writing the logit lens of residual states h into the fp32 buffer out; it returns the
    normed state that went into an fp32 linear head (None on other paths).

    Same result as `model.layer_logits(h)`; for an fp32 linear head it runs the head's matmul straight into
    `out` and the model's logit transforms in place, so no [chunk x vocab] tensor is allocated per layer.
    """
    head, norm = model.head, model.final_norm
    ops = getattr(model.logit_fn, "ops", None)
    if ops is None:  # a custom logit_fn: use it as it is
        def custom(h, out):
            out.copy_(model.layer_logits(h))
        return custom
    weight = getattr(head, "weight", None)
    fast = _fp32_linear_head(model)
    head_dtype = weight.dtype if weight is not None else None

    def apply(h, out):
        x = norm(h.to(out.device))
        if fast and x.dtype == torch.float32:
            torch.mm(x, weight.t(), out=out)
            if head.bias is not None:
                out.add_(head.bias)
            apply_logit_ops(out, ops, inplace=True)
            return x
        # the head's dtype, as the model casts it (e.g. Mamba2 keeps an fp32 residual under a bf16 head)
        out.copy_(head(x if head_dtype is None else x.to(head_dtype)))
        apply_logit_ops(out, ops, inplace=True)
        return None
    return apply




def tokenize_docs(model: LoadedModel, docs, max_length: int | None, on_overflow: str):
    """Token ids and answer masks per document; answer tokens are tokenised apart from the prompt."""
    ids_list, answer_list, n_truncated = [], [], 0
    for i, d in enumerate(docs):
        if isinstance(d, str):
            d = Doc(text=d)
        if isinstance(d, Doc):
            if d.has_answer:
                p_ids = model.encode(d.prompt)
                a_ids = model.encode(d.answer, add_special_tokens=False)
                ids, answer_from = p_ids + a_ids, len(p_ids)
            else:
                if not d.text.strip():
                    raise ValueError(f"document {i} is empty: every document needs some text")
                ids, answer_from = model.encode(d.text), None
        else:
            ids, answer_from = list(d), None  # already checked integers (`inputs.as_documents`)
        if len(ids) == 0:
            raise ValueError(f"document {i} has no tokens")
        if max_length is not None and len(ids) > max_length:
            if on_overflow == "error":
                raise ValueError(f"document {i} has {len(ids)} tokens, more than max_length={max_length}; "
                                 "shorten it, raise max_length (up to the model's context), or pass "
                                 "on_overflow='truncate'")
            ids, n_truncated = ids[:max_length], n_truncated + 1
        # answer[t] is True when the token at t + 1 belongs to the answer
        answer = np.zeros(len(ids), dtype=bool)
        if answer_from is not None and answer_from < len(ids):
            answer[max(answer_from - 1, 0):len(ids) - 1] = True
        ids_list.append(ids)
        answer_list.append(answer)
    if n_truncated:
        warnings.warn(f"{n_truncated} document(s) were truncated to max_length={max_length} tokens")
    return ids_list, answer_list, n_truncated


def _validate(k, batch_size, chunk_tokens, max_batch_tokens, on_overflow, vocab):
    check_positive_int("k", k)
    if not 2 <= k <= vocab:
        raise ValueError(f"k must be an integer in [2, vocab={vocab}], got {k!r}")
    check_positive_int("batch_size", batch_size)
    if chunk_tokens is not None:
        check_positive_int("chunk_tokens", chunk_tokens)
    if max_batch_tokens is not None:
        check_positive_int("max_batch_tokens", max_batch_tokens)
    if on_overflow not in ("truncate", "error"):
        raise ValueError(f"on_overflow must be 'truncate' or 'error', got {on_overflow!r}")


def _batches(order, lengths, batch_size: int, max_tokens: int) -> list:
    """Split documents (in `order`, longest first) into batches of at most batch_size documents and at most
    max_tokens padded tokens (a longer document goes alone). The captured states of a batch, (L + 1) x
    tokens x d_model, are what the readout holds besides its workspace."""
    batches, cur = [], []
    for d in order:
        if cur and (len(cur) == batch_size or (len(cur) + 1) * int(lengths[cur[0]]) > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(d)
    return batches + [cur] if cur else batches


def _states_budget(model: LoadedModel, workspace_bytes: int) -> tuple[int, int]:
    """(floor, tokens): STATES_BYTES for where the embeddings live, and how many tokens a batch may hold: those whose
    (L + 1) residual streams fit in max(that floor, the statistic workspace's bytes), and at least MIN_BATCH_TOKENS.
    A batch's states may take as much memory as the workspace that reduces them (at large vocabularies that is
    100s of MiB, and fewer, larger batches save a forward call's fixed cost: at 50k, one forward of 512 tokens
    instead of two of 256 took 1-3% off a readout here)."""
    w = model.model.get_input_embeddings().weight
    per_token = (model.n_layers + 1) * w.shape[1] * w.element_size()
    floor = STATES_BYTES["cpu" if w.device.type == "cpu" else "accelerator"]
    return floor, max(max(floor, workspace_bytes) // per_token, MIN_BATCH_TOKENS)


def _flat_states(capture: _Capture) -> list:
    """The captured [docs, T, d] states as [docs x T, d] views (padding included), taken out of `capture`."""
    flat = [s.reshape(-1, s.shape[-1]) for s in capture.states]
    capture.states = [None] * len(flat)
    return flat


def _backbone(model):
    base = getattr(model, "base_model", None)
    return base if base is not None and base is not model else model


@torch.inference_mode()
def readout(model, inputs, *, k: int = 5, batch_size: int = 8, chunk_tokens: int | None = None,
            max_batch_tokens: int | None = None, max_length: int | None = None, on_overflow: str = "truncate",
            progress: bool = True, workload: str | None = None, revision: str | None = None, lens="logit",
            lens_settings: TunedLensSettings | None = None, kernel: str = "auto") -> Readout:
    """Read out every layer of `model` on `inputs` and reduce it to per-token statistics.

    model: a LoadedModel or a name for `load_model`. inputs: a str, a list of str (or Doc), one list of
    token ids, a list of token-id lists (Python or NumPy integers), a 1-D or 2-D integer tensor/array, or a
    Workload; anything else is a TypeError, an id outside the vocabulary a ValueError (`eeutils.lens.inputs`).
    k: size of the top-k sets (>= 2). max_length: tokens per document (default: the model's
    context); longer documents are truncated with a warning, or rejected with on_overflow="error".
    lens: "logit" (default), "tuned" (translators from `eeutils.lens.tuned.tuned_lens`, trained on the corpus
    train split with `lens_settings` or loaded from the cache) or a `TunedLens` object.
    Memory: the residual streams of one batch ((L + 1) x batch tokens x d_model in the model's dtype; a batch
    is at most batch_size documents and max_batch_tokens padded tokens, default: what fits in the workspace's size,
    at least 16 MiB on the CPU and 4 GiB on an accelerator, and at least MIN_BATCH_TOKENS = 512 tokens and one document)
    plus one [chunk_tokens x 4 x vocab] fp32 workspace (see `eeutils.lens.kernel.ChunkReducer`;
    chunk_tokens default: `auto_chunk_tokens(vocab)`, 128-256 rows, <= 512 MiB). Neither changes a number.
    kernel: "fused" reduces each layer in one compiled pass (`eeutils.lens.fused`, ~3x faster statistics at large
    vocabularies), "eager" in separate torch passes, "auto" (default) fused from a 16k vocabulary up (the
    environment variable EEUTILS_FUSED_KERNEL=0/1 overrides "auto"). The two agree to fp32 summation order;
    the one used is recorded in the result's meta["kernel"].
    """
    check_bool("progress", progress)
    if not isinstance(model, LoadedModel):
        model = load_model(model, revision=revision)
    _validate(k, batch_size, chunk_tokens, max_batch_tokens, on_overflow, model.vocab_size)
    chunk_tokens = chunk_tokens or auto_chunk_tokens(model.vocab_size)
    fused = _fused_wanted(model.vocab_size, kernel)
    gram = _linear_gram(model) if fused else None
    states_floor, default_tokens = _states_budget(model, workspace_bytes(chunk_tokens, model.vocab_size))
    max_batch_tokens = max_batch_tokens or default_tokens
    translator, lens_meta = resolve_lens(model, lens, lens_settings, progress=progress)
    docs, wl_name = as_documents(inputs)
    limit = model.max_length
    if max_length is not None:
        check_positive_int("max_length", max_length)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the model's context of {limit} tokens")
        limit = max_length
    ids_list, answer_list, n_trunc = tokenize_docs(model, docs, limit, on_overflow)
    check_token_ids(ids_list, model.vocab_size, model.name)

    L = model.n_layers
    lengths = np.array([len(x) for x in ids_list])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n_tok = int(offsets[-1])
    out = {s.name: np.empty((n_tok, L + 1), dtype=s.dtype) for s in SPECS}
    topk_out = np.empty((n_tok, L + 1, k), dtype=np.int32)
    targets = np.full(n_tok, -1, dtype=np.int64)
    for i, ids in enumerate(ids_list):
        targets[offsets[i]:offsets[i + 1] - 1] = ids[1:]

    order = np.argsort(-lengths, kind="stable")  # longest first: less padding, early OOM
    capture = _Capture(model.blocks, into=StateStore(L + 1).keep)
    backbone = _backbone(model.model)
    first_device = model.model.get_input_embeddings().weight.device
    decode = _lens_into(model)
    reducer = None
    bar = tqdm(total=n_tok, desc=f"readout {model.name}", unit="tok", disable=not progress, leave=False)
    t0 = time.perf_counter()
    try:
        for batch in _batches(order, lengths, batch_size, max_batch_tokens):
            batch = np.asarray(batch)
            T = int(lengths[batch].max())
            ids = torch.zeros((len(batch), T), dtype=torch.long)
            mask = torch.zeros((len(batch), T), dtype=torch.long)
            for r, d in enumerate(batch):
                ids[r, :lengths[d]] = torch.tensor(ids_list[d])
                mask[r, :lengths[d]] = 1
            if reducer is not None and reducer.buf.nbytes <= states_floor:
                reducer = None  # a workspace this small is cheaper to rebuild than to hold through the forward
            backbone(input_ids=ids.to(first_device), attention_mask=mask.to(first_device), use_cache=False)
            # rows of the flattened valid tokens, mapped to global token indices; `valid`: their rows in the
            # flattened [docs x T] states (None when nothing is padded)
            rows = np.concatenate([np.arange(offsets[d], offsets[d + 1]) for d in batch])
            valid = None if bool(mask.all()) else mask.flatten().nonzero().squeeze(1).to(model.device)
            states = _flat_states(capture)
            tgt = torch.from_numpy(targets[rows])
            hid_last, hid_prev = hidden_cosines(states, model.device)
            if valid is not None:
                hid_last, hid_prev = hid_last[:, valid], hid_prev[:, valid]

            def state(layer, sl):  # layer's states of the chunk's tokens, on the model's device
                s = states[layer]
                return (s[sl] if valid is None else s.index_select(0, valid[sl].to(s.device))).to(model.device)
            for c in range(0, len(rows), chunk_tokens):
                sl = slice(c, c + chunk_tokens)
                dst = rows[sl]
                n = len(dst)
                if reducer is None or reducer.buf.shape[0] < n:
                    reducer = None  # free the smaller workspace first
                    reducer = ChunkReducer(min(chunk_tokens, len(rows)), model.vocab_size, k, L, model.device,
                                           fused=fused, gram=gram)
                t_chunk = tgt[sl].to(model.device)
                h_last = state(L, sl)
                x_last = decode(h_last, reducer.slot(n, final=True))
                try:
                    reducer.final(t_chunk, x_last)
                except NonFiniteLogits as e:  # report the first layer where this token went wrong
                    row = e.args[0]
                    first = next((layer for layer in range(L + 1)
                                  if not torch.isfinite(model.layer_logits(state(layer, sl)[row:row + 1])).all()), L)
                    _raise_nonfinite(first, dst[row], offsets)
                for layer in range(L):
                    h = state(layer, sl)
                    x = decode(translator.translate(layer, h) if translator is not None else h, reducer.slot(n))
                    reducer.layer(layer, x)
                try:
                    fl, it = reducer.finish((hid_last[:, sl], hid_prev[:, sl]))
                except NonFiniteLogits as e:
                    _raise_nonfinite(e.args[0], dst[e.args[1]], offsets)
                fl_np, it_np = fl.cpu().numpy(), it.cpu().numpy()
                for i, name in enumerate(FLOAT_STATS):
                    out[name][dst] = fl_np[:, :, i]
                for i, name in enumerate(INT_STATS):
                    out[name][dst] = it_np[:, :, i]
                topk_out[dst] = it_np[:, :, len(INT_STATS):]
                fused = reducer.fused  # False from here on if the compiled kernel failed
                bar.update(n)
            del states
    finally:
        capture.remove()
        bar.close()
    elapsed = time.perf_counter() - t0

    doc = np.repeat(np.arange(len(ids_list), dtype=np.int32), lengths)
    position = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
    meta = model.describe()
    meta.update(workload=wl_name or workload or "", k=k, n_docs=len(ids_list), n_tokens=n_tok,
                n_truncated=n_trunc, max_length=limit, chunk_tokens=chunk_tokens, batch_size=batch_size,
                max_batch_tokens=max_batch_tokens, kernel="fused" if fused else "eager", **lens_meta,
                seconds=round(elapsed, 3), kit_version=_version.__version__)
    return Readout(stats=out, topk=topk_out, doc=doc, position=position,
                   token=np.concatenate([np.asarray(x, dtype=np.int64) for x in ids_list]),
                   target=targets, answer=np.concatenate(answer_list), meta=meta)


def _locate(token_index: int, offsets) -> tuple[int, int]:
    d = int(np.searchsorted(offsets, token_index, side="right") - 1)
    return d, int(token_index - offsets[d])


def _raise_nonfinite(layer, token_index, offsets):
    d, pos = _locate(int(token_index), offsets)
    raise NonFiniteLogits(
        f"NaN or inf logits at layer {layer}, document {d}, position {pos}. Common causes: fp16 overflow "
        "(load with dtype='bfloat16' or 'float32'), corrupted weights, or a custom layer producing NaN.")


__all__ = ["capture_forward", "check_last_layer", "readout", "tokenize_docs"]


def check_last_layer(model: LoadedModel, input_ids) -> float:
    """Max |readout logits at layer L - the model's own logits| on `input_ids` (a sanity check for adapters).
    input_ids: token ids in the model's vocabulary (`inputs.token_rows`; others are a ValueError naming them)."""
    input_ids = token_rows(input_ids, model.vocab_size)
    out, states = capture_forward(model, input_ids)
    own = out.logits.float()
    return float((model.layer_logits(states[-1]).to(own.device) - own).abs().max())
