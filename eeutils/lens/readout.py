"""The streaming readout: one forward pass per batch, every layer reduced to per-token statistics.

Each block's residual stream is captured with hooks (a pre-hook on the first block gives layer 0, forward hooks
give layers 1..L), so the result does not depend on how a family lays out `output_hidden_states`. Only the
backbone runs (the model's own head is skipped); every layer, the last included, is then decoded by the lens in
token chunks, so memory holds at most [chunk x vocab] logits at a time, never [layers x tokens x vocab]:

    for each batch of documents: forward (`_Pass.forward`)
        for each chunk of its tokens, for each layer: lens (`Lens.transform_hidden`, then the model's final norm,
        head and logit transforms, `Unembed.into`), reduce (`kernel.ChunkReducer`)

Lens: a lens object (`eeutils.lens.lenses`); `lens="logit"` decodes each layer's state as it is (the logit lens),
`lens="tuned"` first maps it through that layer's affine translator (`eeutils.lens.tuned`, trained and cached per
model), one [chunk x d] x [d x d] product per layer and chunk, where the layer's state enters the statistic
kernel. The last layer has no translator under either lens, so it always reproduces the model's own logits.
Hidden-state statistics (`hidden_cos*`) always read the untransformed residual stream: the lens changes what is
decoded, not the state.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import _version
from ..arch.loading import LoadedModel, load_model
from ..core.checks import check_bool
from ..core.settings import with_settings
from ..workloads.types import Doc, Workload
from .capture import StateStore, Capture, capture_forward
from .fused import check_kernel
from .fused import requested as fused_requested
from .fused import unavailable as fused_unavailable
from .fused import wanted as fused_wanted
from .inputs import as_documents, check_positive_int, check_token_ids, token_rows
from .kernel import ChunkReducer, NonFiniteLogits, auto_chunk_tokens, hidden_cosines, to_host, workspace_bytes
from .lenses import Lens, Unembed, as_lens
from .result import Readout
from .statistics import REGISTRY
from .tuned import TunedLensSettings

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


@dataclass(frozen=True)
class ReadoutConfig:
    """What `readout` reads and how. k: the size of the top-k sets (>= 2); max_length: tokens per document
    (default: the model's context), longer ones truncated with a warning or, with on_overflow="error", refused.
    The rest change no number: batch_size / max_batch_tokens: documents and padded tokens per forward (default:
    what fits the budget of `_states_budget`); chunk_tokens: token rows of the statistic workspace (default
    `auto_chunk_tokens`); kernel: "auto", "fused" or "eager" (`eeutils.lens.fused.wanted`); progress: a bar."""

    k: int = 5
    batch_size: int = 8
    chunk_tokens: int | None = None
    max_batch_tokens: int | None = None
    max_length: int | None = None
    on_overflow: str = "truncate"
    kernel: str = "auto"
    progress: bool = True

    def __post_init__(self):
        check_positive_int("k", self.k)
        check_positive_int("batch_size", self.batch_size)
        for name in ("chunk_tokens", "max_batch_tokens", "max_length"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.on_overflow not in ("truncate", "error"):
            raise ValueError(f"on_overflow must be 'truncate' or 'error', got {self.on_overflow!r}")
        check_kernel(self.kernel)
        check_bool("progress", self.progress)


def _linear_gram(model: LoadedModel):
    """The Gram matrix of the model's own decoding after the norm when it is linear (`Unembed.gram`), else None."""
    return Unembed(model).gram()


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


def _flat_states(capture: Capture) -> list:
    """The captured [docs, T, d] states as [docs x T, d] views (padding included), taken out of `capture`."""
    flat = [s.reshape(-1, s.shape[-1]) for s in capture.states]
    capture.states = [None] * len(flat)
    return flat


def backbone_of(model):
    base = getattr(model, "base_model", None)
    return base if base is not None and base is not model else model


def _locate(token_index: int, offsets) -> tuple[int, int]:
    d = int(np.searchsorted(offsets, token_index, side="right") - 1)
    return d, int(token_index - offsets[d])


def _raise_nonfinite(layer, token_index, offsets):
    d, pos = _locate(int(token_index), offsets)
    raise NonFiniteLogits(
        f"NaN or inf logits at layer {layer}, document {d}, position {pos}. Common causes: fp16 overflow "
        "(load with dtype='bfloat16' or 'float32'), corrupted weights, or a custom layer producing NaN.")


@dataclass
class _Tokens:
    """The documents as token ids: per document its ids and answer mask, and per token its next-token target
    (-1 at a document's last token)."""

    ids: list
    answers: list
    n_truncated: int
    limit: int | None  # tokens per document
    workload: str | None  # the workload's name when the inputs were a Workload
    lengths: np.ndarray
    offsets: np.ndarray  # [docs + 1]: document d's tokens are offsets[d]:offsets[d + 1]
    targets: np.ndarray

    @property
    def n(self) -> int:
        return int(self.offsets[-1])


def _token_limit(model: LoadedModel, max_length: int | None) -> int | None:
    """Tokens per document: max_length (checked against the model's context), else the model's context."""
    limit = model.max_length
    if max_length is not None:
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the model's context of {limit} tokens")
        limit = max_length
    return limit


def _tokens(model: LoadedModel, inputs, cfg: ReadoutConfig) -> _Tokens:
    """The checked inputs (`inputs.as_documents`) tokenised, truncated to the limit, with their targets."""
    docs, wl_name = as_documents(inputs)
    limit = _token_limit(model, cfg.max_length)
    ids_list, answer_list, n_trunc = tokenize_docs(model, docs, limit, cfg.on_overflow)
    check_token_ids(ids_list, model.vocab_size, model.name)
    lengths = np.array([len(x) for x in ids_list])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    targets = np.full(int(offsets[-1]), -1, dtype=np.int64)
    for i, ids in enumerate(ids_list):
        targets[offsets[i]:offsets[i + 1] - 1] = ids[1:]
    return _Tokens(ids_list, answer_list, n_trunc, limit, wl_name, lengths, offsets, targets)


@dataclass(frozen=True)
class _Plan:
    """Memory and kernel choices of one readout (none changes a number)."""

    chunk_tokens: int
    max_batch_tokens: int
    states_floor: int  # a workspace this small is rebuilt per batch rather than held through the forward
    fused: bool  # the fused kernel is tried (`fused.wanted`)
    asked_fused: bool  # it was asked for (`fused.requested`): if it is not used, the meta says why


def _plan(model: LoadedModel, cfg: ReadoutConfig) -> _Plan:
    chunk = cfg.chunk_tokens or auto_chunk_tokens(model.vocab_size)
    floor, tokens = _states_budget(model, workspace_bytes(chunk, model.vocab_size))
    return _Plan(chunk, cfg.max_batch_tokens or tokens, floor, fused_wanted(model.vocab_size, cfg.kernel),
                 fused_requested(model.vocab_size, cfg.kernel))


class _Pass:
    """One readout's loop and its outputs: for each batch, forward; for each chunk of its tokens and each layer,
    lens, then reduce into the per-token statistic arrays."""

    def __init__(self, model: LoadedModel, lens: Lens, plan: _Plan, toks: _Tokens, k: int):
        self.model, self.lens, self.plan, self.toks, self.k = model, lens, plan, toks, k
        self.L = model.n_layers
        self.fused = plan.fused  # False from the first chunk whose compiled kernel failed (the meta says why)
        self.gram = lens.unembed.gram() if plan.fused else None
        self.backbone = backbone_of(model.model)
        self.first_device = model.model.get_input_embeddings().weight.device
        self.reducer: ChunkReducer | None = None
        self.out = {s.name: np.empty((toks.n, self.L + 1), dtype=s.dtype) for s in REGISTRY.values()}
        self.topk = np.empty((toks.n, self.L + 1, k), dtype=np.int32)
        self.states = self.valid = None  # the current batch's

    def run(self, batch_size: int, progress: bool) -> float:
        """Read every batch of documents; returns the seconds it took."""
        toks = self.toks
        order = np.argsort(-toks.lengths, kind="stable")  # longest first: less padding, early OOM
        capture = Capture(self.model.blocks, into=StateStore(self.L + 1).keep)
        bar = tqdm(total=toks.n, desc=f"readout {self.model.name}", unit="tok", disable=not progress, leave=False)
        t0 = time.perf_counter()
        try:
            for batch in _batches(order, toks.lengths, batch_size, self.plan.max_batch_tokens):
                self.batch(np.asarray(batch), capture, bar)
        finally:
            capture.remove()
            bar.close()
        return time.perf_counter() - t0

    def forward(self, batch: np.ndarray, capture: Capture) -> np.ndarray:
        """Run the backbone on one padded batch of documents. Keeps its states ([docs x T, d] per layer) and the
        rows of its real tokens in them (`valid`, None when nothing is padded); returns their token indices."""
        lengths, offsets = self.toks.lengths, self.toks.offsets
        T = int(lengths[batch].max())
        ids = torch.zeros((len(batch), T), dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for r, d in enumerate(batch):
            ids[r, :lengths[d]] = torch.tensor(self.toks.ids[d])
            mask[r, :lengths[d]] = 1
        if self.reducer is not None and self.reducer.buf.nbytes <= self.plan.states_floor:
            self.reducer = None  # a workspace this small is cheaper to rebuild than to hold through the forward
        self.backbone(input_ids=ids.to(self.first_device), attention_mask=mask.to(self.first_device),
                      use_cache=False)
        self.states = _flat_states(capture)
        self.valid = None if bool(mask.all()) else mask.flatten().nonzero().squeeze(1).to(self.model.device)
        return np.concatenate([np.arange(offsets[d], offsets[d + 1]) for d in batch])

    def batch(self, batch: np.ndarray, capture: Capture, bar) -> None:
        """Forward one batch, then reduce its tokens chunk by chunk."""
        rows = self.forward(batch, capture)
        tgt = torch.from_numpy(self.toks.targets[rows])
        hid_last, hid_prev = hidden_cosines(self.states, self.model.device)
        if self.valid is not None:
            hid_last, hid_prev = hid_last[:, self.valid], hid_prev[:, self.valid]
        for c in range(0, len(rows), self.plan.chunk_tokens):
            sl = slice(c, c + self.plan.chunk_tokens)
            self.chunk(sl, rows, tgt[sl], (hid_last[:, sl], hid_prev[:, sl]))
            bar.update(len(rows[sl]))
        self.states = self.valid = None

    def state(self, layer: int, sl: slice) -> torch.Tensor:
        """Layer `layer`'s states of the chunk `sl` of the batch's real tokens, on the model's device."""
        s = self.states[layer]
        return (s[sl] if self.valid is None else s.index_select(0, self.valid[sl].to(s.device))).to(self.model.device)

    def decode(self, layer: int, sl: slice, slot: torch.Tensor):
        """The lens of layer `layer` on the chunk, written into the workspace slot (`Unembed.into`)."""
        return self.lens.unembed.into(self.lens.transform_hidden(self.state(layer, sl), layer), slot)

    def workspace(self, n: int, n_rows: int) -> ChunkReducer:
        """The statistic workspace, rebuilt when it has fewer than n rows."""
        if self.reducer is None or self.reducer.buf.shape[0] < n:
            self.reducer = None  # free the smaller workspace first
            self.reducer = ChunkReducer(min(self.plan.chunk_tokens, n_rows), self.model.vocab_size, self.k, self.L,
                                        self.model.device, fused=self.fused, gram=self.gram)
        return self.reducer

    def chunk(self, sl: slice, rows: np.ndarray, tgt: torch.Tensor, hidden: tuple) -> None:
        """Every layer of one chunk of tokens: lens, then reduce; the statistics go to the output arrays."""
        dst, L = rows[sl], self.L
        n = len(dst)
        red = self.workspace(n, len(rows))
        x_last = self.decode(L, sl, red.slot(n, final=True))
        try:
            red.final(tgt.to(self.model.device), x_last)
        except NonFiniteLogits as e:  # report the first layer where this token went wrong
            _raise_nonfinite(self.first_nonfinite(sl, e.args[0]), dst[e.args[0]], self.toks.offsets)
        for layer in range(L):
            red.layer(layer, self.decode(layer, sl, red.slot(n)))
        try:
            stats = red.finish(hidden)
        except NonFiniteLogits as e:
            _raise_nonfinite(e.args[0], dst[e.args[1]], self.toks.offsets)
        self.store(dst, stats)
        self.fused = red.fused  # False from here on if the compiled kernel failed

    def first_nonfinite(self, sl: slice, row: int) -> int:
        """The first layer whose logits (the model's decoding of the state) at the chunk's `row` are not finite."""
        return next((layer for layer in range(self.L + 1)
                     if not torch.isfinite(self.lens.unembed(self.state(layer, sl)[row:row + 1])).all()), self.L)

    def store(self, dst: np.ndarray, stats: dict) -> None:
        """A chunk's statistics by name ([n, L + 1, ...] from `ChunkReducer.finish`) into the rows dst."""
        for name, values in to_host(stats).items():
            (self.topk if name == "topk" else self.out[name])[dst] = values

    def meta(self, cfg: ReadoutConfig, workload: str | None, seconds: float) -> dict:
        """The readout's metadata: the model, the inputs, the settings, the kernel used, the lens' record."""
        toks, plan = self.toks, self.plan
        meta = self.model.describe()
        meta.update(workload=toks.workload or workload or "", k=self.k, n_docs=len(toks.ids), n_tokens=toks.n,
                    n_truncated=toks.n_truncated, max_length=toks.limit, chunk_tokens=plan.chunk_tokens,
                    batch_size=cfg.batch_size, max_batch_tokens=plan.max_batch_tokens,
                    kernel="fused" if self.fused else "eager", **self.lens.record(), seconds=round(seconds, 3),
                    kit_version=_version.__version__)
        if plan.asked_fused and not self.fused:  # asked for but not used: recorded, never a silent fallback
            meta["kernel_fallback"] = fused_unavailable() or "the fused kernel failed"
        return meta

    def result(self, meta: dict) -> Readout:
        toks = self.toks
        return Readout(stats=self.out, topk=self.topk, meta=meta, target=toks.targets,
                       doc=np.repeat(np.arange(len(toks.ids), dtype=np.int32), toks.lengths),
                       position=np.concatenate([np.arange(n, dtype=np.int32) for n in toks.lengths]),
                       token=np.concatenate([np.asarray(x, dtype=np.int64) for x in toks.ids]),
                       answer=np.concatenate(toks.answers))


@torch.inference_mode()
def readout(model, inputs, *, lens="logit", lens_settings: TunedLensSettings | None = None,
            config: ReadoutConfig | None = None, workload: str | None = None, revision: str | None = None,
            **settings) -> Readout:
    """Read out every layer of `model` on `inputs` and reduce it to per-token statistics.

    model: a LoadedModel or a name for `load_model` (at `revision`). inputs: a str, a list of str (or Doc), one
    list of token ids, a list of token-id lists (Python or NumPy integers), a 1-D or 2-D integer tensor/array, or a
    Workload; anything else is a TypeError, an id outside the vocabulary a ValueError (`eeutils.lens.inputs`).
    lens: a lens object (`eeutils.lens.lenses.Lens`: `LogitLens`, a `TunedLens`, your own), or by name "logit"
    (default) or "tuned" (translators from `eeutils.lens.tuned.tuned_lens`, trained on the corpus train split with
    `lens_settings` or loaded from the cache), resolved by `as_lens`; recorded in meta["lens"], ["lens_digest"].
    config / settings: a `ReadoutConfig`, or its fields as keywords (k=5, batch_size=8, chunk_tokens, max_batch_tokens,
    max_length, on_overflow="truncate", kernel="auto", progress=True); keywords override the config.
    k: size of the top-k sets (>= 2). max_length: tokens per document (default: the model's context); longer
    documents are truncated with a warning, or rejected with on_overflow="error".
    Memory: the residual streams of one batch ((L + 1) x batch tokens x d_model in the model's dtype; a batch
    is at most batch_size documents and max_batch_tokens padded tokens, default: what fits in the workspace's size,
    at least 16 MiB on the CPU and 4 GiB on an accelerator, and at least MIN_BATCH_TOKENS = 512 tokens and one document)
    plus one [chunk_tokens x 4 x vocab] fp32 workspace (see `eeutils.lens.kernel.ChunkReducer`;
    chunk_tokens default: `auto_chunk_tokens(vocab)`, 128-256 rows, <= 512 MiB). Neither changes a number.
    kernel: "fused" reduces each layer in one compiled pass (`eeutils.lens.fused`, ~3x faster statistics at large
    vocabularies), "eager" in separate torch passes, "auto" (default) fused from a 16k vocabulary up (the
    environment variable EEUTILS_FUSED_KERNEL=0/1 overrides "auto"). The two agree to fp32 summation order;
    the one used is recorded in meta["kernel"], and meta["kernel_fallback"] says why when the fused kernel was
    asked for but could not compile here.
    """
    cfg = with_settings(config, settings, ReadoutConfig, "readout")
    if not isinstance(model, LoadedModel):
        model = load_model(model, revision=revision)
    if not 2 <= cfg.k <= model.vocab_size:
        raise ValueError(f"k must be an integer in [2, vocab={model.vocab_size}], got {cfg.k!r}")
    plan = _plan(model, cfg)
    chosen = as_lens(model, lens, lens_settings, progress=cfg.progress)
    run = _Pass(model, chosen, plan, _tokens(model, inputs, cfg), cfg.k)
    seconds = run.run(cfg.batch_size, cfg.progress)
    return run.result(run.meta(cfg, workload, seconds))


__all__ = ["ReadoutConfig", "capture_forward", "check_last_layer", "readout", "tokenize_docs"]


def check_last_layer(model: LoadedModel, input_ids) -> float:
    """Max |readout logits at layer L - the model's own logits| on `input_ids` (a sanity check for adapters).
    input_ids: token ids in the model's vocabulary (`inputs.token_rows`; others are a ValueError naming them)."""
    input_ids = token_rows(input_ids, model.vocab_size)
    out, states = capture_forward(model, input_ids)
    own = out.logits.float()
    return float((model.layer_logits(states[-1]).to(own.device) - own).abs().max())
