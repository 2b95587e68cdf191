"""Issue 27's sweep of the command lines, and the cases that involve processes, files and caches.

The CLIs of docs/API.md's inventory (`eeutils bench`, `python -m eeutils.series`, `python -m eeutils.arch.real_cli`,
`python -m eeutils.zoo`, `python -m eeutils.notebook.book`) are called in-process through their main(argv) with
hostile arguments (hypothesis): each refuses with one line on stderr that names the option, a usage-error status,
no traceback, no "rerun to resume" where rerunning cannot help, and nothing created. Then: `--out` read-only or
on a full disk (a small tmpfs, root only), a converted real model damaged in the cache, kill -9 and resume of the
series runner and of the tuned-lens trainer, and notebooks started with bad parameters.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import small_tmpfs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eeutils
from eeutils.bench import run_benchmark
from eeutils.bench.cli import main as bench_main
from eeutils.notebook import book, series
from eeutils.notebook.setup import start

FEW = settings(max_examples=10, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _rows(cell, workload, config):
    return pd.DataFrame({"row_type": "eas", "similarity": list(config.similarities), "eas": 0.5,
                         "budget": config.budget})


@pytest.fixture
def fake_bench(monkeypatch):
    """`eeutils bench` with a cheap cell computation (no model is read): the CLI's own checks still run."""
    monkeypatch.setattr("eeutils.bench.cli.run_benchmark",
                        lambda *a, **k: run_benchmark(*a, **{**k, "compute_cell": _rows, "check_models": False}))


def _one_line_error(err: str, prog: str, *names) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:"), err
    assert "Traceback" not in err
    assert any(n.lower() in lines[0].lower() for n in names), (names, err)
    return lines[0]


# ---- eeutils bench ----------------------------------------------------------------------------------------

BENCH_BAD = {  # option -> (bad values, words the message may use for it)
    "--budget": (["nan", "inf", "-0.1", "1", "1.5"], ("budget",)),
    "--alpha": (["nan", "-inf", "-0.5", "2"], ("alpha",)),
    "--n-docs": (["0", "-3"], ("n_docs",)),
    "--max-tokens": (["0", "-1"], ("max_tokens",)),
    "--n-boot": (["-1"], ("n_boot",)),
    "--seed": (["-1"], ("seed",)),
    "--k": (["0", "1", "-2"], ("k ",)),
    "--batch-size": (["0", "-8"], ("batch_size",)),
    "--dtype": (["float8", "nope", "", "FP64"], ("dtype",)),
    "--device": (["quantum", "cuda:9", "gpu", "", "3"], ("device",)),
    "--similarities": (["nope", "LOGIT_COS", ""], ("similarit",)),
    "--models": (["zoo/no-such-model", "real/nope", "/no/such/folder", "zoo/../dense-small"], ("model",)),
    "--workloads": (["no-such-workload", "", "../x"], ("workload",)),
}


@FEW
@given(data=st.data())
def test_bench_refuses_bad_options_before_creating_anything(tmp_path_factory, capsys, data):
    option = data.draw(st.sampled_from(sorted(BENCH_BAD)), label="option")
    value = data.draw(st.sampled_from(BENCH_BAD[option][0]), label="value")
    out = tmp_path_factory.mktemp("bench") / "out"
    args = {"--models": "zoo/dense-small", "--workloads": "zoo-prose", "--out": str(out), "--n-docs": "2"}
    args[option] = value
    argv = ["bench", *[f"{k}={v}" for k, v in args.items()], "--no-progress"]  # "=": a value may start with "-"
    capsys.readouterr()
    assert bench_main(argv) == 2
    line = _one_line_error(capsys.readouterr().err, "eeutils", *BENCH_BAD[option][1])
    assert "rerun" not in line and "resume" not in line
    assert not out.exists()


def test_bench_device_quantum_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "out"
    code = bench_main(["bench", "--models", "zoo/dense-small", "--workloads", "zoo-prose", "--out", str(out),
                       "--device", "quantum", "--no-progress"])
    line = _one_line_error(capsys.readouterr().err, "eeutils", "device")
    assert code == 2 and "'quantum' is not a torch device; available here: cpu" in line and not out.exists()


def test_bench_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f, f / "sub"):
        assert bench_main(["bench", "--models", "zoo/dense-small", "--workloads", "zoo-prose", "--out", str(out),
                           "--no-progress"]) == 2
        _one_line_error(capsys.readouterr().err, "eeutils", "is a file")
    assert f.read_text() == "x"


def _tmp_files(folder: Path) -> list:
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".tmp.npz"))]


