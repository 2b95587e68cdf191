"""LayerSkip objective: schedules against hand-computed values, loss weighting, curriculum, determinism,
and that with no dropout and no exit losses it is exactly the plain training step."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from eeutils.zoo import layerskip as LS
from eeutils.zoo.layerskip import LayerSkipConfig, LayerSkipObjective


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(layers=3, d=32, vocab=64, seed=0):
    from transformers import LlamaForCausalLM

    from eeutils.zoo.recipes import llama_config

    torch.manual_seed(seed)
    m = LlamaForCausalLM(llama_config(d, layers, vocab_size=vocab))
    with torch.no_grad():  # non-trivial final norm gain, so a missing or doubled norm would show
        m.model.norm.weight.uniform_(0.5, 1.5)
    return m


def batch(vocab=64, b=4, t=12, seed=1):
    return torch.randint(3, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ schedules by hand
def test_dropout_rates_by_hand():
    cfg = LayerSkipConfig(p_max=0.2, depth_scale="exp", time_scale="exp")
    # L = 6: D(l) = 2^(l/5) - 1; T = 100, t = 50: S = 2^0.5 - 1 = 0.414214
    D = [0.0, 0.148698, 0.319508, 0.515717, 0.741101, 1.0]
    assert LS.depth_scale(cfg, 6) == pytest.approx(D, abs=1e-6)
    assert LS.time_scale(cfg, 50, 100) == pytest.approx(0.414214, abs=1e-6)
    assert LS.time_scale(cfg, 0, 100) == 0.0
    rates = LS.dropout_rates(cfg, 6, 50, 100)
    assert rates == pytest.approx([0.2 * 0.414214 * d for d in D], abs=1e-6)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.0828427, abs=1e-6)
    lin = LayerSkipConfig(p_max=0.5, depth_scale="linear", time_scale="constant")
    assert LS.dropout_rates(lin, 3, 7, 100) == pytest.approx([0.0, 0.25, 0.5])


def test_loss_scales_and_weights_by_hand():
    cfg = LayerSkipConfig(e_scale=1.0, curriculum="none")
    # L = 3: e = [1*2/2, 2*3/2, 3 + 2*3/2] = [1, 3, 6]
    assert LS.loss_scales(cfg, 3) == [1.0, 3.0, 6.0]
    assert LS.exit_weights(cfg, 3, 0, 10) == pytest.approx([0.1, 0.3, 0.6])
    rot = replace(cfg, curriculum="rotational", rotation=2)
    assert LS.exit_weights(rot, 3, 0, 10) == pytest.approx([1 / 7, 0.0, 6 / 7])
    assert LS.exit_weights(rot, 3, 1, 10) == pytest.approx([0.0, 3 / 9, 6 / 9])
    half = replace(cfg, e_scale=0.5)  # L = 6: e = 0.5 * [1, 3, 6, 10, 15], last = 6 + 0.5 * 15
    assert LS.loss_scales(half, 6) == [0.5, 1.5, 3.0, 5.0, 7.5, 13.5]
    assert LS.exit_weights(replace(cfg, exit_losses=False), 4, 3, 10) == [0.0, 0.0, 0.0, 1.0]


def test_curriculum_masks_over_steps():
    rot = LayerSkipConfig(curriculum="rotational", rotation=2)
    assert LS.curriculum_mask(rot, 4, 0, 80) == [True, False, True, True]
    assert LS.curriculum_mask(rot, 4, 1, 80) == [False, True, False, True]
    assert LS.curriculum_mask(rot, 4, 2, 80) == [True, False, True, True]
    rot3 = replace(rot, rotation=3)
    assert [LS.curriculum_mask(rot3, 4, t, 80)[:3] for t in range(3)] == [
        [True, False, False], [False, True, False], [False, False, True]]
    grad = LayerSkipConfig(curriculum="gradual")  # L = 4, T = 80: one more exit every 80 / 8 = 10 steps
    assert LS.curriculum_mask(grad, 4, 0, 80) == [False, False, False, True]
    assert LS.curriculum_mask(grad, 4, 9, 80) == [False, False, False, True]
    assert LS.curriculum_mask(grad, 4, 10, 80) == [False, False, True, True]
    assert LS.curriculum_mask(grad, 4, 25, 80) == [False, True, True, True]
    assert LS.curriculum_mask(grad, 4, 79, 80) == [True, True, True, True]
    assert LS.curriculum_mask(LayerSkipConfig(curriculum="none"), 4, 5, 80) == [True] * 4


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="p_max"):
        LayerSkipConfig(p_max=1.5)
    with pytest.raises(ValueError, match="curriculum"):
        LayerSkipConfig(curriculum="sometimes")
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(ValueError, match="PARTS"):
        LayerSkipObjective(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)),
                           LayerSkipConfig(), 10, 0)


# ------------------------------------------------------------------ the objective on a tiny model
def test_loss_is_the_weighted_sum_of_per_layer_exit_losses():
    m = tiny_llama(layers=3).train()
    x = batch()
    with torch.no_grad():  # per-layer losses computed independently: block outputs through norm + head
        hs = m(input_ids=x, output_hidden_states=True).hidden_states  # (emb, block 1, block 2, normed block 3)
        ce = [F.cross_entropy(m.lm_head(m.model.norm(hs[l + 1]))[:, :-1].reshape(-1, 64), x[:, 1:].reshape(-1))
              for l in range(2)]
        ce.append(m(input_ids=x, labels=x).loss)
    obj = LayerSkipObjective(m, LayerSkipConfig(p_max=0.0, curriculum="none", e_scale=1.0), 10, 0)
    with torch.no_grad():
        loss = obj(x, 0)
    assert [obj.last["losses"][l] for l in range(3)] == pytest.approx([float(c) for c in ce], rel=1e-5)
    assert float(loss) == pytest.approx(0.1 * float(ce[0]) + 0.3 * float(ce[1]) + 0.6 * float(ce[2]), rel=1e-5)
    assert len({round(float(c), 3) for c in ce}) == 3  # the three losses differ, so the weights matter
    obj.close()


def test_dropped_block_passes_its_input_through():
    m = tiny_llama(layers=3).train()
    cfg = LayerSkipConfig(p_max=0.5, depth_scale="linear", time_scale="constant", exit_losses=False)
    obj = LayerSkipObjective(m, cfg, 10, seed=0)
    seen = {}
    last = m.model.layers[-1]
    h1 = last.register_forward_pre_hook(lambda mod, a, k: seen.update(inp=(a[0] if a else k["hidden_states"])),
                                        with_kwargs=True)
    h2 = last.register_forward_hook(lambda mod, a, out: seen.update(out=out))  # runs after the dropout hook
    x = batch(b=16)
    obj(x, 3)
    drop = obj.last["dropped"]
    assert obj.last["rates"] == pytest.approx([0.0, 0.25, 0.5])
    assert not drop[0].any() and drop[2].any() and not drop[2].all()
    for i in range(16):
        same = torch.equal(seen["out"][i], seen["inp"][i])
        assert same == bool(drop[2, i]), i
    h1.remove(), h2.remove(), obj.close()
    m.eval()  # hooks gone: evaluation is the plain model
    assert not m.model.layers[-1]._forward_hooks


def _micro_recipe(**layerskip):
    from eeutils.zoo.recipes import RECIPES

    return replace(RECIPES["dense-mid-layerskip"], d=32, layers=3, steps=4, batch=4, warmup=1, checkpoints=(),
                   layerskip=layerskip or None)


def _train(recipe):
    from eeutils.zoo import train as TR

    g = torch.Generator().manual_seed(0)
    wins, val = torch.randint(3, 64, (16, 12), generator=g), torch.randint(3, 64, (2, 12), generator=g)
    return TR.train(recipe, wins, val, 64, progress=False).model.state_dict()


def test_no_dropout_no_exit_losses_equals_the_plain_step():
    plain = _train(_micro_recipe())
    off = _train(_micro_recipe(p_max=0.0, exit_losses=False))
    for k in plain:
        assert torch.equal(plain[k], off[k]), k


def test_deterministic_per_seed():
    cfg = {"p_max": 0.5, "time_scale": "constant", "curriculum": "rotational", "rotation": 2}
    a, b = _train(_micro_recipe(**cfg)), _train(_micro_recipe(**cfg))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = _train(replace(_micro_recipe(**cfg), seed=1))
    assert not all(torch.equal(a[k], c[k]) for k in a)
    plain = _train(_micro_recipe())
    assert not all(torch.equal(a[k], plain[k]) for k in a)  # the recipe changes training


def test_layerskip_run_resumes_exactly(tmp_path, monkeypatch):
    """Dropout draws are keyed by (seed, step): an interrupted LayerSkip run resumes to the same weights."""
    from eeutils.zoo import train as TR

    r = replace(_micro_recipe(p_max=0.5, time_scale="constant"), steps=6, warmup=2)  # steps 0-2: same lr at T=4, 6
    g = torch.Generator().manual_seed(0)
    wins, val = torch.randint(3, 64, (16, 12), generator=g), torch.randint(3, 64, (2, 12), generator=g)
    full = TR.train(r, wins, val, 64, progress=False).model.state_dict()
    monkeypatch.setattr(TR, "STATE_EVERY", 3)
    TR.train(replace(r, steps=4), wins, val, 64, state_dir=tmp_path, progress=False)  # "interrupted" at step 3
    resumed = TR.train(r, wins, val, 64, state_dir=tmp_path, progress=False).model.state_dict()
    for k in full:
        assert torch.allclose(full[k], resumed[k], atol=1e-6), k
