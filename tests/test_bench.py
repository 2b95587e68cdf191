"""Benchmark runner: resume, atomic cells, validation, CLI errors, Ray; fast fakes, no network."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eeutils.bench import cli as bench_cli
from eeutils.bench import runner as bench_runner
from eeutils.bench import BenchmarkError, CellFailed, parse_model, run_benchmark, safe_name
from eeutils.bench.cli import main
from eeutils.workloads import Workload, workload_from_pairs, workload_from_texts

MODELS = ["fake/alpha", "fake/beta@v2"]


def _workloads():
    return [workload_from_texts([f"text {i} " * (i + 1) for i in range(5)], "wl-text"),
            workload_from_pairs([(f"Q{i}?", f" {i}") for i in range(4)], "wl-qa")]


def fake_rows(cell, workload, config):
    """Deterministic tidy rows that depend on the cell and the settings (no model, no torch)."""
    h = sum(map(ord, cell.model + workload.name)) % 97
    thresholds = np.linspace(0.1, 0.9, 3)
    trade = pd.DataFrame({"row_type": "tradeoff", "rule": "max_prob", "threshold": thresholds,
                          "skip_ratio": (h / 97) * thresholds, "accuracy": 1 - thresholds / 10,
                          "n_tokens": len(workload)})
    eas = pd.DataFrame({"row_type": "eas", "similarity": list(config.similarities),
                        "eas": [h / 200 + i / 1000 for i in range(len(config.similarities))],
                        "eas_lo": np.nan, "eas_params": json.dumps({"alpha": config.alpha})})
    ms = pd.DataFrame({"row_type": ["max_skip"], "rule": ["max_prob"], "skip_ratio": [h / 970],
                       "budget": [config.budget]})
    return pd.concat([trade, eas, ms], ignore_index=True)


class Counter:
    """compute_cell wrapper counting calls; raises `exc` on call number `fail_on`."""

    def __init__(self, fail_on=None, exc=RuntimeError("simulated crash in the cell")):
        self.calls, self.fail_on, self.exc = [], fail_on, exc

    def __call__(self, cell, workload, config):
        self.calls.append((cell.model, workload.name))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise self.exc
        return fake_rows(cell, workload, config)


def _no_tmp(root: Path):
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def _comparable(frame):
    return frame.drop(columns=["timestamp"]).sort_values(
        ["model", "workload", "row_type", "rule", "similarity", "threshold"], na_position="first"
    ).reset_index(drop=True)


def _run(out, compute, **kw):
    kw.setdefault("progress", False)
    return run_benchmark(MODELS, _workloads(), out, compute_cell=compute, **kw)


# ---- resume and atomicity -------------------------------------------------------------------------

def test_crash_on_third_cell_then_resume_equals_uninterrupted_run(tmp_path):
    a, b = tmp_path / "interrupted", tmp_path / "straight"
    crash = Counter(fail_on=3)
    with pytest.raises(CellFailed) as info:
        _run(a, crash)
    msg = str(info.value)
    assert "rerun" in msg and "resume" in msg and "fake/beta@v2 x wl-text" in msg
    assert isinstance(info.value.__cause__, RuntimeError)
    assert len(list((a / "cells").glob("*.parquet"))) == 2
    assert not (a / "results.parquet").exists()
    assert _no_tmp(a) == []

    rerun = Counter()
    resumed = _run(a, rerun)
    assert len(rerun.calls) == 2  # only the two unfinished cells
    assert rerun.calls == [("fake/beta@v2", "wl-text"), ("fake/beta@v2", "wl-qa")]

    straight = _run(b, Counter())
    pd.testing.assert_frame_equal(_comparable(resumed), _comparable(straight))
    key = ["model", "workload", "row_type", "rule", "similarity", "threshold"]
    assert not resumed[key].astype(str).duplicated().any()
    assert len(resumed) == 4 * (3 + 4 + 1)
    assert _no_tmp(a) == [] and _no_tmp(b) == []

    # files on disk hold the same rows as the returned frame
    pd.testing.assert_frame_equal(_comparable(pd.read_parquet(a / "results.parquet")), _comparable(resumed))
    csv = pd.read_csv(a / "results.csv")
    assert len(csv) == len(resumed) and set(csv.columns) == set(resumed.columns)

    again = Counter()
    third = _run(a, again)
    assert again.calls == []
    pd.testing.assert_frame_equal(_comparable(third), _comparable(resumed))


def test_rows_carry_metadata_and_manifest(tmp_path):
    frame = _run(tmp_path, Counter(), budget=0.1, alpha=0.25, similarities=("logit_cos", "top1"), seed=3)
    for col in ("model", "revision", "family", "n_layers", "params_total", "params_active", "workload",
                "workload_kind", "kit_version", "timestamp", "bench_config", "row_type"):
        assert col in frame.columns
    assert set(frame["row_type"]) == {"tradeoff", "eas", "max_skip"}
    assert set(frame.loc[frame.model == "fake/beta@v2", "revision"]) == {"v2"}
    assert set(frame.loc[frame.workload == "wl-qa", "workload_kind"]) == {"qa"}
    assert frame["bench_config"].nunique() == 1
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["n_cells"] == 4 and manifest["n_rows"] == len(frame)
    assert manifest["args"]["budget"] == 0.1 and manifest["args"]["alpha"] == 0.25
    assert manifest["args"]["models"] == MODELS and manifest["args"]["workloads"] == ["wl-text", "wl-qa"]
    assert manifest["versions"]["pandas"] == pd.__version__
    assert [c["file"] for c in manifest["cells"]] == [
        f"cells/{safe_name(m)}__{w}.parquet" for m in MODELS for w in ("wl-text", "wl-qa")]


def test_keyboard_interrupt_keeps_finished_cells_and_leaves_no_partial_file(tmp_path, capsys):
    stop = Counter(fail_on=2, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, stop)
    assert [p.name for p in (tmp_path / "cells").glob("*.parquet")] == ["fake--alpha__wl-text.parquet"]
    assert _no_tmp(tmp_path) == []
    assert "rerun" in capsys.readouterr().err
    rerun = Counter()
    _run(tmp_path, rerun)
    assert len(rerun.calls) == 3


def test_failure_while_writing_leaves_no_cell_and_no_tmp(tmp_path, monkeypatch):
    real = pd.DataFrame.to_parquet

    def broken(self, path, *a, **k):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(CellFailed, match="disk full"):
        _run(tmp_path, Counter())
    assert list((tmp_path / "cells").iterdir()) == []
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    frame = _run(tmp_path, Counter())
    assert frame.groupby(["model", "workload"]).ngroups == 4


def test_rerun_with_other_settings_is_refused(tmp_path):
    _run(tmp_path, Counter())
    later = Counter()
    with pytest.raises(BenchmarkError, match="different settings"):
        _run(tmp_path, later, budget=0.2)
    assert later.calls == []


def test_no_merge_then_merge(tmp_path):
    c1 = Counter()
    run_benchmark(MODELS[:1], _workloads(), tmp_path, compute_cell=c1, merge=False, progress=False)
    assert not (tmp_path / "results.parquet").exists() and len(c1.calls) == 2
    c2 = Counter()
    frame = _run(tmp_path, c2)
    assert len(c2.calls) == 2 and (tmp_path / "results.parquet").exists()
    assert frame.groupby(["model", "workload"]).ngroups == 4


def test_stale_tmp_files_are_cleaned(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir(parents=True)
    old = cells / "x.parquet.123-abc.tmp"
    old.write_text("junk")
    import os
    os.utime(old, (1, 1))
    _run(tmp_path, Counter())
    assert _no_tmp(tmp_path) == []


def test_compute_cell_must_return_rows(tmp_path):
    with pytest.raises(CellFailed, match="DataFrame"):
        run_benchmark(MODELS[:1], _workloads()[:1], tmp_path, compute_cell=lambda c, w, cfg: None, progress=False)
    with pytest.raises(CellFailed, match="no rows"):
        run_benchmark(MODELS[:1], _workloads()[:1], tmp_path, compute_cell=lambda c, w, cfg: pd.DataFrame(),
                      progress=False)
    assert _no_tmp(tmp_path) == [] and list((tmp_path / "cells").iterdir()) == []


# ---- validation before any work -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=1.0), "budget"), (dict(budget=-0.01), "budget"), (dict(budget=float("nan")), "budget"),
    (dict(alpha=1.5), "alpha"), (dict(alpha=-0.1), "alpha"), (dict(executor="dask"), "executor"),
    (dict(n_docs=0), "n_docs"), (dict(n_boot=-1), "n_boot"), (dict(similarities=()), "similarit"),
    (dict(max_tokens=0), "max_tokens"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, kwargs, match):
    out = tmp_path / "out"
    counter = Counter()
    with pytest.raises(BenchmarkError, match=match):
        run_benchmark(MODELS, _workloads(), out, compute_cell=counter, progress=False, **kwargs)
    assert counter.calls == [] and not out.exists()


def test_settings_as_dataclasses_or_keywords(tmp_path):
    from eeutils.bench import BenchConfig, RunOptions

    counter = Counter()
    with pytest.raises(TypeError, match="budgte") as info:
        run_benchmark(MODELS, _workloads(), tmp_path / "bad", compute_cell=counter, budgte=0.1)
    assert "budget" in str(info.value) and "merge" in str(info.value)  # the known settings are listed
    with pytest.raises(TypeError, match="BenchConfig"):
        run_benchmark(MODELS, _workloads(), tmp_path / "bad", config={"budget": 0.1})
    assert counter.calls == [] and not (tmp_path / "bad").exists()
    # the two objects, keywords alone, and a keyword over an object: the same cells, the same settings stamp
    objects = run_benchmark(MODELS, _workloads(), tmp_path / "a", config=BenchConfig(budget=0.1, progress=False),
                            options=RunOptions(compute_cell=Counter()))
    words = _run(tmp_path / "b", Counter(), budget=0.1)
    mixed = run_benchmark(MODELS, _workloads(), tmp_path / "c", config=BenchConfig(budget=0.3, progress=False),
                          options=RunOptions(compute_cell=counter), budget=0.1)
    assert len(counter.calls) == 4
    for other in (words, mixed):
        pd.testing.assert_frame_equal(_comparable(objects), _comparable(other))
    assert set(objects["budget"].dropna()) == {0.1}


def test_unknown_or_empty_workloads_fail_before_any_work(tmp_path):
    out = tmp_path / "out"
    counter = Counter()
    with pytest.raises(BenchmarkError, match="unknown workload 'nope'"):
        run_benchmark(MODELS, ["nope"], out, compute_cell=counter, progress=False)
    with pytest.raises(BenchmarkError, match="no documents"):
        run_benchmark(MODELS, [Workload("hollow", [])], out, compute_cell=counter, progress=False)
    with pytest.raises(BenchmarkError, match="no workloads"):
        run_benchmark(MODELS, [], out, compute_cell=counter, progress=False)
    with pytest.raises(BenchmarkError, match="no models"):
        run_benchmark([], _workloads(), out, compute_cell=counter, progress=False)
    assert counter.calls == [] and not out.exists()


def test_unknown_models_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    out = tmp_path / "out"
    counter = Counter()
    for model, match in [("zoo/not-a-zoo-model", "not-a-zoo-model"), ("./no/such/model", "no such local folder"),
                         ("some-org/not-cached-model", "HF_HUB_OFFLINE")]:
        with pytest.raises(BenchmarkError, match=match):
            run_benchmark([model], _workloads(), out, compute_cell=counter, check_models=True, progress=False)
    # every bad model is reported, even after a good one
    good = tmp_path / "model-folder"
    good.mkdir()
    (good / "config.json").write_text("{}")
    (good / "model.safetensors").write_bytes(b"")  # the check is cheap: it looks for weight files, reads none
    with pytest.raises(BenchmarkError, match="no such local folder") as info:
        run_benchmark([str(good), "./missing/model"], _workloads(), out, compute_cell=counter, check_models=True,
                      progress=False)
    assert str(good) not in str(info.value)
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    with pytest.raises(BenchmarkError, match="config.json"):
        run_benchmark([str(not_model)], _workloads(), out, compute_cell=counter, check_models=True, progress=False)
    assert counter.calls == [] and not out.exists()


def test_missing_ray_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BenchmarkError, match="pip install"):
        _run(tmp_path / "out", Counter(), executor="ray")
    assert not (tmp_path / "out").exists()


def test_parse_model_and_safe_names():
    assert parse_model("zoo/dense-mid") == ("zoo/dense-mid", None)
    assert parse_model("EleutherAI/pythia-70m@step1000") == ("EleutherAI/pythia-70m", "step1000")
    with pytest.raises(BenchmarkError):
        parse_model("model@")
    assert safe_name("zoo/dense-mid") == "zoo--dense-mid"
    assert safe_name("a b/c@d") == "a--b--c--d"


def test_colliding_file_names_are_refused(tmp_path):
    with pytest.raises(BenchmarkError, match="same file name"):
        run_benchmark(["a/b", "a--b"], _workloads(), tmp_path / "o", compute_cell=Counter(), progress=False)


# ---- CLI ------------------------------------------------------------------------------------------

def test_cli_argument_errors_exit_2_with_a_message(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["bench", "--workloads", "zoo-prose", "--out", out]) == 2
    assert "--models" in capsys.readouterr().err
    assert main(["bench", "--models", "zoo/dense-mid", "--workloads", "zoo-prose", "--out", out,
                 "--budget", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "budget" in err and "Traceback" not in err and err.startswith("eeutils: error:")
    assert main(["bench", "--models", "m", "--workloads", "zoo-prose", "--out", out, "--executor", "dask"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["bench", "--models", "m", "--workloads", "zoo-prose", "--out", out, "--n-docs", "many"]) == 2
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert not Path(out).exists()


def test_cli_unknown_workload_and_model_exit_2(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    assert main(["bench", "--models", "zoo/not-in-the-zoo", "--workloads", "zoo-prose", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "not-in-the-zoo" in err and "Traceback" not in err
    assert main(["bench", "--models", "./no/such/dir", "--workloads", "zoo-prose", "--out", out]) == 2
    assert "no such local folder" in capsys.readouterr().err
    monkeypatch.setattr(bench_runner, "check_model", lambda name, revision=None: None)
    assert main(["bench", "--models", "x/y", "--workloads", "no-such-workload", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "unknown workload" in err and "register_workload" in err
    assert not Path(out).exists()


def test_cli_bench_passes_arguments_through(tmp_path, monkeypatch, capsys):
    seen = {}
    real = bench_runner.run_benchmark

    def wrapped(models, workloads, out_dir, **kw):
        seen.update(kw, models=models, workloads=workloads)
        return real(MODELS, _workloads(), out_dir, **{**kw, "compute_cell": Counter()})

    monkeypatch.setattr(bench_cli, "run_benchmark", wrapped)
    out = tmp_path / "out"
    code = main(["bench", "--models", "zoo/dense-mid", "zoo/moe-mid", "--workloads", "zoo-prose", "zoo-task",
                 "--out", str(out), "--budget", "0.1", "--n-docs", "7", "--no-progress"])
    assert code == 0
    assert seen["models"] == ["zoo/dense-mid", "zoo/moe-mid"] and seen["workloads"] == ["zoo-prose", "zoo-task"]
    config, options = seen["config"], seen["options"]  # the CLI builds the two settings objects
    assert config.budget == 0.1 and config.n_docs == 7 and not config.progress and options.executor == "local"
    assert (out / "results.parquet").exists()
    assert "rows ->" in capsys.readouterr().out


def test_cli_cell_failure_exits_1_and_says_rerun(tmp_path, monkeypatch, capsys):
    real = bench_runner.run_benchmark
    monkeypatch.setattr(bench_cli, "run_benchmark",
                        lambda m, w, o, **kw: real(MODELS, _workloads(), o, **{**kw, "compute_cell": Counter(2)}))
    assert main(["bench", "--models", "m", "--workloads", "w", "--out", str(tmp_path), "--no-progress"]) == 1
    assert "rerun" in capsys.readouterr().err


def test_cli_workloads_and_zoo_list(capsys):
    assert main(["workloads"]) == 0
    out = capsys.readouterr().out
    assert "zoo-prose" in out and "gsm8k" in out
    assert main(["zoo", "list"]) == 0
    assert main(["zoo"]) == 2


# ---- Ray ------------------------------------------------------------------------------------------

def test_ray_executor_matches_local_run(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'eeutils[ray]'")
    # this test module is not importable on the workers: ship its functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        def remote_rows(cell, workload, config):  # a local function: cloudpickled by value to the workers
            return fake_rows(cell, workload, config)

        via_ray = _run(tmp_path / "ray", remote_rows, executor="ray")
        local = _run(tmp_path / "local", Counter())
        pd.testing.assert_frame_equal(_comparable(via_ray), _comparable(local))
        assert _no_tmp(tmp_path) == []

        def failing(cell, workload, config):
            if workload.name == "wl-qa":
                raise ValueError("bad cell")
            return fake_rows(cell, workload, config)

        with pytest.raises(CellFailed, match="bad cell") as info:
            _run(tmp_path / "ray-fail", failing, executor="ray")
        assert "rerun" in str(info.value) and len(info.value.cells) == 2
        assert sorted(p.name for p in (tmp_path / "ray-fail" / "cells").glob("*.parquet")) == [
            "fake--alpha__wl-text.parquet", "fake--beta--v2__wl-text.parquet"]
        assert _no_tmp(tmp_path) == []
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        if started:
            ray.shutdown()


# ---- the real pipeline (needs the loading, readout, metrics and exits modules) ----------------------

TINY_TEXTS = ["the quick brown fox jumps over the lazy dog and the cat " * 2,
              "lorem ipsum dolor sit amet, consectetur adipiscing elit", "Q: 12 + 30 = ?\nA: 42"]


def _tiny_model_folder(folder: Path) -> Path:
    """A 3-layer random Llama with perturbed norms and a byte-level BPE tokenizer trained here (offline)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TINY_TEXTS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>").save_pretrained(folder)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.5 * torch.randn(p.shape))
    model.save_pretrained(folder)
    return folder