def _bench_args(out, *models):
    return ["bench", "--models", *models, "--workloads", "zoo-prose", "--out", str(out), "--n-docs", "2",
            "--no-progress"]


def test_bench_in_a_read_only_folder_keeps_earlier_results(tmp_path, capsys, fake_bench):
    out = tmp_path / "out"
    assert bench_main(_bench_args(out, "fake/a")) == 0
    before = (out / "results.parquet").read_bytes()
    for p in (out, out / "cells"):
        p.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        capsys.readouterr()
        assert bench_main(_bench_args(out, "fake/a", "fake/b")) == 2
        _one_line_error(capsys.readouterr().err, "eeutils", "cannot be written", "permission")
    finally:
        for p in (out, out / "cells"):
            p.chmod(0o755)
    assert (out / "results.parquet").read_bytes() == before and not _tmp_files(out)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk (root only)."""
    with small_tmpfs(tmp_path, "1m") as disk:
        yield disk


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    return filler


def test_bench_on_a_full_disk_keeps_earlier_results_and_no_temp_files(small_disk, capsys, fake_bench):
    out = small_disk / "out"
    assert bench_main(_bench_args(out, "fake/a")) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".eeutils")}
    filler = _fill(small_disk)
    capsys.readouterr()
    code = bench_main(_bench_args(out, "fake/a", "fake/b"))
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in before} == before  # earlier cells, results and manifest intact
    assert not _tmp_files(out)
    filler.unlink()
    assert bench_main(_bench_args(out, "fake/a", "fake/b")) == 0  # space again: it resumes
    assert set(pd.read_parquet(out / "results.parquet").model) == {"fake/a", "fake/b"}


# ---- python -m eeutils.series -------------------------------------------------------------------------------

def _series(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = series.main(argv)
    return code, capsys.readouterr().err


@FEW
@given(only=st.lists(st.one_of(st.integers(0, 120).map(str), st.sampled_from(["x", "1a", "", "-1", "01.5"])),
                     min_size=1, max_size=3))
def test_series_only_is_checked_before_anything_is_created(tmp_path_factory, capsys, only):
    numbers = [p.name[:2] for p in series.list_notebooks()]
    if all(o.strip().zfill(2) in numbers for o in only):
        assert [p.name[:2] for p in series.list_notebooks(only)] == sorted({o.zfill(2) for o in only})
        return
    out = tmp_path_factory.mktemp("series") / "out"
    code, err = _series(["--out", str(out), "--smoke", "--only", *only], capsys)
    line = _one_line_error(err, "python -m eeutils.series", "--only")
    assert code == 2 and f"valid numbers: {' '.join(numbers)}" in line and not out.exists()


def test_series_only_99_lists_the_valid_numbers(tmp_path, capsys):
    code, err = _series(["--out", str(tmp_path / "r"), "--only", "99"], capsys)
    assert code == 2 and "no notebook matches --only 99; valid numbers: 01 02 03" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("text, says", [("{not json", "is not a readable JSON file"), ("[1, 2]", "JSON object"),
                                        ('{"99": {}}', "key '99'"), ('{"*": 3}', "must map parameter names"),
                                        (b"\xff\xfe\x00", "is not a readable JSON file")])
def test_series_bad_preset(tmp_path, capsys, text, says):
    preset = tmp_path / "preset.json"
    preset.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = _series(["--out", str(tmp_path / "r"), "--preset", str(preset)], capsys)
    assert code == 2 and says in _one_line_error(err, "python -m eeutils.series", "preset")
    assert not (tmp_path / "r").exists()
    code, err = _series(["--out", str(tmp_path / "r"), "--preset", "no-such-preset"], capsys)
    assert code == 2 and "unknown preset 'no-such-preset'; known: ['paper']" in err


def test_series_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    for out in (f, f / "sub"):
        code, err = _series(["--out", str(out), "--only", "01"], capsys)
        assert code == 2 and f"{f} is a file, not a folder" in _one_line_error(err, "python -m eeutils.series",
                                                                                "--out")
    assert f.read_text() == "keep me"


# ---- python -m eeutils.arch.real_cli, python -m eeutils.zoo, python -m eeutils.notebook.book -------------------

@FEW
@given(name=st.one_of(st.text("abcxyz-_./", min_size=1, max_size=12), st.sampled_from(["../x", "real/gemma"])))
def test_real_cli_unknown_names(capsys, name):
    from eeutils.arch import real_cli

    if name in eeutils.list_real():
        return
    for cmd in ("verify", "convert"):
        capsys.readouterr()
        assert real_cli.main([cmd, "--", name]) == 1
        err = capsys.readouterr().err
        assert "unknown real model" in err and "known: gemma-3-270m, smollm2-135m-instruct" in err
        assert "Traceback" not in err


@pytest.mark.parametrize("argv, says", [(["build", "--workers", "0"], "--workers: must be >= 1"),
                                        (["build", "--threads", "-1"], "--threads: must be >= 1"),
                                        (["build", "--threads", "two"], "'two' is not an integer"),
                                        (["plan", "--steps", "0"], "--steps: must be >= 1"),
                                        (["nope"], "invalid choice: 'nope'")])
def test_zoo_cli_bad_arguments_are_usage_errors(capsys, argv, says):
    from eeutils.zoo.__main__ import main as zoo_main

    with pytest.raises(SystemExit) as info:
        zoo_main(argv)
    assert info.value.code == 2 and says in capsys.readouterr().err


def test_zoo_cli_unknown_recipe_names_the_known_ones(capsys):
    from eeutils.zoo.__main__ import main as zoo_main

    with pytest.raises(SystemExit) as info:
        zoo_main(["build", "--only", "no-such-recipe"])
    assert "unknown zoo recipe(s) ['no-such-recipe']; known: dense-large" in str(info.value.code)


@pytest.mark.parametrize("how", ["missing", "file", "empty", "out-file"])
def test_book_cli_bad_folders(tmp_path, capsys, how):
    pytest.importorskip("sphinx")
    results, out = tmp_path / "results", None
    if how == "file":
        results.write_text("x")
    elif how in ("empty", "out-file"):
        results.mkdir()
    if how == "out-file":
        out = tmp_path / "site"
        out.write_text("x")
    code = book.main(["--results", str(results)] + (["--out", str(out)] if out else []))
    err = capsys.readouterr().err
    assert code == 2
    line = _one_line_error(err.splitlines()[-1], "python -m eeutils.notebook.book", "--results", "--out",
                           "notebooks")
    assert str(tmp_path) in line


# ---- a converted real model damaged in the cache -------------------------------------------------------------

def _real_cache_copy(tmp_path, monkeypatch, name="smollm2-135m-instruct") -> Path:
    from eeutils.arch import real

    spec = real.real_spec(name)
    src = real.cache_folder(spec)
    if real.check_folder(src, spec) is not None:
        pytest.skip(f"real/{name} is not converted in {src}")
    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path / "cache"))
    dst = real.cache_folder(spec)
    shutil.copytree(src, dst)
    return dst


def _zero(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:  # same size, every byte zero
        for _ in range(0, size, 1 << 24):
            f.write(b"\0" * min(1 << 24, size - f.tell()))


DAMAGES = {"zeroed": _zero, "truncated": lambda p: os.truncate(p, p.stat().st_size // 2),
           "one-block-overwritten": lambda p: _overwrite_block(p, p.stat().st_size // 3)}


def _overwrite_block(path: Path, at: int) -> None:
    with open(path, "r+b") as f:  # 4 KiB of 0x7f bytes (large finite floats) in the middle of the weights
        f.seek(at)
        f.write(b"\x7f" * 4096)


@pytest.mark.real
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_converted_real_model_is_named_and_never_read(tmp_path, monkeypatch, damage):
    from eeutils.arch import real

    folder = _real_cache_copy(tmp_path, monkeypatch)
    spec = real.real_spec("smollm2-135m-instruct")
    assert real.resolve_real("real/smollm2-135m-instruct") == folder  # intact: used as it is
    DAMAGES[damage](folder / real.WEIGHTS_FILE)
    reconverted = []

    def convert(spec_, gguf, out, versions, progress=True):
        reconverted.append(out)
        raise RuntimeError("conversion stub: the damaged folder was not used")
    monkeypatch.setattr(real, "convert", convert)
    with pytest.warns(UserWarning, match=rf"{folder.name} is incomplete or damaged \(model\.safetensors "):
        with pytest.raises(RuntimeError, match="conversion stub"):
            eeutils.load_model("real/smollm2-135m-instruct")
    assert reconverted, "the damaged folder was read instead of converted again"
    assert real.check_folder(folder, spec) is not None


@pytest.mark.real
@pytest.mark.slow
def test_a_zeroed_converted_real_model_is_converted_again(tmp_path, monkeypatch):
    from eeutils.arch import real

    folder = _real_cache_copy(tmp_path, monkeypatch)
    recorded = json.loads((folder / real.SOURCE_FILE).read_text())["files"][real.WEIGHTS_FILE]["sha256"]
    _zero(folder / real.WEIGHTS_FILE)
    with pytest.warns(UserWarning, match="model.safetensors does not match the sha256 recorded"):
        lm = eeutils.load_model("real/smollm2-135m-instruct")
    assert real.sha256_file(folder / real.WEIGHTS_FILE) == recorded
    assert eeutils.check_last_layer(lm, lm.encode("The capital of France is")) < 1e-4


# ---- kill -9 and resume: the tuned-lens trainer ------------------------------------------------------------

TRAINER = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
import eeutils
from eeutils.lens import tuned
tuned.STATE_SECONDS = 0  # save the resumable state after every step
lm = eeutils.load_model("zoo/dense-small")
s = tuned.TunedLensSettings(n_windows=16, context=32, steps=int(sys.argv[2]), batch=2)
w = tuned.corpus_windows(lm, "train", s.n_windows, s.context, s.seed)
state = sys.argv[1] if sys.argv[1] != "-" else None
lens = tuned.train_tuned_lens(lm, w, s, progress=False, state=state)
print("digest", lens.digest(), flush=True)
"""


