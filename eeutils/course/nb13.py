"""Checks for notebook 13 (the tuned lens): one layer's tuned-lens logits by hand, and which layer the
translators help most. References come from the kit's tested functions: `TunedLens.logits` (translator, then the
model's final norm and head) and the readouts' per-layer KL to the final layer (`Readout.layer_means`)."""
from __future__ import annotations

import numpy as np
import torch

from ..lens.result import Readout
from ..lens.tuned import TunedLens
from .core import Hint, exercise


@exercise("13.tuned_logits", "the tuned lens of one layer: translator, then final norm and head")
def tuned_logits(answer, model, lens: TunedLens, layer: int, hidden):
    """answer(model, hidden, W, b) -> logits [..., vocab]: the layer's translator (weight W [d, d] as
    nn.Linear stores it, bias b) applied to the residual state, then decoded as the logit lens decodes."""
    t = lens.translators[layer]
    W, b = t.weight.detach().clone(), t.bias.detach().clone()
    with torch.inference_mode():
        got = torch.as_tensor(answer(model, hidden.clone(), W, b)).float()
        want = lens.logits(model, layer, hidden)
        if got.shape != want.shape:
            raise Hint(f"your logits have shape {tuple(got.shape)}; one logit per vocabulary entry and position "
                       f"gives {tuple(want.shape)}.")
        mistakes = (  # (what a typical slip computes, the hint it gets)
            (model.layer_logits(hidden @ W.T + b), "the translator is a residual map: it adds W h + b to h, it "
             "does not replace h (identity-initialised: W = 0 must give the logit lens back)."),
            (model.layer_logits(hidden + hidden @ W + b), "nn.Linear stores its weight as [out, in]: multiply h by "
             "W transposed."),
            (model.layer_logits(hidden + hidden @ W.T), "the bias b is part of the translator."),
            (model.layer_logits(hidden), "these are the logit lens' logits: the translator was not applied."),
        )
        close = lambda a, c: bool(torch.allclose(a, c.to(a.device), rtol=1e-4, atol=1e-4))  # noqa: E731
        if close(want, got):
            return "translator first, then the model's own final norm and head: the tuned lens of that layer."
        norm = model.final_norm(hidden)
        if close(model.logit_fn(model.head(norm + norm @ W.T + b).float()), got):
            raise Hint("you translated after the final norm: the translator maps the raw residual state, which the "
                       "final norm and head then decode.")
        for wrong, hint in mistakes:
            if close(wrong, got):
                raise Hint(hint)
    raise Hint("these are not the tuned lens' logits: translate the state (h + W h + b), then decode it as the "
               "model decodes its last block.")


@exercise("13.most_improved_layer", "predict the layer whose KL the tuned lens lowers most", kind="predict")
def most_improved_layer(answer, logit: Readout, tuned: Readout):
    """answer: the readout layer (0..L) at which mean KL(final || layer) drops most from the logit lens to the
    tuned lens, on the same held-out documents."""
    kl = {name: r.layer_means(("kl_to_final",))["kl_to_final"].to_numpy() for name, r in (("logit", logit),
                                                                                         ("tuned", tuned))}
    gain = kl["logit"] - kl["tuned"]
    L = len(gain) - 1
    if isinstance(answer, (bool, np.bool_)) or not isinstance(answer, (int, np.integer)) or not 0 <= answer <= L:
        raise Hint(f"answer with a layer number: an integer from 0 (the embeddings) to {L} (the last block).")
    best = int(np.argmax(gain))
    if answer == L:
        raise Hint("the last layer has no translator: both lenses read the model's own distribution there, so "
                   "its KL is zero under both.")
    if int(answer) != best:
        raise Hint(f"layer {int(answer)} gains {gain[answer]:.3f} nats, not the most: the gain is largest where "
                   "the logit lens is furthest from the final distribution (look at its KL per layer).")
    return (f"layer {best}: the logit lens misreads it most ({kl['logit'][best]:.2f} nats), the translator cuts "
            f"that to {kl['tuned'][best]:.2f}.")
