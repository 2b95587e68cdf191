"""The measured FLOP floor of a logit-lens readout: one full forward (the model's own head included) plus one
unembedding matmul per layer 0..L-1 into a reused buffer, no statistics.

Shared by the benchmarks; works for any eeutils.LoadedModel in any dtype on any device (the matmul runs in the
head's dtype, so a bf16 model gets bf16 matmuls, the fastest the lens arithmetic can be).
"""
from __future__ import annotations

import torch


def _capture_block_inputs(blocks, states: list):
    """Pre-hooks storing the residual stream entering each block (= layer i's state for i = 0..L-1)."""
    def make(i):
        def pre(module, args, kwargs):
            h = args[0] if args else kwargs.get("hidden_states", kwargs.get("hidden_state"))
            states[i] = h.detach()
        return pre
    return [b.register_forward_pre_hook(make(i), with_kwargs=True) for i, b in enumerate(blocks)]


@torch.inference_mode()
def floor_pass(lm, input_ids: torch.Tensor, chunk_tokens: int, buf: torch.Tensor | None = None) -> torch.Tensor:
    """Forward + the L per-layer unembeddings of `input_ids` [docs, T] (already on the model's device).

    Returns the reused [chunk, vocab] buffer (pass it back in to skip its allocation next time)."""
    L, head, norm = lm.n_layers, lm.head, lm.final_norm
    W = head.weight
    states: list = [None] * L
    handles = _capture_block_inputs(lm.blocks, states)
    try:
        lm.model(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    n = input_ids.numel()
    rows = min(chunk_tokens, n)
    if buf is None or buf.shape[0] < rows or buf.dtype != W.dtype or buf.device != W.device:
        # rows padded to a multiple of 256 columns, as in the readout's workspace: an fp32 GEMM writing rows that
        # are not 64-byte aligned (V = 50257) runs ~35% slower on CPU, which would make the floor no floor
        padded = -(-W.shape[0] // 256) * 256
        buf = torch.empty((rows, padded), dtype=W.dtype, device=W.device)[:, :W.shape[0]]
    flat = [s.reshape(n, -1) for s in states]
    for c in range(0, n, chunk_tokens):
        for s in flat:
            x = norm(s[c:c + chunk_tokens].to(W.device)).to(W.dtype)
            torch.mm(x, W.t(), out=buf[:x.shape[0]])
    return buf