def _trainer(tmp_path, state, steps, **kw):
    script = tmp_path / "train.py"
    script.write_text(TRAINER.format(root=str(ROOT)))
    return subprocess.Popen([PY, str(script), str(state), str(steps)], stdout=subprocess.PIPE, text=True, **kw)


def test_tuned_lens_trainer_killed_and_resumed_gives_identical_translators(tmp_path):
    import torch

    steps = 40
    ref = _trainer(tmp_path, "-", steps)
    state = tmp_path / "lens.state.pt"
    victim = _trainer(tmp_path, state, steps)
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and victim.poll() is None:
        try:
            step = torch.load(state, weights_only=True)["step"] if state.exists() else 0
        except Exception:  # noqa: BLE001 - read while being replaced
            step = 0
        if step >= 5:
            break
        time.sleep(0.05)
    if victim.poll() is not None:
        pytest.skip("the trainer finished before it could be killed (a very fast machine)")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 5 <= killed_at < steps
    resumed = _trainer(tmp_path, state, steps)
    out_ref, out_res = ref.communicate(timeout=600)[0], resumed.communicate(timeout=600)[0]
    assert ref.returncode == 0 and resumed.returncode == 0
    assert out_ref.split()[-1] == out_res.split()[-1], (out_ref, out_res)  # bit-identical translators


