"""One copy of each utility: atomic writes, offline detection, name@revision, cache keys, package data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eeutils.core import env, io, keys, resources, spec


def test_atomic_write_replaces_and_cleans_up_on_error(tmp_path):
    path = tmp_path / "sub" / "a.json"
    io.write_json_atomic({"x": 1}, path)
    assert json.loads(path.read_text()) == {"x": 1}

    def boom(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        io.atomic_write(path, boom)
    assert json.loads(path.read_text()) == {"x": 1}  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]  # no temporary file left


def test_readout_save_and_findings_use_the_atomic_writer(tmp_path, monkeypatch):
    from readout_factory import identical_readout

    from eeutils.notebook.findings import Finding, write_finding
    calls = []
    real = io.atomic_write
    monkeypatch.setattr(io, "atomic_write", lambda p, fn: calls.append(p) or real(p, fn))
    import eeutils.lens.result as result_mod
    monkeypatch.setattr(result_mod, "atomic_write", io.atomic_write)
    identical_readout().save(tmp_path / "r.npz")
    assert calls and calls[-1].name == "r.npz"
    f = Finding("nb", "claim", "a > b", "a > b", 0.1, 0.05, 0.2, "m", smallest_effect=0.02, interval_kind="doc-bootstrap+seed-t")
    path = write_finding(f, tmp_path)
    assert json.loads(path.read_text())["verdict"] == "agree"
    assert not list(tmp_path.rglob("*.tmp"))


def test_offline_detection(monkeypatch):
    for v in env.OFFLINE_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    assert not env.hf_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert env.hf_offline() and "TRANSFORMERS_OFFLINE=1" in env.offline_setting()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")
    assert env.hf_offline()


def test_eeutils_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path))
    assert env.eeutils_cache_dir() == tmp_path


def test_parse_model_spec(tmp_path):
    assert spec.parse_model_spec("org/m@step100") == ("org/m", "step100")
    assert spec.parse_model_spec("zoo/dense-mid") == ("zoo/dense-mid", None)
    assert spec.parse_model_spec(("org/m", "v1")) == ("org/m", "v1")
    odd = tmp_path / "a@b"
    odd.mkdir()
    assert spec.parse_model_spec(str(odd)) == (str(odd), None)  # an existing folder is a name
    for bad in ("", "m@", "@r", None):
        with pytest.raises(spec.ModelSpecError):
            spec.parse_model_spec(bad)


def test_cache_key_and_weights_digest(tmp_path):
    a = keys.cache_key(model="m", k=5, dtype="float32")
    assert a == keys.cache_key(dtype="float32", k=5, model="m")  # order-free
    assert a != keys.cache_key(model="m", k=4, dtype="float32")
    lin = torch.nn.Linear(3, 2)
    d0 = keys.weights_digest(lin)
    with torch.no_grad():
        lin.weight[0, 0] += 1e-3
    assert keys.weights_digest(lin) != d0
    from safetensors.torch import save_file
    save_file({"w": torch.ones(4)}, str(tmp_path / "model.safetensors"))
    f0 = keys.weights_digest(tmp_path)
    save_file({"w": torch.full((4,), 2.0)}, str(tmp_path / "model.safetensors"))
    assert keys.weights_digest(tmp_path) != f0 and len(f0) == 64
    assert keys.weights_digest(tmp_path / "empty-folder") == ""


def test_data_path_finds_the_package_data():
    assert (resources.data_path("paper_reported.csv")).is_file()
    assert (resources.data_path("zoo")).is_dir()
    assert (resources.data_path("presets", "paper.json")).is_file()


def test_one_bootstrap_replicate_equals_eas_on_resampled_documents():
    from readout_factory import synthetic_readout

    from eeutils.analysis.bootstrap import eas_replicates
    from eeutils.analysis.eas import eas
    r = synthetic_readout(n_docs=7, seed=3)
    docs = np.unique(r.doc)
    draws = np.random.default_rng(0).integers(0, len(docs), (5, len(docs)))
    for value in ("eas", "normalised"):
        reps = eas_replicates(r, draws, value=value, similarity="kl", alpha=0.3)
        for b in range(5):
            e = eas(r.select_docs(docs[draws[b]]), similarity="kl", alpha=0.3)
            assert reps[b] == pytest.approx(e.value if value == "eas" else e.normalised, rel=1e-12)


def test_check_count_is_the_entry_points_count_check():
    from eeutils.core.checks import check_count
    assert check_count("n", np.int64(3)) == 3 and type(check_count("n", np.int64(3))) is int
    assert check_count("n", None, allow_none=True) is None and check_count("seed", 0, 0) == 0
    for bad in (0, -1, 2.5, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got"):
            check_count("n", bad)
    with pytest.raises(ValueError, match=r"layer must be an integer in 1..3 \(depth\), got 4"):
        check_count("layer", 4, 1, 3, hint=" (depth)")
