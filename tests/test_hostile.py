"""Hostile inputs, round 3: nothing silently wrong. Each case gives a clear error naming the file or argument
(or the right result), never a silent coercion, a random model or a raw traceback from inside a library.

Cases: a readout loads under the name it was saved as (and a folder is not a file name); a checkpoint whose
weights do not fit its config is refused, naming the keys; a broken local model folder names its real cause
and file (never "not in the Hugging Face cache"); benchmark runs in one folder are locked apart and keep one
setting's results, a damaged cell is recomputed alone; readouts of two models do not concatenate, an edited
or incomplete readout file is refused, document ids and texts are checked.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eeutils
from eeutils.arch.folder import safetensors_problem
from eeutils.bench import BenchmarkError, run_benchmark
from eeutils.bench.cli import main as cli_main
from eeutils.core import io as core_io
from eeutils.lens.inputs import as_documents
from eeutils.lens.result import Readout, ReadoutFileError
from eeutils.workloads import workload_from_text_file, workload_from_texts

from readout_factory import make_readout

FEW = settings(max_examples=20, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ZOO = Path(__file__).resolve().parent.parent / "data" / "zoo"


def _ro(n_docs=3, per_doc=4, layers=4, model="toy", seed=0) -> Readout:
    rng = np.random.default_rng(seed)
    n = n_docs * per_doc
    return make_readout(rng.integers(0, 50, size=(n, layers)), doc=np.repeat(np.arange(n_docs), per_doc),
                        position=np.tile(np.arange(per_doc), n_docs), model=model)


def _same(a: Readout, b: Readout) -> None:
    assert sorted(a.stats) == sorted(b.stats) and a.meta == b.meta
    for k in a.stats:
        np.testing.assert_array_equal(a.stats[k], b.stats[k])
    for k in ("topk", "doc", "position", "token", "target", "answer"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def _arrays(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---- 1. load mirrors save ------------------------------------------------------------------------

NAME = st.text(st.sampled_from("abc.-_0129"), min_size=1, max_size=14).filter(lambda s: s not in (".", ".."))


@FEW
@given(name=NAME, explicit=st.booleans())
def test_load_takes_the_name_save_was_given(name, explicit):
    ro = _ro()
    with tempfile.TemporaryDirectory() as tmp:
        written = ro.save(Path(tmp) / name)
        assert written.name.endswith(".npz") and written.exists()
        _same(ro, Readout.load(Path(tmp) / name))  # the very name given to save ("run.2024.01")
        _same(ro, Readout.load(written))
        if explicit and not name.endswith(".npz"):
            _same(ro, Readout.load(Path(tmp) / (name + ".npz")))  # ... or with .npz spelled out


def test_load_of_a_missing_readout_names_both_candidates(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run\.2024\.01.*run\.2024\.01\.npz"):
        Readout.load(tmp_path / "run.2024.01")


@pytest.mark.parametrize("folder", ["results", "results.npz"])
def test_save_to_an_existing_folder_is_an_error_and_writes_nothing(tmp_path, folder):
    (tmp_path / folder).mkdir()
    with pytest.raises(IsADirectoryError, match=f"{folder}.*existing folder.*readout.npz"):
        _ro().save(tmp_path / folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]
    assert list((tmp_path / folder).iterdir()) == []


# ---- 2. weights that do not fit the config -------------------------------------------------------

def _zoo_copy(tmp: Path, name="dense-small") -> Path:
    src = ZOO / name
    if not (src / "config.json").exists():
        pytest.skip(f"zoo model {name} not built")
    dst = tmp / f"copy-{name}"
    shutil.copytree(src, dst)
    return dst


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_a_wrong_model_type_is_refused_naming_the_keys(tmp_path):
    folder = _zoo_copy(tmp_path)
    _edit_config(folder, model_type="gpt2")
    with pytest.raises(eeutils.ModelLoadError) as info:
        eeutils.load_model(str(folder))
    msg = str(info.value)
    for part in ("model_type 'gpt2'", "not in the checkpoint", "transformer.h.0", "fit no part of it",
                 "model.embed_tokens.weight", "randomly", "Likely cause"):
        assert part in msg, (part, msg)
    assert "hf download" not in msg


def test_a_checkpoint_missing_a_tensor_is_refused_naming_it(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _zoo_copy(tmp_path)
    weights = load_file(folder / "model.safetensors")
    gone = "model.layers.2.mlp.down_proj.weight"
    del weights[gone]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(eeutils.ModelLoadError, match=rf"{gone}.*incomplete"):
        eeutils.load_model(str(folder))


@pytest.mark.parametrize("name", ["dense-small", "gpt2-mid", "moe-mid", "ssm-mid", "hybrid-mid"])
def test_every_zoo_family_still_loads_from_a_local_copy(tmp_path, name):
    lm = eeutils.load_model(str(_zoo_copy(tmp_path, name)))  # tied embeddings: no lm_head weight, not an error
    ref = eeutils.load_model(f"zoo/{name}")
    for (k, a), (_, b) in zip(sorted(lm.model.state_dict().items()), sorted(ref.model.state_dict().items())):
        assert np.array_equal(a.numpy(), b.numpy()), k


# ---- 3. a broken local folder names its real cause ------------------------------------------------

def _truncate(folder: Path):
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[: len(raw) * 2 // 3])
    return "model.safetensors", "truncated"


def _not_json(folder: Path):
    (folder / "config.json").write_text('{"model_type": "llama",')
    return "config.json", "not valid JSON"


def _unknown_type(folder: Path):
    _edit_config(folder, model_type="frobnicator")
    return "config.json", "'frobnicator'"


def _pickle(folder: Path):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return "pytorch_model.bin", "refuses to load"


def _custom_code(folder: Path):
    _edit_config(folder, auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                   "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    code = f"open({str(folder / 'EXECUTED')!r}, 'w').write('ran')\n"
    (folder / "configuration_evil.py").write_text(code)
    (folder / "modeling_evil.py").write_text(code)
    return "modeling_evil.py", "trust_remote_code=True"


BREAKAGES = {"truncated-safetensors": _truncate, "config-not-json": _not_json, "unknown-model-type": _unknown_type,
             "pickle-weights": _pickle, "custom-code": _custom_code}


@pytest.mark.parametrize("how", sorted(BREAKAGES))
def test_a_broken_local_folder_names_the_cause_and_file(tmp_path, monkeypatch, how):
    import pickle

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _zoo_copy(tmp_path)
    file, cause = BREAKAGES[how](folder)

    def never(*a, **k):
        raise AssertionError("a pickle was opened")
    monkeypatch.setattr(pickle, "load", never)
    monkeypatch.setattr(pickle, "Unpickler", never)
    with pytest.raises(eeutils.ModelLoadError) as info:
        eeutils.load_model(str(folder))
    msg = str(info.value)
    assert file in msg and cause in msg and str(folder) in msg, msg
    assert "hf download" not in msg and "Hugging Face cache" not in msg, msg
    assert not (folder / "EXECUTED").exists()


@FEW
@given(keep=st.floats(0.0, 0.999))
def test_any_truncation_of_a_safetensors_file_is_named(keep):
    raw = (ZOO / "dense-small" / "model.safetensors").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(raw[: int(len(raw) * keep)])
        problem = safetensors_problem(path)
        assert problem is not None and str(path) in problem
        path.write_bytes(raw)
        assert safetensors_problem(path) is None


# ---- 4. benchmark folders: a lock, one setting's results, damaged cells --------------------------

def _rows(cell, workload, config):
    import pandas as pd

    return pd.DataFrame({"row_type": "eas", "similarity": list(config.similarities), "eas": 0.5,
                         "budget": config.budget})


class _Count:
    def __init__(self, inner=_rows):
        self.calls, self.inner = [], inner

    def __call__(self, cell, workload, config):
        self.calls.append(cell.label)
        return self.inner(cell, workload, config)


def _wls():
    return [workload_from_texts(["one text here", "another text"], "wl-a"),
            workload_from_texts(["third text", "fourth"], "wl-b")]


def _bench(out, models=("fake/a", "fake/b"), compute=None, **kw):
    kw.setdefault("progress", False)
    return run_benchmark(list(models), _wls(), out, compute_cell=compute or _Count(), **kw)


def test_a_second_concurrent_run_in_the_same_folder_is_refused(tmp_path):
    seen = []

    def nested(cell, workload, config):  # a second run starts while the first is inside its lock
        with pytest.raises(BenchmarkError, match=r"in use by another eeutils bench run.*pid \d+") as info:
            _bench(tmp_path, models=("fake/z",))
        seen.append(str(info.value))
        return _rows(cell, workload, config)
    _bench(tmp_path, models=("fake/a",), compute=nested)
    assert len(seen) == 2 and str(tmp_path) in seen[0]
    _bench(tmp_path, models=("fake/a",))  # the lock is released at the end


def test_no_merge_jobs_share_the_folder_but_a_merge_run_waits(tmp_path):
    lock = tmp_path / ".eeutils-bench.lock"
    with core_io.file_lock(lock, shared=True):
        _bench(tmp_path, models=("fake/a",), merge=False)  # another --no-merge job: fine
        with pytest.raises(BenchmarkError, match="in use"):
            _bench(tmp_path, models=("fake/a",))


def test_a_killed_runs_lock_does_not_block(tmp_path):
    lock = tmp_path / ".eeutils-bench.lock"
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from eeutils.core.io import file_lock\n"
            "with file_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock), str(Path(eeutils.__file__).parent.parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(BenchmarkError, match=rf"pid {proc.pid}"):
            _bench(tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock.exists()  # left behind by the killed holder, yet no obstacle
    _bench(tmp_path)


def test_the_lock_without_flock_detects_a_dead_holder(tmp_path, monkeypatch):
    monkeypatch.setattr(core_io, "fcntl", None)
    lock = tmp_path / "x.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": core_io.socket.gethostname(), "started": "then"}))
    with core_io.file_lock(lock):  # stale: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(core_io.LockHeld, match=rf"{lock.name} is held by pid {os.getpid()}"):
            with core_io.file_lock(lock):
                pass
    assert not lock.exists()


@pytest.mark.parametrize("change, named", [(dict(budget=0.1), "budget=0.05 there, 0.1 now"),
                                           (dict(n_boot=0, seed=3), "n_boot=200 there, 0 now; seed=0 there, 3 now")])
def test_a_run_with_other_settings_names_what_differs(tmp_path, change, named):
    _bench(tmp_path, models=("fake/a",))
    later = _Count()
    with pytest.raises(BenchmarkError, match="different settings") as info:
        _bench(tmp_path, models=("fake/other",), compute=later, **change)  # no shared cell: still refused
    assert named in str(info.value) and later.calls == []
    assert "delete" not in str(info.value)


def test_the_cli_reports_other_settings_without_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("eeutils.bench.cli.run_benchmark",
                        lambda *a, **k: run_benchmark(*a, **{**k, "compute_cell": _rows, "check_models": False}))
    args = ["bench", "--models", "fake/a", "--workloads", "zoo-prose", "--out", str(tmp_path), "--n-docs", "2",
            "--no-progress"]
    assert cli_main(args) == 0
    assert cli_main(args + ["--alpha", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "alpha=0.5 there, 0.25 now" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty-frame"])
def test_a_damaged_cell_is_recomputed_alone(tmp_path, damage):
    first = _bench(tmp_path)
    victim = sorted((tmp_path / "cells").glob("*.parquet"))[1]
    raw = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        victim.write_bytes(b"not parquet at all")
    else:
        import pandas as pd
        pd.DataFrame({"x": []}).to_parquet(victim)
    again = _Count()
    with pytest.warns(UserWarning, match=rf"{victim.name} is damaged.*recomputing that cell only") as rec:
        second = _bench(tmp_path, compute=again)
    assert len(again.calls) == 1, again.calls  # only the damaged cell
    assert not any("different settings" in str(w.message) or "delete" in str(w.message) for w in rec)
    cols = ["model", "workload", "similarity", "eas"]
    assert second[cols].sort_values(cols).reset_index(drop=True).equals(
        first[cols].sort_values(cols).reset_index(drop=True))


# ---- 5. smaller ones ------------------------------------------------------------------------------

def test_concat_refuses_readouts_of_two_models():
    with pytest.raises(ValueError, match="model 'a' vs 'b'"):
        Readout.concat([_ro(model="a"), _ro(model="b")])
    with pytest.raises(ValueError, match="layer count 3 vs 5"):
        Readout.concat([_ro(layers=4), _ro(layers=6)])
    both = Readout.concat([_ro(seed=1), _ro(seed=2)])
    assert both.n_docs == 6 and both.n_tokens == 24


@FEW
@given(ids=st.lists(st.integers(-5, 12), min_size=1, max_size=6))
def test_select_docs_takes_only_documents_that_exist(ids):
    ro = _ro(n_docs=4)
    if all(0 <= i < 4 for i in ids):
        out = ro.select_docs(ids)
        assert out.n_tokens == 4 * len(ids)
    else:
        with pytest.raises(ValueError, match=r"valid ids are 0\.\.3"):
            ro.select_docs(ids)


def test_select_docs_refuses_float_ids():
    with pytest.raises(TypeError, match="integer document ids"):
        _ro().select_docs([0.5])


@FEW
@given(data=st.data())
def test_a_file_with_a_statistic_removed_is_refused(data):
    ro = _ro()
    name = data.draw(st.sampled_from(sorted(k for k in ro.stats if k != "top1")))
    with tempfile.TemporaryDirectory() as tmp:
        arrays = _arrays(ro.save(Path(tmp) / "r"))
        del arrays[f"stat__{name}"]
        bad = Path(tmp) / "missing-stat.npz"
        np.savez(bad, **arrays)
        with pytest.raises(ReadoutFileError, match=rf"missing-stat\.npz.*stat__{name}"):
            Readout.load(bad)


@FEW
@given(data=st.data())
def test_a_file_edited_within_valid_ranges_is_refused(data):
    ro = _ro()
    with tempfile.TemporaryDirectory() as tmp:
        arrays = _arrays(ro.save(Path(tmp) / "r"))
        key = data.draw(st.sampled_from(sorted(k for k in arrays if k not in ("meta", "checksum"))))
        a = arrays[key].copy()
        flat = a.reshape(-1)
        i = data.draw(st.integers(0, flat.size - 1))
        new = (not flat[i]) if a.dtype == bool else (0 if flat[i] != 0 else 1)  # stays inside every range
        flat[i] = new
        arrays[key] = a
        bad = Path(tmp) / "edited.npz"
        np.savez(bad, **arrays)
        with pytest.raises(ReadoutFileError, match=r"edited\.npz.*checksum"):
            Readout.load(bad)


def test_the_issue_example_top1_zeroed_is_refused(tmp_path):
    arrays = _arrays(_ro().save(tmp_path / "r"))
    arrays["stat__top1"] = np.zeros_like(arrays["stat__top1"])
    np.savez(tmp_path / "r.npz", **arrays)
    with pytest.raises(ReadoutFileError, match=r"r\.npz.*edited after saving"):
        Readout.load(tmp_path / "r")


def test_a_file_without_checksum_is_refused(tmp_path):
    arrays = _arrays(_ro().save(tmp_path / "r"))
    del arrays["checksum"]
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ReadoutFileError, match=r"old\.npz.*no checksum"):
        Readout.load(tmp_path / "old.npz")


SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)


@FEW
@given(texts=st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
                      min_size=1, max_size=4), bad=SURROGATE, data=st.data())
def test_a_lone_surrogate_names_its_document(texts, bad, data):
    i = data.draw(st.integers(0, len(texts) - 1))
    at = data.draw(st.integers(0, len(texts[i])))
    texts = [t if t.strip() else "x" for t in texts]  # a blank document would be refused first
    texts[i] = texts[i][:at] + bad + texts[i][at:]
    with pytest.raises(ValueError, match=rf"document {i} contains a lone surrogate"):
        as_documents(texts)
    with pytest.raises(ValueError, match=rf"document {i} contains a lone surrogate"):
        workload_from_texts(texts, "surrogates")


@functools.lru_cache(maxsize=None)
def _lm():
    return eeutils.load_model("zoo/dense-small")


def test_readout_of_a_lone_surrogate_is_a_clear_error():
    with pytest.raises(ValueError, match=r"document 1 contains a lone surrogate \('\\ud800' at character 4\)"):
        eeutils.readout(_lm(), ["fine text", "bad \ud800 text"], progress=False)


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"PK\x03\x04" + b"\x00" * 64, b"\x89PNG\r\n\x1a\n\xff"])
def test_workload_from_a_binary_file_names_it(tmp_path, content):
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"data\.bin .*(binary file|not utf-8 text)"):
        workload_from_text_file(path)


def test_workload_from_a_latin1_file_says_which_encoding(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"notes\.txt is not utf-8 text.*encoding='latin-1'"):
        workload_from_text_file(path)
    assert workload_from_text_file(path, encoding="latin-1").docs[0].text == "café au lait"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="not a text encoding"):
            workload_from_text_file(path, encoding="no-such-codec")


@pytest.mark.parametrize("extra, refused", [("transformer.h.0.attn.masked_bias", False),
                                            ("transformer.h.0.mlp.c_extra.weight", True)])
def test_only_real_unused_weights_are_refused(tmp_path, extra, refused):
    import torch
    from safetensors.torch import load_file, save_file

    folder = _zoo_copy(tmp_path, "gpt2-mid")
    weights = load_file(folder / "model.safetensors")
    weights[extra] = torch.ones(4, 4)  # an old checkpoint's mask buffer is no weight; an unknown matrix is one
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    if refused:
        with pytest.raises(eeutils.ModelLoadError, match=rf"fit no part of it \(first: {re.escape(extra)}\)"):
            eeutils.load_model(str(folder))
    else:
        assert eeutils.load_model(str(folder)).n_layers > 0