def test_tuned_lens_keeps_its_state_beside_the_cache_and_removes_it(tmp_path, monkeypatch):
    from eeutils.lens import tuned

    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path))
    monkeypatch.setattr(tuned, "STATE_SECONDS", 0)
    seen = []
    real_save = tuned._save_state

    def spy(path, *a):
        seen.append(path)
        real_save(path, *a)
    monkeypatch.setattr(tuned, "_save_state", spy)
    lm = eeutils.load_model("zoo/dense-small")
    settings_ = tuned.TunedLensSettings(n_windows=4, context=16, steps=3, batch=1, seed=11)
    tuned.tuned_lens(lm, settings_, progress=False, shipped=False)
    assert seen and all(p.parent == tuned.cache_dir() and p.name.endswith(".state.pt") for p in seen)
    assert not list(tuned.cache_dir().glob("*.state.pt")) and list(tuned.cache_dir().glob("*.safetensors"))


# ---- kill -9 and resume: the series runner ---------------------------------------------------------------

def _outputs(out: Path) -> dict:
    """What the notebooks left in `out` as numbers: their tables (results/*.csv, without the columns that record
    timings) and the readouts they cached (readouts/*.npz: every array; the metadata holds a timing)."""
    found = {}
    for p in sorted((out / "results").glob("*.csv")):
        f = pd.read_csv(p)
        found[p.name] = f[[c for c in f.columns if not any(w in c.lower() for w in ("second", "time", "_ms"))]]
    for p in sorted((out / "readouts").glob("*.npz")):
        r = eeutils.Readout.load(p)
        found[p.name] = {**r.stats, "topk": r.topk, "doc": r.doc, "token": r.token, "target": r.target}
    return found