def test_default_pipeline_end_to_end_on_a_tiny_local_model(tmp_path):
    model = str(_tiny_model_folder(tmp_path / "tiny-llama"))
    wls = [workload_from_texts(TINY_TEXTS, "tiny-text"),
           workload_from_pairs([("Q: 1 + 2 = ?\nA:", " 3"), ("Q: 5 + 5 = ?\nA:", " 10")], "tiny-qa")]
    out = tmp_path / "out"
    kw = dict(n_boot=20, max_tokens=32, similarities=("logit_cos", "top1"), progress=False)
    frame = run_benchmark([model], wls, out, **kw)
    assert {"tradeoff", "eas", "max_skip"} == set(frame["row_type"])
    assert frame.groupby("workload").ngroups == 2
    eas = frame[frame.row_type == "eas"]
    assert sorted(eas["similarity"].unique()) == ["logit_cos", "top1"] and len(eas) == 4
    assert ((eas["eas_lo"] <= eas["eas"] + 1e-12) & (eas["eas"] <= eas["eas_hi"] + 1e-12)).all()
    assert (eas["eas"] <= eas["eas_ceiling"] + 1e-9).all()
    trade = frame[frame.row_type == "tradeoff"]
    assert {"rule", "threshold", "mean_layers", "skip_ratio", "agreement", "accuracy", "full_accuracy",
            "rel_acc_loss", "n_tokens"} <= set(trade.columns)
    ms = frame[frame.row_type == "max_skip"]
    assert (ms["budget"] == 0.05).all() and set(ms["rule"]) <= set(trade["rule"])
    assert (frame["n_layers"] == 3).all() and (frame["family"] == "dense").all()
    assert frame["params_total"].notna().all() and (frame["model"] == model).all()
    from eeutils.lens.result import Readout
    npz = out / "readouts" / f"{safe_name(model)}__tiny-qa.npz"
    ro = Readout.load(npz)
    assert ro.n_docs == 2 and ro.meta["workload"] == "tiny-qa" and ro.answer.any()
    # a lost cell file is recomputed from the saved readout (no new readout), with the same rows
    (out / "cells" / f"{safe_name(model)}__tiny-qa.parquet").unlink()
    before = npz.stat().st_mtime_ns
    again = run_benchmark([model], wls, out, **kw)
    assert npz.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(_comparable(again), _comparable(frame))
    assert _no_tmp(out) == []


