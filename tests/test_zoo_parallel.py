"""Parallel zoo build: bit-identical weights with 1 and 2 workers; the schedule simulation."""
from __future__ import annotations

from dataclasses import replace
from functools import partial


def _micro_plan():
    from eeutils.zoo.recipes import RECIPES

    small = {"d": 32, "layers": 2, "steps": 6, "batch": 4, "warmup": 2}
    return [replace(RECIPES["dense-mid"], name="m-llama", checkpoints=(0, 3), **small),
            replace(RECIPES["dense-mid-layerskip"], name="m-layerskip", **{**small, "layers": 3}),
            replace(RECIPES["gpt2-mid"], name="m-gpt2", **small)]


def _build(tmp_path, monkeypatch, workers):
    from eeutils.zoo.build import build
    from eeutils.zoo.parallel import SyntheticData

    root = tmp_path / f"zoo{workers}"
    monkeypatch.setenv("EEUTILS_ZOO_DIR", str(root))
    monkeypatch.setenv("EEUTILS_ZOO_BUILD_DIR", str(tmp_path / f"state{workers}"))
    (tmp_path / "tok").mkdir(exist_ok=True)
    factory = partial(SyntheticData, vocab_size=128, context=16, n_train=64, n_val=8, tok_dir=str(tmp_path / "tok"))
    cards = build(recipes=_micro_plan(), workers=workers, data_factory=factory, progress=False)
    return root, cards, factory


def test_one_and_two_workers_give_identical_weights(tmp_path, monkeypatch):
    from eeutils.zoo.build import build

    one, cards1, _ = _build(tmp_path, monkeypatch, 1)
    two, cards2, factory = _build(tmp_path, monkeypatch, 2)
    assert sorted(c["name"] for c in cards1) == sorted(c["name"] for c in cards2) == ["m-gpt2", "m-layerskip", "m-llama"]
    files = sorted(p.relative_to(one) for p in one.rglob("model.safetensors"))
    assert len(files) == 5  # three models + two checkpoints of m-llama
    for f in files:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    assert {c["name"]: c["val_loss"] for c in cards1} == {c["name"]: c["val_loss"] for c in cards2}
    assert next(c for c in cards2 if c["name"] == "m-layerskip")["layerskip"]["p_max"] > 0
    # a finished model is skipped by the next build (resume at model granularity) ...
    assert build(recipes=_micro_plan(), workers=2, data_factory=factory, progress=False) == []
    # ... unless its recipe changed since: then only that model is rebuilt
    from eeutils.zoo.build import build_status

    plan = _micro_plan()
    plan[2] = replace(plan[2], steps=7)
    assert [build_status(r) for r in plan] == ["current", "current", "stale"]
    cards = build(recipes=plan, workers=1, data_factory=factory, progress=False)
    assert [c["name"] for c in cards] == ["m-gpt2"] and cards[0]["steps"] == 7


def test_schedule_simulation_by_hand():
    from eeutils.zoo.parallel import simulate
    from eeutils.zoo.recipes import Recipe

    rs = [Recipe("a", "llama", 8, 1, 1), Recipe("b", "llama", 8, 1, 1), Recipe("c", "llama", 8, 1, 1),
          Recipe("t", "llama", 8, 1, 1, finetune_of="a")]
    wall, slots = simulate(rs, {"a": 10, "b": 4, "c": 3, "t": 1}, workers=2)
    # worker 0: a (0-10), then t waits for a: 10-11; worker 1: b (0-4), c (4-7)
    assert slots["a"] == (0, 0, 10) and slots["b"] == (1, 0, 4) and slots["c"] == (1, 4, 7)
    assert slots["t"][1] == 10 and wall == 11
    assert simulate(rs, {"a": 10, "b": 4, "c": 3, "t": 1}, workers=1)[0] == 18
