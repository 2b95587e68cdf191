"""The methods `readout_bench.py` times: building the benchmark model, the FLOP count, and each way of
reading out every layer (plain forward, the FLOP floor, eeutils' readout, its pre-optimisation
reference, the naive lens, TransformerLens, nnsight). Statistic names come from the registry
`eeutils.lens.statistics`."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eeutils.lens.statistics import REGISTRY  # noqa: E402

STAT_NAMES = tuple(REGISTRY)
# the statistics that depend on the logits alone (the naive, TransformerLens and nnsight lenses compute these)
LOGIT_STATS = tuple(s.name for s in REGISTRY.values() if s.kernel_pass != "hidden cosine")


# ------------------------------------------------------------------------------------- memory probes
def rss():
    """This process's resident memory now, in bytes (Linux)."""
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def peak_rss():
    """This process's peak resident memory since start (or the last `reset_peak_rss`), in bytes (Linux)."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def reset_peak_rss():
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- model
def build_model(args):
    """(LoadedModel, input ids [n_docs, doc_len]) — deterministic, so every subprocess has the same."""
    import torch

    import eeutils

    if args.model_dir:  # the saved copy (TransformerLens needs a folder)
        lm = eeutils.load_model(args.model_dir, tokenizer=False)
    elif args.model:
        lm = eeutils.load_model(args.model, tokenizer=False)
    else:
        torch.manual_seed(0)
        d, L, V = args.d_model, args.layers, args.vocab
        if args.arch == "gemma3":  # Gemma-3-270M's shape (--layers / --d-model are ignored)
            from transformers import Gemma3ForCausalLM, Gemma3TextConfig
            cfg = Gemma3TextConfig(vocab_size=V, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                                   num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                                   max_position_embeddings=max(args.doc_len, 64), tie_word_embeddings=True)
            model = Gemma3ForCausalLM(cfg)
        elif args.arch == "gpt2":
            from transformers import GPT2Config, GPT2LMHeadModel
            cfg = GPT2Config(vocab_size=V, n_positions=max(args.doc_len, 64), n_embd=d, n_layer=L,
                             n_head=max(d // 64, 1))
            model = GPT2LMHeadModel(cfg)
        else:
            from transformers import LlamaConfig, LlamaForCausalLM
            cfg = LlamaConfig(vocab_size=V, hidden_size=d, intermediate_size=(8 * d // 3 + 63) // 64 * 64,
                              num_hidden_layers=L, num_attention_heads=max(d // 64, 1),
                              num_key_value_heads=max(d // 64, 1), max_position_embeddings=max(args.doc_len, 64))
            model = LlamaForCausalLM(cfg)
        lm = eeutils.wrap_model(model.float().eval(), name=f"random-{args.arch}-L{L}-d{d}-V{V}")
    n_docs = max(args.tokens // args.doc_len, 1)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, lm.vocab_size, (n_docs, args.doc_len), generator=g)
    return lm, ids


def flop_counts(lm, ids):
    """Forward FLOPs, lens FLOPs and the formulas, per the issue's rough count."""
    L, V = lm.n_layers, lm.vocab_size
    d = int(lm.describe()["d_model"])
    n_docs, T_doc = ids.shape
    T = n_docs * T_doc
    p_ne = sum(p.numel() for p in lm.blocks.parameters()) + sum(p.numel() for p in lm.final_norm.parameters())
    dense = 2 * p_ne * T
    head = 2 * d * V * T
    attn = 4 * T_doc ** 2 * d * L / 2 * n_docs  # causal: half of QK^T and AV, per document
    forward = dense + head + attn
    lens = L * 2 * d * V * T  # one unembedding per layer 0..L-1; the final layer's logits are reused
    return {
        "params_non_embedding": p_ne, "tokens": T, "n_docs": n_docs, "doc_len": T_doc, "d_model": d,
        "vocab": V, "n_layers": L,
        "forward_flops": forward, "lens_flops": lens, "bound_flops": forward + lens,
        "formula": ("forward = 2*P_nonemb*T + 2*d*V*T (head) + 4*T_doc^2*d*L/2 per doc (causal attention); "
                    "bound = forward + L*2*d*V*T (one unembedding per layer, final layer reused)"),
    }


