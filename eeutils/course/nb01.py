"""Checks for notebook 1 (the logit lens): the lens of one layer, where a prompt's answer forms, and
what a random-init baseline says. References come from the kit's tested functions: `LoadedModel.layer_logits`,
`eeutils.readout` and `eeutils.metrics.similarity`."""
from __future__ import annotations

import numpy as np
import torch

from ..analysis.similarity import similarity
from ..lens.readout import readout
from .core import Hint, exercise, expect_choice


def _as_layer(answer, n_layers: int) -> int:
    """The answer as a readout layer number 0..L, or a hint saying what a layer number is."""
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, (int, np.integer)):
        raise Hint(f"answer with a layer number: an integer from 0 (the embeddings) to {n_layers} (the last block).")
    if not 0 <= int(answer) <= n_layers:
        raise Hint(f"readout layers run from 0 (the embeddings) to L = {n_layers}.")
    return int(answer)


@exercise("01.first_final_layer", "predict the first layer whose top-1 is the final top-1", kind="predict")
def first_final_layer(answer, model, prompt: str, position: int = -1):
    """answer: the first readout layer at which `prompt`'s top-1 at `position` equals the last layer's."""
    top1 = readout(model, prompt, progress=False)["top1"][position]
    truth = int(np.flatnonzero(top1 == top1[-1])[0])
    got = _as_layer(answer, model.n_layers)
    if got > truth:
        raise Hint("too late: an earlier layer already shows the final top-1 (the question asks for the first one).")
    if got < truth:
        raise Hint("too early: at that layer the lens still guesses another token.")
    return f"the final top-1 first appears at layer {truth} of {model.n_layers}."


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b.to(a.device), rtol=1e-4, atol=1e-4))


@exercise("01.lens_one_layer", "the logit lens of one layer: hidden state -> logits")
def lens_one_layer(answer, model, hidden):
    """answer(model, hidden) -> logits [..., vocab] for a residual-stream state of an intermediate layer."""
    with torch.inference_mode():
        got = torch.as_tensor(answer(model, hidden)).float()
        want = model.layer_logits(hidden)
        if got.shape != want.shape:
            raise Hint(f"your logits have shape {tuple(got.shape)}; one logit per vocabulary entry and position "
                       f"gives {tuple(want.shape)}.")
        twice = model.logit_fn(model.head(model.final_norm(model.final_norm(hidden))).float())
        bare = model.logit_fn(model.head(hidden).float())
        if _close(want, got):
            return "the model's own final norm and head, applied once: the logit lens."
        if _close(twice, got):
            raise Hint("you applied the final norm twice: the state of an intermediate block is not normed yet, "
                       "so it needs the norm exactly once.")
        if _close(bare, got):
            raise Hint("you skipped the final norm: the head expects a normed state, as after the last block.")
    raise Hint("these are not the lens' logits: decode the state as the model decodes its last block.")


@exercise("01.random_twin", "predict the random-init twin's agreement at half depth", kind="predict")
def random_twin(answer, trained, twin):
    """answer: "higher" or "lower": the twin's top-1 agreement with its own final layer at layer L // 2,
    compared with the trained model's (both readouts of the same documents)."""
    expect_choice(answer, ("higher", "lower"), "your prediction")
    layer = trained.n_layers // 2
    s_trained, s_twin = (float(similarity(r, "top1")[:, layer].mean()) for r in (trained, twin))
    truth = "higher" if s_twin > s_trained else "lower"
    if answer != truth:
        raise Hint("look at the curve again at half depth: which one lies above? A random network has learnt "
                   "nothing, so whatever agreement it shows is what the architecture gives for free.")
    return (f"at layer {layer}: trained {s_trained:.0%}, random-init twin {s_twin:.0%}. Only the trained model's "
            "excess over its twin says something about what training put into the early layers.")
