"""The pitfall demonstrations measure what they claim on a model with non-trivial norms."""
import torch

import eeutils
from eeutils.lens import pitfalls

import tiny_models as tm


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
    r = eeutils.readout(lm, [[3, 4, 5, 6]], progress=False)
    assert 0.0 <= pitfalls.layer0_echo_rate(r) <= 1.0
