"""The pitfall demonstrations measure what they claim on a model with non-trivial norms."""
import numpy as np
import pytest
import torch

import eeutils
from eeutils.lens import pitfalls

import tiny_models as tm
from readout_factory import make_readout


def test_norm_mistakes_and_layouts():
    lm = eeutils.wrap_model(tm.make_model("llama"))
    ids = torch.arange(1, 12)
    errs = pitfalls.norm_mistakes(lm, ids)
    assert errs["correct (norm once)"] <= 1e-4
    assert errs["norm applied twice"] > 1e-3 and errs["no final norm"] > 1e-3
    layout = pitfalls.hidden_states_layout(lm, ids)
    assert layout["n_hidden_states"] == lm.n_layers + 1 and layout["first_is_embedding"]
    assert layout["last_is_final_normed"]  # the classic trap: hidden_states[-1] is already normed


def test_tied_embeddings_and_random_twin():
    lm = eeutils.wrap_model(tm.make_model("llama"))
    assert pitfalls.tied_embeddings(lm) == bool(lm.config.tie_word_embeddings)
    twin = pitfalls.random_init_twin(lm, seed=1)
    assert twin.n_layers == lm.n_layers
    assert not torch.equal(twin.head.weight, lm.head.weight)
    # against an independent computation: the head applied to the normed embeddings, by hand
    ids = [3, 4, 5, 6, 3, 9]
    r = eeutils.readout(lm, [ids], progress=False)
    with torch.no_grad():
        emb = lm.model.get_input_embeddings()(torch.tensor(r.token)[None])
        top0 = lm.head(lm.final_norm(emb))[0].argmax(-1).numpy()
    assert pitfalls.layer0_echo_rate(r) == pytest.approx(float((top0 == r.token).mean()))


def test_layer0_echo_rate_by_hand():
    # layer-0 top-1 [3, 9, 5, 1] against the input tokens [3, 4, 5, 6]: two of four echo
    top1 = np.array([[3, 0, 0], [9, 0, 0], [5, 0, 0], [1, 0, 0]])
    assert pitfalls.layer0_echo_rate(make_readout(top1, token=[3, 4, 5, 6])) == 0.5
    assert pitfalls.layer0_echo_rate(make_readout(top1, token=[3, 9, 5, 1])) == 1.0
    assert pitfalls.layer0_echo_rate(make_readout(top1, token=[0, 0, 0, 0])) == 0.0