@pytest.mark.notebooks
@pytest.mark.slow
def test_series_killed_during_a_notebook_resumes_only_the_unfinished_one(tmp_path, smoke_series):
    ref_out, _ = smoke_series  # an uninterrupted smoke run of notebooks 01-02 (the shared fixture)
    out = tmp_path / "run"
    cmd = [PY, "-m", "eeutils.series", "--out", str(out), "--smoke", "--only", "01", "02", "--no-html"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state = out / series.STATE_FILE
    deadline = time.time() + 900
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                done = json.loads(state.read_text())["done"]
            except (OSError, ValueError, KeyError):
                done = {}
            if "01_logit_lens.ipynb" in done:
                time.sleep(3)  # notebook 02 is running now
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel
        proc.wait()
    first = (out / "notebooks" / "01_logit_lens.ipynb").stat().st_mtime_ns
    summary = series.run_series(out, smoke=True, only=["01", "02"], html=False)
    assert summary["resumed"] == ["01_logit_lens.ipynb"] and not summary["failed"]
    assert (out / "notebooks" / "01_logit_lens.ipynb").stat().st_mtime_ns == first  # not run again
    ref, got = _outputs(ref_out), _outputs(out)
    assert sorted(ref) == sorted(got) and any(name.endswith(".npz") for name in ref), sorted(ref)
    for name in ref:
        if isinstance(ref[name], pd.DataFrame):
            pd.testing.assert_frame_equal(ref[name], got[name], check_exact=False, rtol=1e-9, obj=name)
        else:
            assert sorted(ref[name]) == sorted(got[name])
            for key in ref[name]:
                np.testing.assert_array_equal(ref[name][key], got[name][key], err_msg=f"{name}: {key}")
    assert json.loads(state.read_text())["finished"] is True
    again = series.run_series(out, smoke=True, only=["02"], html=False)  # a finished run is rerun whole
    assert again["resumed"] == []


# ---- notebooks with bad parameters ------------------------------------------------------------------------

@pytest.mark.parametrize("kw, param, says", [
    (dict(models={"MODEL": "nope"}), "MODEL", "neither a local folder nor in the Hugging Face cache"),
    (dict(models={"MODEL": "zoo/no-such"}), "MODEL", "unknown zoo model 'no-such'; available: dense-large"),
    (dict(models={"MODELS": ["zoo/dense-mid", "real/nope"]}), "MODELS", "unknown real model 'real/nope'"),
    (dict(models={"MODEL": "zoo/dense-mid"}, revision="step-99999"), "MODEL", "has no revision 'step-99999'"),
    (dict(models={"MODEL": 3}), "MODEL", "non-empty string"),
    (dict(workloads={"WORKLOAD": "no-such"}), "WORKLOAD", "registered: "),
    (dict(workloads={"WORKLOADS": ["zoo-prose", "nope"]}), "WORKLOADS", "'nope' is not a registered workload"),
    (dict(smoke="yes"), "SMOKE", "True or False"), (dict(smoke=1), "SMOKE", "True or False"),
    (dict(n_docs=0), "N_DOCS", "integer >= 1"), (dict(n_boot=-1), "N_BOOT", "integer >= 0"),
    (dict(max_tokens="128"), "MAX_TOKENS", "integer >= 1"), (dict(dtype="fp8"), "DTYPE", "dtype must be one of"),
    (dict(device="quantum"), "DEVICE", "not a torch device"),
])
def test_start_refuses_bad_notebook_parameters(tmp_path, monkeypatch, kw, param, says):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as info:
        start(out_dir=str(tmp_path), **kw)
    msg = str(info.value)
    assert msg.startswith(f"notebook parameter {param} = ") and says in msg, msg
    assert f"Change {param} in the parameters cell (with papermill: -p {param} <value>)" in msg


def test_start_accepts_the_notebooks_own_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = start(smoke=True, out_dir=str(tmp_path), n_docs=None, n_boot=None, max_tokens=128,
                models={"MODEL": "zoo/dense-mid", "REAL_MODEL": "real/gemma-3-270m", "NONE": None},
                workloads={"WORKLOAD": "zoo-prose", "TASK_WORKLOAD": None}, revision="step-8")
    assert run.smoke and run.max_tokens == 128


@pytest.mark.notebooks
def test_papermill_with_a_bad_model_fails_in_the_first_cell(tmp_path):
    pm = pytest.importorskip("papermill")
    nb = ROOT / "notebooks" / "02_exits.ipynb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(pm.PapermillExecutionError) as info:
            pm.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), cwd=str(nb.parent), kernel_name="python3",
                                progress_bar=False, parameters={"MODEL": "nope", "SMOKE": True,
                                                                "OUT_DIR": str(tmp_path / "r")})
    err = info.value
    assert err.ename == "ValueError" and "notebook parameter MODEL = 'nope'" in err.evalue
    assert "Change MODEL in the parameters cell" in err.evalue
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    failed = next(i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", [])))
    assert "nb = start(" in "".join(code[failed]["source"])  # the first working cell, not one deep inside
    assert not (tmp_path / "r").exists()
