"""Solutions to notebook 13's exercises (the tuned lens). Try each exercise before reading its solution.

The contexts are small (the notebook's decoding model, its shipped translators, three short documents) so that
the tests run fast; the notebook passes its own model, translators and readouts to the same checks.
"""
from functools import lru_cache

import eeutils
from eeutils.course import Case
from eeutils.lens import TunedLensSettings, capture_forward, tuned_lens

MODEL = "zoo/dense-mid"  # the notebook's DECODE_MODEL; its translators ship with the package (data/lenses)
PROMPT = "And God said, Let there be light: and there was light."
LAYER = 2


@lru_cache(maxsize=None)
def _model():
    return eeutils.load_model(MODEL)


@lru_cache(maxsize=None)
def _lens():
    return tuned_lens(_model(), TunedLensSettings(), progress=False)  # the notebook's default recipe


@lru_cache(maxsize=None)
def _hidden(layer: int = LAYER):
    model = _model()
    _, states = capture_forward(model, model.encode(PROMPT))
    return states[layer][0].clone()


@lru_cache(maxsize=None)
def _readouts():
    model = _model()
    docs = eeutils.workloads.get_workload("zoo-prose", n_docs=3, max_chars=300)
    return {"logit": eeutils.readout(model, docs, progress=False),
            "tuned": eeutils.readout(model, docs, progress=False, lens=_lens())}


def tuned_logits(model, hidden, W, b):
    """The translator (identity plus an affine correction) on the raw residual state, then the logit lens."""
    return model.layer_logits(hidden + hidden @ W.T + b)


def replaced(model, hidden, W, b):  # the translator's output used instead of h + (W h + b)
    return model.layer_logits(hidden @ W.T + b)


def after_norm(model, hidden, W, b):  # translating the normed state: the head then reads an un-normed one
    h = model.final_norm(hidden)
    return model.logit_fn(model.head(h + h @ W.T + b).float())


def untransposed(model, hidden, W, b):
    return model.layer_logits(hidden + hidden @ W + b)


# 13.most_improved_layer: the embedding output (layer 0): the logit lens reads it as "predict the input token
# again", far from the final distribution, and its translator removes most of that KL (the notebook's table).
MOST_IMPROVED = 0

CASES = {
    "13.tuned_logits": Case(
        context=lambda: {"model": _model(), "lens": _lens(), "layer": LAYER, "hidden": _hidden()},
        solution=tuned_logits,
        wrong=((replaced, "residual map"), (after_norm, "after the final norm"), (untransposed, "transposed"),
               (lambda model, hidden, W, b: model.layer_logits(hidden), "translator was not applied")),
    ),
    "13.most_improved_layer": Case(
        context=lambda: {"logit": _readouts()["logit"], "tuned": _readouts()["tuned"]},
        solution=MOST_IMPROVED,
        wrong=((6, "no translator"), (3, "not the most"), (2.5, "layer number")),
    ),
}
