"""Solutions to notebook 1's exercises (the logit lens). Try each exercise before reading its solution.

The contexts are small (the notebook's zoo model and prompt, three short documents) so that the
tests run fast; the notebook passes its own model and readouts to the same checks.
"""
from functools import lru_cache

import eeutils
from eeutils.course import Case
from eeutils.lens.capture import capture_forward
from eeutils.lens.pitfalls import random_init_twin

MODEL = "zoo/dense-mid"  # the notebook's model and prompt
PROMPT = "And God said, Let there be light: and there was light."


@lru_cache(maxsize=None)
def _model():
    return eeutils.load_model(MODEL)


@lru_cache(maxsize=None)
def _hidden(layer: int = 3):
    """The residual stream after block `layer` for PROMPT, [tokens, d_model] (hooks, not output_hidden_states)."""
    model = _model()
    _, states = capture_forward(model, model.encode(PROMPT))
    return states[layer][0]


@lru_cache(maxsize=None)
def _readouts():
    model = _model()
    docs = eeutils.workloads.get_workload("zoo-prose", n_docs=3, max_chars=300)
    return {"trained": eeutils.readout(model, docs, progress=False),
            "twin": eeutils.readout(random_init_twin(model), docs, progress=False)}


# 01.first_final_layer: the first layer l with top1[l] == top1[L] at the prompt's last position. A student finds
# it by reading the hand-made lens table; for dense-mid and PROMPT it is layer 3 (of 6).
FIRST_FINAL = 3


def lens(model, hidden):
    """The logit lens: the model's own final norm, then its head (and its logit transforms, e.g. soft-capping)."""
    return model.logit_fn(model.head(model.final_norm(hidden)).float())


def lens_norm_twice(model, hidden):  # the classic bug: a state that is already normed gets normed again
    return model.head(model.final_norm(model.final_norm(hidden)))


def lens_without_norm(model, hidden):  # the head alone on the raw residual stream
    return model.head(hidden)


CASES = {
    "01.first_final_layer": Case(
        context=lambda: {"model": _model(), "prompt": PROMPT},
        solution=FIRST_FINAL,
        wrong=((FIRST_FINAL + 1, "too late"), (6, "too late"),
               (FIRST_FINAL - 1, "too early"), ("3", "layer number"), (7, "from 0")),
    ),
    "01.lens_one_layer": Case(
        context=lambda: {"model": _model(), "hidden": _hidden()},
        solution=lens,
        wrong=((lens_norm_twice, "twice"), (lens_without_norm, "skipped the final norm"),
               (lambda model, hidden: model.head(model.final_norm(hidden)).T, "shape")),
    ),
    # at half depth dense-mid's random-init twin agrees with its own final layer far less than the trained model
    "01.random_twin": Case(
        context=lambda: _readouts(),
        solution="lower",
        wrong=(("higher", "look at the curve again"), ("same", "should be one of")),
    ),
}
