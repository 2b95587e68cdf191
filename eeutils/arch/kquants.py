"""Encoders of llama.cpp's K-quant blocks (Q4_K, Q5_K, Q6_K) in numpy, written from the GGUF block layout.

The `gguf` package (gguf-py) decodes every GGML type but encodes only the simple ones (Q4_0, Q4_1, Q5_0,
Q5_1, Q8_0, ...): its K-quant classes only dequantise. The encoders here write the bytes of K-quant blocks so
that `gguf.quants.dequantize`, the reference decoder, reads them back (tests/test_quant.py checks it).

Block layouts (QK_K = 256 weights per super-block, little-endian fp16 scales):

- Q4_K, 144 bytes: d, dmin (fp16); 12 bytes holding eight 6-bit scales s_j and eight 6-bit mins m_j; 128
  bytes of 4-bit levels q. Weight i of sub-block j (32 weights) = d * s_j * q_i - dmin * m_j, q_i in 0..15.
- Q5_K, 176 bytes: as Q4_K, with 32 bytes of fifth bits before the 128 bytes of low nibbles; q_i in 0..31.
- Q6_K, 210 bytes: 128 bytes of low nibbles, 64 bytes of the two high bits, sixteen int8 scales s_j, d
  (fp16). Weight i of sub-block j (16 weights) = d * s_j * (q_i - 32), q_i in 0..63.

How the scales are chosen follows llama.cpp's reference quantiser without an importance matrix (what
``llama-quantize`` does when given none): per sub-block an affine fit (scale, offset <= 0) picked among a
grid of candidate scales by weighted squared error (Q4_K, Q5_K), or a symmetric fit by x^2-weighted error
(Q6_K); the sub-block scales are then themselves rounded (6-bit, or int8) against one fp16 super-block
scale, and the levels recomputed from the rounded scales. Rounding is half-to-even, as ggml's.
"""
from __future__ import annotations

import numpy as np

QK_K = 256
EPS = 1e-15  # a sub-block whose largest |weight| is below this is all zeros (ggml's GROUP_MAX_EPS)
F32, F16 = np.float32, np.float16

# type -> (levels above zero, search start, search step, search steps): the affine K-quants' candidate grid
AFFINE = {"Q4_K": (15, -1.0, 0.1, 20), "Q5_K": (31, -0.5, 0.1, 15)}
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}


def _wsum(*terms) -> np.ndarray:
    out = terms[0]
    for t in terms[1:]:
        out = out * t
    return out.sum(-1)


