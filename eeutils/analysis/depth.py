"""Effective-depth markers: where a statistic settles, the saturation event, depth summaries."""
from __future__ import annotations

import warnings

import numpy as np

from ..core.checks import check_bools, check_int_array, check_integer, check_real
from ..lens.result import Readout
from .similarity import check_readout, readout_stat

__all__ = ["settle_layer", "kl_settle_layer", "saturated_matrix", "saturation_layer", "depth_summary",
           "saturation_summary"]


def _check_min_layer(min_layer, n_layers):
    check_integer("min_layer", min_layer, hint=f" in 0..{n_layers}")
    if not 0 <= min_layer <= n_layers:
        raise ValueError(f"min_layer must be an integer in 0..{n_layers}, got {min_layer!r}")
    return int(min_layer)


def _first_settled(ok: np.ndarray, min_layer: int) -> np.ndarray:
    """ok [..., L+1] bool with the last column True -> first index >= min_layer from which ok stays True."""
    stays = np.flip(np.logical_and.accumulate(np.flip(ok, -1), axis=-1), -1)
    stays[..., :min_layer] = False
    stays[..., -1] = True
    return np.argmax(stays, axis=-1)


def settle_layer(readout: Readout, statistic: str = "kl_to_final", threshold: float = 0.1, below: bool = True,
                 per_token: bool = False, min_layer: int = 1):
    """First layer from which a statistic stays past a threshold at every later layer.

    below=True: the statistic must be < threshold (e.g. KL to final); below=False: >= threshold
    (e.g. topk_overlap). per_token=False: applied to the token mean per layer (NaN skipped),
    returns an int; per_token=True: per token, returns an int array (NaN never counts as settled).
    The final layer L always counts as settled, so the answer is in min_layer..L. min_layer
    (default 1) leaves out the embedding layer, as EAS and the exit rules do.
    """
    check_readout(readout)
    L = readout.n_layers
    min_layer = _check_min_layer(min_layer, L)
    threshold = check_real("threshold", threshold)
    check_bools(below=below, per_token=per_token)
    x = readout_stat(readout, statistic, "settle_layer").astype(np.float64)
    if not per_token:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x = np.nanmean(x, axis=0)
    ok = (x < threshold) if below else (x >= threshold)
    ok[..., -1] = True
    res = _first_settled(ok, min_layer)
    return res.astype(np.int64) if per_token else int(res)


def kl_settle_layer(readout: Readout, threshold: float = 0.1, per_token: bool = False, min_layer: int = 1):
    """First layer where KL(p_L || p_l) falls below threshold (nats) and stays below at every later layer.

    per_token=False (default): on the token-mean KL per layer, returns an int; True: per token.
    Default threshold 0.1 nats: exp(-0.1) = 0.905, i.e. the p_L-weighted geometric mean of
    p_l/p_L is within ~10% of 1. It is a convention, not from the paper: sweep it.
    """
    t = check_real("threshold", threshold, 0, hint=" (nats)")
    return settle_layer(readout, "kl_to_final", t, below=True, per_token=per_token, min_layer=min_layer)


def saturated_matrix(top1: np.ndarray) -> np.ndarray:
    """[n, L+1] bool: top1 at layer l and at every later layer equals the final top1."""
    top1 = np.asarray(top1)
    if top1.ndim != 2 or top1.shape[1] < 1 or top1.dtype.kind not in "iu":
        raise ValueError(f"top1 must be an integer array [n_tokens, L + 1] (readout.stats['top1']), got "
                         f"{top1.ndim}-D {top1.dtype} of shape {top1.shape}")
    eq = top1 == top1[:, -1:]
    return np.flip(np.logical_and.accumulate(np.flip(eq, 1), axis=1), 1)


def saturation_layer(readout: Readout, min_layer: int = 1) -> np.ndarray:
    """Per token, the saturation event: the earliest layer l >= min_layer such that top1 equals the
    final top1 at l and every later layer. Always <= L (the final layer trivially agrees).

    min_layer default 1: layer 0 (embeddings) is not a place to stop; 0 includes it.
    """
    check_readout(readout)
    L = readout.n_layers
    min_layer = _check_min_layer(min_layer, L)
    return _first_settled(saturated_matrix(readout.stats["top1"]), min_layer).astype(np.int64)


def depth_summary(layers, n_layers: int) -> dict:
    """Mean/median of per-token layers, also as depth fractions, and the share only settled at L."""
    n_layers = check_integer("n_layers", n_layers, 1)
    layers = check_int_array("layers", layers, 0, n_layers)
    if layers.size == 0:
        raise ValueError("layers is empty: no tokens to summarise")
    return dict(mean=float(layers.mean()), median=float(np.median(layers)),
                mean_rel=float(layers.mean() / n_layers), median_rel=float(np.median(layers) / n_layers),
                frac_at_final=float((layers == n_layers).mean()), n_tokens=int(layers.size), n_layers=int(n_layers))


def saturation_summary(readout: Readout, min_layer: int = 1) -> dict:
    """`depth_summary` of `saturation_layer`: mean, median, mean_rel, median_rel, frac_at_final, n_tokens."""
    return depth_summary(saturation_layer(readout, min_layer), readout.n_layers)
