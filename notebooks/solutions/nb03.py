"""Solutions to notebook 3's exercises (the EAS metric). Try each exercise before reading its solution.

The context is a small readout (the zoo's dense-mid model on four short documents) so that the tests run fast;
the notebook passes its own readout to the same checks.
"""
from functools import lru_cache

import numpy as np

import eeutils
from eeutils.course import Case


@lru_cache(maxsize=None)
def _readout():
    docs = eeutils.workloads.get_workload("zoo-prose", n_docs=4, max_chars=300)
    return eeutils.readout(eeutils.load_model("zoo/dense-mid"), docs, progress=False)


def ceiling(n_layers, alpha):
    """EAS with S_l = 1: the mean over blocks l = 1..L of w_l^(1 - alpha), w_l = (L - l) / L."""
    l = np.arange(1, n_layers + 1)
    return float(np.mean(((n_layers - l) / n_layers) ** (1 - alpha)))


def ceiling_with_embedding(n_layers, alpha):  # sums layer 0 (the embeddings) too
    l = np.arange(0, n_layers + 1)
    return float(np.mean(((n_layers - l) / n_layers) ** (1 - alpha)))


def ceiling_zero_based(n_layers, alpha):  # w = (L - l) / L with l = 0..L-1: credits one block too many
    l = np.arange(n_layers)
    return float(np.mean(((n_layers - l) / n_layers) ** (1 - alpha)))


def ceiling_swapped(n_layers, alpha):  # alpha on the savings instead of 1 - alpha
    l = np.arange(1, n_layers + 1)
    return float(np.mean(((n_layers - l) / n_layers) ** alpha))


def topk_overlap(topk, k):
    """|top-k ids of layer l ∩ top-k ids of the last layer| / k, per token and layer."""
    topk = np.asarray(topk)[:, :, :k]
    final = topk[:, -1:, None, :]  # [n, 1, 1, k] against [n, L+1, k, 1]: every pair of ids
    return (topk[:, :, :, None] == final).any(axis=3).sum(axis=2) / k


def topk_overlap_positional(topk, k):  # equal ids at equal ranks only
    topk = np.asarray(topk)[:, :, :k]
    return (topk == topk[:, -1:, :]).mean(axis=2)


def topk_overlap_jaccard(topk, k):  # intersection over union instead of over k
    shared = topk_overlap(topk, k) * k
    return shared / (2 * k - shared)


def topk_overlap_vs_layer0(topk, k):  # compares with the embeddings' ids instead of the final layer's
    topk = np.asarray(topk)[:, :, :k]
    return (topk[:, :, :, None] == topk[:, :1, None, :]).any(axis=3).sum(axis=2) / k


def eas_top1(top1, alpha):
    """EAS with S = top-1 agreement: token mean per block layer 1..L, to the alpha, times w^(1 - alpha)."""
    top1 = np.asarray(top1)
    L = top1.shape[1] - 1
    S = (top1[:, 1:] == top1[:, -1:]).mean(axis=0)  # layers 1..L: the embedding is left out
    w = (L - np.arange(1, L + 1)) / L
    return float(np.mean(S ** alpha * w ** (1 - alpha)))


def eas_top1_with_embedding(top1, alpha):
    top1 = np.asarray(top1)
    L = top1.shape[1] - 1
    S = (top1 == top1[:, -1:]).mean(axis=0)
    w = (L - np.arange(0, L + 1)) / L
    return float(np.mean(S ** alpha * w ** (1 - alpha)))


def eas_top1_mean_of_power(top1, alpha):
    top1 = np.asarray(top1)
    L = top1.shape[1] - 1
    S = (top1[:, 1:] == top1[:, -1:]).astype(float)
    w = (L - np.arange(1, L + 1)) / L
    return float(np.mean((S ** alpha).mean(axis=0) * w ** (1 - alpha)))


def eas_top1_swapped(top1, alpha):
    return eas_top1(top1, 1 - alpha)


ALPHA = 0.25  # not 0.5: there both exponents are equal and a swap would go unnoticed

CASES = {
    "03.eas_ceiling": Case(
        context=lambda: {},
        solution=ceiling,
        wrong=((ceiling_with_embedding, "embedding"), (ceiling_zero_based, "off by one"),
               (ceiling_swapped, "swapped"), (lambda L, a: 1.0, "wrong at")),
    ),
    # the last layer's w = 0 is one of L terms: its share of the mean shrinks as L grows
    "03.ceiling_depth": Case(
        context=lambda: {"shallow": 6, "deep": 32, "alpha": 0.5},
        solution="rises",
        wrong=(("falls", "by hand"), ("stays", "by hand"), ("up", "should be one of")),
    ),
    "03.topk_overlap": Case(
        context=lambda: {"readout": _readout()},
        solution=topk_overlap,
        wrong=((topk_overlap_positional, "position by position"), (topk_overlap_jaccard, "divide by k"),
               (topk_overlap_vs_layer0, "LAST layer"), (lambda topk, k: topk_overlap(topk, k)[:, 1:], "shape")),
    ),
    "03.eas_top1": Case(
        context=lambda: {"readout": _readout(), "alpha": ALPHA},
        solution=eas_top1,
        wrong=((eas_top1_with_embedding, "embedding"), (eas_top1_mean_of_power, "averaging order"),
               (eas_top1_swapped, "swapped"), (lambda top1, alpha: eas_top1(top1, alpha) + 0.01, "off by")),
    ),
}
