"""Solutions to notebook 7's exercises (base vs tuned). Try them before reading on."""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

import eeutils
from eeutils.course import Case
from eeutils.workloads import get_workload


@lru_cache(maxsize=None)
def _readout(name: str):
    """A short readout (3 prose documents, 48 tokens each) of a zoo model: cheap, and the same every time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the documents are truncated to 48 tokens on purpose
        return eeutils.readout(eeutils.load_model(name), get_workload("zoo-prose", n_docs=3), max_length=48,
                               progress=False)


def settle_per_token(kl, threshold):
    """Per token: the first layer l >= 1 from which KL(final || layer) < threshold at l and every later layer."""
    stays = np.flip(np.logical_and.accumulate(np.flip(kl < threshold, axis=1), axis=1), axis=1)
    stays[:, 0] = False  # layer 0 (the embeddings) is not a place to exit
    stays[:, -1] = True  # the final layer always counts as settled
    return np.argmax(stays, axis=1)


def first_dip(kl, threshold):
    """Wrong: the first layer where KL dips below the threshold, even if it rises again later."""
    below = kl[:, 1:] < threshold
    below[:, -1] = True
    return np.argmax(below, axis=1) + 1


def sliced_without_offset(kl, threshold):
    """Wrong: searches kl[:, 1:] and forgets that its column 0 is layer 1."""
    return settle_per_token(kl, threshold) - 1


def token_mean(kl, threshold):
    """Wrong: the settle layer of the token-mean KL (one number), not one per token."""
    return settle_per_token(np.nanmean(kl, axis=0, keepdims=True), threshold)


CASES = {
    "07.settle_per_token": Case(
        context=lambda: {"readout": _readout("zoo/dense-mid-tuned"), "threshold": 0.5},
        solution=settle_per_token,
        wrong=((first_dip, "stays below"), (sliced_without_offset, "off by one"), (token_mean, "shape"))),
    "07.tuned_settles_later": Case(
        context=lambda: {"base": [_readout("zoo/dense-mid")], "tuned": [_readout("zoo/dense-mid-tuned")],
                         "threshold": 0.5},
        solution="earlier",  # on these three documents; the notebook's own readouts decide its answer
        wrong=(("later", "settle depths say otherwise"), ("sooner", "should be one of"))),
}