# -------------------------------------------------------------------------------------------- methods
def dense_stats(Z, H, target, k):
    """The statistics from all layers' logits Z [L+1, T, V] and states H [L+1, T, d], the plain way."""
    import torch
    import torch.nn.functional as F

    Lp1, T, _ = Z.shape
    out = {n: np.empty((T, Lp1), dtype=np.int32 if n in ("top1", "rank_of_final") else np.float32)
           for n in STAT_NAMES}
    zf = Z[-1]
    logp_f = torch.log_softmax(zf, -1)
    p_f = logp_f.exp()
    top_f = torch.topk(zf, k, -1).indices
    has_t = target >= 0
    t = target.clamp_min(0)[:, None]
    for layer in range(Lp1):
        z = Z[layer]
        logp = torch.log_softmax(z, -1)
        p = logp.exp()
        ids = torch.topk(z, k, -1).indices
        vals = p.gather(1, ids[:, :2])
        st = {
            "top1": ids[:, 0], "max_prob": vals[:, 0], "margin": vals[:, 0] - vals[:, 1],
            "entropy": -(p * logp).sum(-1), "kl_to_final": (p_f * (logp_f - logp)).sum(-1).clamp_min(0),
            "ce": torch.where(has_t, -logp.gather(1, t)[:, 0], torch.full((T,), float("nan"))),
            "rank_of_final": (z > z.gather(1, top_f[:, :1])).sum(-1),
            "logit_cos": F.cosine_similarity(z, zf, -1, eps=1e-30),
            "hidden_cos": F.cosine_similarity(H[layer], H[-1], -1, eps=1e-30),
            "hidden_cos_prev": (torch.ones(T) if layer == 0
                                else F.cosine_similarity(H[layer], H[layer - 1], -1, eps=1e-30)),
            "topk_overlap": (ids[:, :, None] == top_f[:, None, :]).any(-1).sum(-1).float() / k,
        }
        for n, v in st.items():
            out[n][:, layer] = v.numpy()
    return out


def _targets(ids):
    import torch
    tgt = torch.full_like(ids, -1)
    tgt[:, :-1] = ids[:, 1:]
    return tgt.reshape(-1)


def run_forward(lm, ids, args):
    lm.model(input_ids=ids, use_cache=False).logits
    return None


def chunk_rows(lm, args) -> int:
    """--chunk, or (0) the readout's own choice for this vocabulary."""
    from eeutils.lens.kernel import auto_chunk_tokens
    return args.chunk or auto_chunk_tokens(lm.vocab_size)


def run_floor(lm, ids, args):
    """Forward, then for every chunk the L unembedding matmuls of the lens into one reused buffer
    (`benchmarks/_floor.py`)."""
    from _floor import floor_pass
    floor_pass(lm, ids, chunk_rows(lm, args))
    return None


def run_readout(lm, ids, args, chunk=None, kernel=None):
    """eeutils.readout with its default batching (<= 8 documents; captured states within the workspace's size, at
    least 16 MiB, and room for at least 512 tokens).
    kernel: the readout's statistic kernel ("fused", "eager"; default: args.kernel, else the readout's "auto")."""
    sys.path.insert(0, str(ROOT))
    import eeutils
    r = eeutils.readout(lm, ids.tolist(), k=args.k, chunk_tokens=chunk or args.chunk or None,
                        progress=False, kernel=kernel or getattr(args, "kernel", "auto"))
    return {n: r[n] for n in STAT_NAMES}


def run_readout_eager(lm, ids, args):
    """The readout with the eager statistic kernel (separate torch passes), for a side-by-side comparison
    with the fused one-pass kernel."""
    return run_readout(lm, ids, args, kernel="eager")


def warm_readout(lm, ids, args):
    """One short readout, so that compiling the fused kernel (seconds, once per process) is not timed."""
    run_readout(lm, ids[:1, :min(ids.shape[1], 64)], args)