def affine_fit(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Per row of x [m, n]: (scale >= 0, min >= 0) such that weight ~ scale * l - min with levels l in
    0..nmax, minimising sum w * error^2 over the start fit and nstep + 1 candidate scales."""
    x, w = x.astype(F32), w.astype(F32)
    lo = np.minimum(x.min(-1), F32(0))  # the offset is never positive
    span = x.max(-1) - lo
    flat = span == 0
    span = np.where(flat, F32(1), span)
    sw, sx = w.sum(-1), _wsum(w, x)

    def levels(iscale):
        return np.clip(np.rint(iscale[:, None] * (x - lo[:, None])), 0, nmax)

    scale, offset = span / F32(nmax), lo
    best = _wsum(w, (scale[:, None] * levels(F32(nmax) / span) + lo[:, None] - x) ** 2)
    for step in range(nstep + 1):
        lv = levels(F32(rmin + rdelta * step + nmax) / span)
        sl, sl2, sxl = _wsum(w, lv), _wsum(w, lv, lv), _wsum(w, lv, x)
        det = sw * sl2 - sl * sl
        with np.errstate(divide="ignore", invalid="ignore"):
            s, m = (sw * sxl - sx * sl) / det, (sl2 * sx - sl * sxl) / det
            s = np.where(m > 0, sxl / sl2, s)  # an offset above zero is clamped to zero, the scale refitted
        m = np.minimum(m, F32(0))
        err = _wsum(w, (s[:, None] * lv + m[:, None] - x) ** 2)
        better = (det > 0) & (err < best)
        scale, offset, best = np.where(better, s, scale), np.where(better, m, offset), np.where(better, err, best)
    return np.where(flat, F32(0), scale).astype(F32), (-np.where(flat, lo, offset)).astype(F32)


def symmetric_fit(x: np.ndarray, nmax: int = 32) -> np.ndarray:
    """Per row of x [m, n]: a signed scale such that weight ~ scale * l, l in -nmax..nmax-1, minimising the
    x^2-weighted squared error over 19 candidate scales around -nmax / (the weight of largest |value|)."""
    x = x.astype(F32)
    big = x[np.arange(len(x)), np.abs(x).argmax(-1)]
    zero = np.abs(big) < EPS
    big = np.where(zero, F32(1), big)
    w = x * x

    def fit(iscale):
        lv = np.clip(np.rint(iscale[:, None] * x), -nmax, nmax - 1)
        return _wsum(w, x, lv), _wsum(w, lv, lv)

    slx, sl2 = fit(F32(-nmax) / big)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(sl2 > 0, slx / sl2, F32(0))
        best = scale * slx
        for k in [k for k in range(-9, 10) if k]:
            slx_k, sl2_k = fit(F32(-(nmax + 0.1 * k)) / big)
            better = (sl2_k > 0) & (slx_k * slx_k > best * sl2_k)
            s_k = slx_k / sl2_k
            scale, best = np.where(better, s_k, scale), np.where(better, s_k * slx_k, best)
    return np.where(zero, F32(0), scale).astype(F32)


def _six_bit(v: np.ndarray, vmax: np.ndarray) -> np.ndarray:
    """v [b, 8] (>= 0) rounded against vmax [b] on 0..63."""
    inv = np.where(vmax > 0, F32(63) / np.where(vmax > 0, vmax, F32(1)), F32(0))
    return np.clip(np.rint(inv[:, None] * v), 0, 63).astype(np.uint8)


def _affine_blocks(rows: np.ndarray, qtype: str):
    """Shared part of Q4_K and Q5_K: d, dmin (fp16 [b]), 6-bit scales and mins ([b, 8]), levels [b, 8, 32]."""
    nmax, rmin, rdelta, nstep = AFFINE[qtype]
    x = np.asarray(rows, dtype=F32).reshape(-1, 8, 32)
    b = len(x)
    w = np.sqrt((x * x).mean(-1, keepdims=True)) + np.abs(x)  # llama.cpp's weights without an importance matrix
    scale, mins = (v.reshape(b, 8) for v in affine_fit(x.reshape(-1, 32), w.reshape(-1, 32), nmax, rmin, rdelta,
                                                       nstep))
    smax, mmax = scale.max(-1), mins.max(-1)
    ls, lm = _six_bit(scale, smax), _six_bit(mins, mmax)
    d, dmin = (smax / F32(63)).astype(F16), (mmax / F32(63)).astype(F16)
    step = d.astype(F32)[:, None] * ls
    off = dmin.astype(F32)[:, None] * lm
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint((x + off[..., None]) / step[..., None]), 0, nmax)
    q = np.where(step[..., None] > 0, q, 0).astype(np.uint8)
    return d, dmin, ls, lm, q


def _pack_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins [b, 8] into the 12 bytes of a Q4_K / Q5_K block: bytes 0-3 hold s_0..s_3
    with the top two bits of s_4..s_7 above them, bytes 4-7 the same for the mins, bytes 8-11 the low nibbles
    of s_4..s_7 (low half) and m_4..m_7 (high half)."""
    out = np.empty((len(ls), 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out


def _nibbles(q: np.ndarray) -> np.ndarray:
    """Levels [b, 8, 32] to 128 bytes: sub-blocks 2k and 2k + 1 share bytes 32k..32k+31 (low, high nibble)."""
    return (q[:, 0::2, :] & 0xF | ((q[:, 1::2, :] & 0xF) << 4)).reshape(len(q), 128)


def _fp16_bytes(v: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(v.astype(F16).reshape(-1, 1)).view(np.uint8)


def _rows_to_blocks(rows: np.ndarray, qtype: str, encode) -> np.ndarray:
    rows = np.asarray(rows, dtype=F32)
    if rows.shape[-1] % QK_K:
        raise ValueError(f"{qtype} needs rows of a multiple of {QK_K} weights, got {rows.shape[-1]}")
    blocks = encode(rows.reshape(-1, QK_K))
    return blocks.reshape(*rows.shape[:-1], rows.shape[-1] // QK_K * BLOCK_BYTES[qtype])


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """Q4_K blocks (uint8 [..., n / 256 * 144]) of float rows [..., n], n a multiple of 256."""
    def encode(x):
        d, dmin, ls, lm, q = _affine_blocks(x, "Q4_K")
        return np.concatenate([_fp16_bytes(d), _fp16_bytes(dmin), _pack_scales(ls, lm), _nibbles(q)], axis=1)
    return _rows_to_blocks(rows, "Q4_K", encode)


def quantize_q5_k(rows: np.ndarray) -> np.ndarray:
    """Q5_K blocks (uint8 [..., n / 256 * 176]) of float rows [..., n]: the fifth bit of weight i of
    sub-block k is bit k of byte i of the 32 high-bit bytes."""
    def encode(x):
        d, dmin, ls, lm, q = _affine_blocks(x, "Q5_K")
        high = ((q >> 4) & 1).astype(np.uint8) << np.arange(8, dtype=np.uint8)[None, :, None]
        qh = np.bitwise_or.reduce(high, axis=1)
        return np.concatenate([_fp16_bytes(d), _fp16_bytes(dmin), _pack_scales(ls, lm), qh, _nibbles(q)], axis=1)
    return _rows_to_blocks(rows, "Q5_K", encode)


def _q6_levels(x: np.ndarray):
    """Q6_K of super-blocks x [b, 256]: (d fp16 [b], int8 scales [b, 16], levels 0..63 [b, 256])."""
    b = len(x)
    x = x.astype(F32).reshape(b, 16, 16)
    scales = symmetric_fit(x.reshape(-1, 16)).reshape(b, 16)
    top = scales[np.arange(b), np.abs(scales).argmax(-1)]
    zero = np.abs(top) < EPS
    iscale = np.where(zero, F32(0), F32(-128) / np.where(zero, F32(1), top))
    d = np.where(zero, F32(0), F32(1) / np.where(zero, F32(1), iscale)).astype(F16)
    sc = np.clip(np.rint(iscale[:, None] * scales), -128, 127).astype(np.int8)
    step = d.astype(F32)[:, None] * sc
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint(x / step[..., None]), -32, 31)
    q = np.where(step[..., None] != 0, q, 0) + 32
    return d, sc, q.astype(np.uint8).reshape(b, 256)


def quantize_q6_k(rows: np.ndarray) -> np.ndarray:
    """Q6_K blocks (uint8 [..., n / 256 * 210]) of float rows [..., n]. In each half of 128 weights, byte l
    (l < 32) of the 64 low-nibble bytes holds weights l (low) and l + 64 (high), byte 32 + l holds l + 32 and
    l + 96; high-bit byte l holds the top two bits of weights l, l + 32, l + 64, l + 96 at bits 0, 2, 4, 6."""
    def encode(x):
        d, sc, q = _q6_levels(x)
        q = q.reshape(len(q), 2, 4, 32)  # half, quarter, position
        lo = q & 0xF
        ql = np.concatenate([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2)
        qh = np.bitwise_or.reduce((q >> 4) << (2 * np.arange(4, dtype=np.uint8))[None, None, :, None], axis=2)
        return np.concatenate([ql.reshape(len(q), 128), qh.reshape(len(q), 64), sc.view(np.uint8),
                               _fp16_bytes(d)], axis=1)
    return _rows_to_blocks(rows, "Q6_K", encode)


ENCODERS = {"Q4_K": quantize_q4_k, "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k}