def test_default_pipeline_on_a_zoo_model(tmp_path):
    from eeutils import zoo
    names = zoo.list_zoo()
    if not names:
        pytest.skip("no zoo model is built yet (python -m eeutils.zoo build)")
    model = "zoo/" + ([n for n in names if "small" in n] or names)[0]
    frame = run_benchmark([model], ["zoo-task", "zoo-prose"], tmp_path, n_docs=3, max_tokens=48, n_boot=20,
                          progress=False)
    assert {"tradeoff", "eas", "max_skip"} == set(frame["row_type"])
    assert set(frame["workload_kind"]) == {"qa", "lm"}
    assert (tmp_path / "readouts" / f"{safe_name(model)}__zoo-task.npz").exists()


def _perturbed_copy(src_name: str, dest):
    """A local copy of a zoo model and a function that perturbs its weights in place (same file size)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from eeutils.core.zoo_store import resolve
    src = resolve(src_name)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("checkpoints"))
    weights = sorted(Path(dest).glob("*.safetensors"))[0]

    def perturb():
        tensors = load_file(str(weights))
        name = next(n for n in tensors if "layers.0." in n and n.endswith("weight") and tensors[n].dim() == 2)
        tensors[name] = tensors[name] * 1.5
        save_file(tensors, str(weights), metadata={"format": "pt"})
    return perturb


def test_bench_readout_cache_follows_the_weights(tmp_path):
    """Issue 12: rebuilding a local model's weights in place must invalidate the benchmark's saved readout."""
    from eeutils.bench import BenchConfig, Cell, cell_readout

    folder = tmp_path / "model"
    perturb = _perturbed_copy("zoo/dense-small", folder)
    wl = workload_from_texts(["In the beginning God created the heaven and the earth."] * 2, "tiny")
    config = BenchConfig(out_dir=str(tmp_path / "out"), progress=False, max_tokens=32)
    cell = Cell(model=str(folder), name=str(folder), revision=None, workload="tiny", key=safe_name("m__tiny"))
    first = cell_readout(cell, wl, config)
    assert cell_readout(cell, wl, config).meta["bench_readout"] == first.meta["bench_readout"]  # reused
    perturb()
    second = cell_readout(cell, wl, config)
    assert second.meta["bench_readout"] != first.meta["bench_readout"]
    assert not np.allclose(second["kl_to_final"], first["kl_to_final"])


def test_notebook_readout_cache_follows_the_weights(tmp_path):
    """The notebooks' cached_readout uses the same content-addressed key (weights included)."""
    from eeutils.notebook.experiments import cached_readout

    folder = tmp_path / "model"
    perturb = _perturbed_copy("zoo/dense-small", folder)
    wl = workload_from_texts(["And God said, Let there be light: and there was light."] * 2, "tiny")
    first = cached_readout(str(folder), wl, cache_dir=tmp_path, max_tokens=32)
    assert len(list((tmp_path / "readouts").glob("*.npz"))) == 1
    perturb()
    second = cached_readout(str(folder), wl, cache_dir=tmp_path, max_tokens=32)
    assert len(list((tmp_path / "readouts").glob("*.npz"))) == 2
    assert not np.allclose(second["kl_to_final"], first["kl_to_final"])