def run_readout_v0(lm, ids, args):
    """The pre-optimisation readout: per layer a fresh [chunk x vocab] logits tensor, logsumexp, exp,
    four row dot products, a bool compare, and eleven .cpu().numpy() copies."""
    import torch
    sys.path.insert(0, str(ROOT))
    from eeutils.lens.capture import Capture
    from eeutils.lens.readout import backbone_of

    L, k = lm.n_layers, args.k
    T = ids.numel()
    out = {n: np.empty((T, L + 1), dtype=np.int32 if n in ("top1", "rank_of_final") else np.float32)
           for n in STAT_NAMES}
    topk_out = np.empty((T, L + 1, k), dtype=np.int32)
    cap = Capture(lm.blocks)
    try:
        backbone_of(lm.model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        states = [s.reshape(-1, s.shape[-1]) for s in cap.states]
    finally:
        cap.remove()
    tgt = _targets(ids)
    chunk = chunk_rows(lm, args)
    for c in range(0, T, chunk):
        sl = slice(c, c + chunk)
        h_last = states[L][sl]
        z_final = lm.layer_logits(h_last)
        ref = _V0Ref.build(z_final, h_last, k)
        prev = None
        for layer in range(L + 1):
            h = h_last if layer == L else states[layer][sl]
            z = z_final if layer == L else lm.layer_logits(h)
            st = _v0_chunk_statistics(z, h, prev, ref, tgt[sl], k)
            for name, arr in out.items():
                arr[sl, layer] = st[name].cpu().numpy()
            topk_out[sl, layer] = st["topk"].cpu().numpy()
            prev = h
    return out


def _v0_rowdot(a, b):
    import torch
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _v0_cos(a, b, b_norm=None):
    a_norm = _v0_rowdot(a, a).sqrt()
    b_norm = _v0_rowdot(b, b).sqrt() if b_norm is None else b_norm
    return _v0_rowdot(a, b) / (a_norm * b_norm).clamp_min(1e-30)


class _V0Ref:
    @classmethod
    def build(cls, logits, hidden, k):
        import torch
        self = cls()
        lse = torch.logsumexp(logits, dim=-1)
        self.logits, self.probs = logits, torch.exp(logits - lse[:, None])
        self.neg_entropy = _v0_rowdot(self.probs, logits) - lse
        self.topk = torch.topk(logits, k, dim=-1).indices
        self.norm, self.top1, self.hidden = _v0_rowdot(logits, logits).sqrt(), self.topk[:, 0], hidden.float()
        return self


def _v0_chunk_statistics(z, h, h_prev, ref, target, k):
    import torch
    lse = torch.logsumexp(z, dim=-1)
    vals, ids = torch.topk(z, k, dim=-1)
    top_p = torch.exp(vals[:, :2] - lse[:, None])
    p = torch.exp(z - lse[:, None])
    entropy = lse - _v0_rowdot(p, z)
    kl = (ref.neg_entropy - _v0_rowdot(ref.probs, z) + lse).clamp_min(0.0)
    has_t = target >= 0
    ce = torch.where(has_t, lse - z.gather(1, target.clamp_min(0)[:, None]).squeeze(1),
                     torch.full_like(lse, float("nan")))
    rank = (z > z.gather(1, ref.top1[:, None])).sum(-1)
    hf = h.float()
    return {
        "top1": ids[:, 0], "max_prob": top_p[:, 0], "margin": top_p[:, 0] - top_p[:, 1],
        "entropy": entropy.clamp_min(0.0), "kl_to_final": kl, "ce": ce, "rank_of_final": rank,
        "logit_cos": _v0_cos(z, ref.logits, ref.norm), "hidden_cos": _v0_cos(hf, ref.hidden),
        "hidden_cos_prev": torch.ones_like(lse) if h_prev is None else _v0_cos(hf, h_prev.float()),
        "topk_overlap": (ids[:, :, None] == ref.topk[:, None, :]).any(-1).sum(-1).float() / k, "topk": ids,
    }


def run_naive(lm, ids, args):
    """All layers' logits kept: [L+1, T, V] fp32, then the statistics layer by layer."""
    import torch
    need = 2 * (lm.n_layers + 1) * ids.numel() * lm.vocab_size * 4 / 2**30  # the logits and their log-softmax
    cap = getattr(args, "naive_max_gib", None)
    if cap is not None and need > cap:
        return f"skipped: needs ~{need:.1f} GiB of logits (> --naive-max-gib {cap:g})"
    out = lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    hs = out.hidden_states  # L+1 entries; the last may already be normalised (GPT-2), so its logits
    L = lm.n_layers         # are taken from the model's own output
    Z = torch.stack([lm.layer_logits(hs[layer]).reshape(ids.numel(), -1) for layer in range(L)]
                    + [out.logits.float().reshape(ids.numel(), -1)])
    H = torch.stack([h.reshape(ids.numel(), -1).float() for h in hs])
    return dense_stats(Z, H, _targets(ids), args.k)


def run_tlens(lm, ids, args):
    import torch
    try:
        from transformer_lens.model_bridge import TransformerBridge
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return "skipped: not installed"
    if not args.model_dir:
        return "skipped: needs the model saved to a folder (random-init models only)"
    tok = PreTrainedTokenizerFast.from_pretrained(args.model_dir)
    bridge = TransformerBridge.boot_transformers(args.model_dir, hf_model=lm.model, tokenizer=tok)
    bridge(ids[:1, :32])  # warm-up
    reset_peak_rss()
    base, t0 = rss(), time.perf_counter()
    _, cache = bridge.run_with_cache(ids)
    acc = cache.accumulated_resid(apply_ln=True)  # [L+1, B, T, d]
    Z = bridge.unembed(acc).reshape(acc.shape[0], ids.numel(), -1).float()
    H = cache.accumulated_resid(apply_ln=False).reshape(acc.shape[0], ids.numel(), -1).float()
    stats = dense_stats(Z, H, _targets(ids), args.k)
    return {"_t0": t0, "_base": base, "stats": stats}


def run_nnsight(lm, ids, args):
    try:
        import nnsight
        from nnsight import NNsight
    except ImportError:
        return "skipped: not installed"
    import torch
    paths = lm.resolved.paths

    def envoy(root, dotted):
        for part in dotted.split("."):
            root = root[int(part)] if part.isdigit() else getattr(root, part)
        return root

    nm = NNsight(lm.model)
    blocks, norm, head = envoy(nm, paths["blocks"]), envoy(nm, paths["final_norm"]), envoy(nm, paths["head"])
    with nm.trace(ids):
        h0 = blocks[0].inputs[0][0]
        hid = nnsight.save([h0])
        logits = nnsight.save([head(norm(h0))])
        for i in range(lm.n_layers):
            o = blocks[i].output
            h = o[0] if isinstance(o, tuple) else o
            hid.append(h)
            logits.append(head(norm(h)))
    n = ids.numel()
    Z = torch.stack([lm.logit_fn(z.float()).reshape(n, -1) for z in logits])
    H = torch.stack([h.reshape(n, -1).float() for h in hid])
    return dense_stats(Z, H, _targets(ids), args.k)


# ---------------------------------------------------------------------------------------------- worker


# ------------------------------------------------------------------------------------------ agreement
RELATIVE = ("entropy", "kl_to_final", "ce")  # values that grow with log V: also compared relative to their size


def agreement(ref: dict, other: dict, names=LOGIT_STATS) -> dict:
    """Per statistic: the fraction of (token, layer) that differ (top1, rank_of_final), else max |diff|
    (NaN where both are NaN counts as equal) and, for RELATIVE ones, max |diff| / max(|ref|, 1e-3)."""
    res = {}
    for n in names:
        a, b = np.asarray(ref[n], np.float64), np.asarray(other[n], np.float64)
        if n in ("top1", "rank_of_final"):
            res[n] = {"differ": float(np.mean(a != b))}
            continue
        d = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        res[n] = {"max_abs": float(d.max())}
        if n in RELATIVE:
            res[n]["max_rel"] = float(np.max(d / np.maximum(np.abs(np.nan_to_num(a)), 1e-3)))
    return res
