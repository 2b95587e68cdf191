"""Zoo recipes train, shipped models are safetensors-only with honest cards, the resolver explains itself."""
from __future__ import annotations

import json

import pytest

from eeutils import zoo
from eeutils.zoo import ZooError, list_zoo, load_card, resolve

ARCHES = ["llama", "gpt2", "moe", "mamba2", "bamba"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ARCHES)
def test_micro_training_run_learns(arch):
    from eeutils.zoo.build import ZOO
    from eeutils.zoo.train import micro_run

    recipe = next(r for r in ZOO if r.arch == arch and not r.finetune_of)
    losses = micro_run(recipe, steps=8)
    assert all(l == l for l in losses)
    assert losses[-1] < losses[0] - 0.3, losses


def test_every_family_in_the_zoo_table():
    from eeutils.zoo.build import ZOO

    assert {r.arch for r in ZOO} == set(ARCHES)
    names = [r.name for r in ZOO]
    assert len(names) == len(set(names))
    for base in ("dense-mid", "moe-mid", "ssm-mid", "hybrid-mid", "dense-small", "dense-large", "gpt2-mid-full",
                 "dense-mid-tuned", "dense-mid-layerskip"):
        assert base in names and f"{base}-s1" in names


SHIPPED = list_zoo()


@pytest.mark.parametrize("name", SHIPPED or [pytest.param(None, marks=pytest.mark.skip(reason="zoo not built"))])
def test_shipped_model_is_safetensors_with_card(name):
    from safetensors import safe_open

    folder = resolve(name)
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert keys and all(str(f.get_slice(k).get_dtype()) in ("F16", "BF16", "F32") for k in keys)
    card = load_card(name)
    for key in ("class", "family", "params_total", "params_active", "tokens_seen", "train_seconds", "val_loss",
                "unigram_val_loss", "seed", "corpus", "code_version"):
        assert key in card, key
    assert card["val_loss"] < card["unigram_val_loss"] - 0.5, (card["val_loss"], card["unigram_val_loss"])
    assert json.loads((folder / "config.json").read_text())["architectures"] == [card["class"]]
    assert (folder / "CARD.md").is_file() and (folder / "tokenizer.json").is_file()


@pytest.mark.parametrize("name", SHIPPED or [pytest.param(None, marks=pytest.mark.skip(reason="zoo not built"))])
def test_shipped_model_loads_in_float32(name):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve(name)
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = tok("And God said, Let there be light: and there was light.", return_tensors="pt")["input_ids"]
    assert int(ids[0, 0]) == tok.bos_token_id
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()
    assert float(out.loss) < load_card(name)["unigram_val_loss"]


def _fake_zoo(tmp_path, monkeypatch):
    monkeypatch.setenv("EEUTILS_ZOO_DIR", str(tmp_path))
    for n in ("alpha", "beta"):
        (tmp_path / n).mkdir()
        (tmp_path / n / "card.json").write_text(json.dumps({"name": n, "final_revision": "step-10"}))
    (tmp_path / "alpha" / "checkpoints" / "step-0").mkdir(parents=True)
    (tmp_path / "alpha" / "checkpoints" / "step-3").mkdir(parents=True)
    (tmp_path / "tokenizer").mkdir()  # not a model: no card


def test_resolver_lists_names_and_revisions(tmp_path, monkeypatch):
    _fake_zoo(tmp_path, monkeypatch)
    assert list_zoo() == ["alpha", "beta"]
    assert resolve("alpha") == tmp_path / "alpha" == resolve("zoo/alpha", "main")
    assert resolve("zoo/alpha", "step-3") == tmp_path / "alpha" / "checkpoints" / "step-3"
    assert resolve("alpha", "step-10") == tmp_path / "alpha"  # the final step is the main folder
    assert zoo.list_revisions("alpha") == ["step-0", "step-3", "step-10"]
    with pytest.raises(ZooError) as e:
        resolve("gamma")
    assert "alpha" in str(e.value) and "beta" in str(e.value)
    with pytest.raises(ZooError) as e:
        resolve("alpha", "step-7")
    assert "step-0" in str(e.value) and "step-3" in str(e.value)
    with pytest.raises(ZooError, match="no revision"):
        resolve("beta", "step-0")
    with pytest.raises(KeyError):  # ZooError is a KeyError
        resolve("tokenizer")


def test_empty_zoo_error_says_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("EEUTILS_ZOO_DIR", str(tmp_path / "nothing"))
    assert list_zoo() == []
    with pytest.raises(ZooError, match="python -m eeutils.zoo build"):
        resolve("dense-mid")


@pytest.mark.skipif("dense-mid" not in SHIPPED, reason="dense-mid not built")
def test_dense_mid_revisions_resolve():
    card = load_card("dense-mid")
    revs = zoo.list_revisions("dense-mid")
    assert revs[0] == "step-0" and card["final_revision"] in revs and len(revs) >= 4
    for c in card["checkpoints"]:
        folder = resolve("zoo/dense-mid", c["revision"])
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert resolve("dense-mid", card["final_revision"]) == resolve("dense-mid")
    # training made progress between revisions
    losses = [c["val_loss"] for c in card["checkpoints"]] + [card["val_loss"]]
    assert losses[-1] < losses[0] - 1.0


def test_zoo_table_from_cards(tmp_path, monkeypatch):
    if not SHIPPED:
        pytest.skip("zoo not built")
    df = zoo.zoo_table()
    assert list(df["name"]) == SHIPPED
    assert (df["val_loss"] < df["unigram_val_loss"]).all()
    assert (df["params_active_M"] <= df["params_total_M"]).all()
    out = zoo.write_zoo_markdown(tmp_path / "ZOO.md")
    assert "dense-mid" in out.read_text() if "dense-mid" in SHIPPED else True


@pytest.mark.skipif(not SHIPPED, reason="zoo not built")
def test_zoo_size_budget():
    total = sum(f.stat().st_size for f in zoo.zoo_root().rglob("*") if f.is_file())
    assert total <= 160e6, total / 1e6  # the shipped zoo's budget (fp16; 120 MB before the third seeds)


def test_training_resumes_mid_run_exactly(tmp_path, monkeypatch):
    from dataclasses import replace

    import torch

    from eeutils.zoo import train as TR
    from eeutils.zoo.build import RECIPES

    r = replace(RECIPES["dense-mid"], d=32, layers=2, steps=6, batch=4, warmup=2, checkpoints=())
    g = torch.Generator().manual_seed(0)
    wins, val = torch.randint(3, 256, (32, 16), generator=g), torch.randint(3, 256, (4, 16), generator=g)
    full = TR.train(r, wins, val, 256, progress=False).model
    monkeypatch.setattr(TR, "STATE_EVERY", 3)
    TR.train(replace(r, steps=4), wins, val, 256, state_dir=tmp_path, progress=False)  # "interrupted" run
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 3
    resumed = TR.train(r, wins, val, 256, state_dir=tmp_path, progress=False).model
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), n
