"""Issue 12, "nothing silently wrong, nothing lost": one test per finding, through the public API only.

Readout inputs are validated at the door, loading errors say what is wrong with what was given,
readout files are checked on load and never clobber each other, metric parameters are not
coerced, the benchmark never reuses a stale number nor loses a finished cell, and auto-discovery
either reproduces the model's logits or says what it found.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import eeutils
import tiny_models as tm
from eeutils import exits, metrics

ZOO_MODEL = "zoo/dense-small"


def _zoo_folder(name: str = "dense-small") -> Path:
    from eeutils import zoo
    try:
        return Path(zoo.resolve(name))
    except Exception as err:  # noqa: BLE001 - zoo not built here
        pytest.skip(f"zoo model {name} not available: {err}")


@pytest.fixture(scope="module")
def lm():
    _zoo_folder()
    return eeutils.load_model(ZOO_MODEL)


@pytest.fixture(scope="module")
def small_readout(lm):
    return eeutils.readout(lm, ["The cat sat on the mat.", "In the beginning was the word.", "1 + 2 = 3"],
                           progress=False)


def _cli(argv) -> int:
    """The `eeutils` console script's entry point, wherever the package keeps it."""
    try:
        from eeutils.bench.cli import main
    except ImportError:
        from eeutils.cli import main
    return main([str(a) for a in argv])


def _bench_module():
    import eeutils.bench as bench
    return bench


BENCH_ARGS = ["--n-docs", "2", "--max-tokens", "24", "--n-boot", "5", "--similarities", "logit_cos", "top1",
              "--no-progress"]


def _bench(models, workloads, out, *extra) -> int:
    return _cli(["bench", "--models", *models, "--workloads", *workloads, "--out", out, *BENCH_ARGS, *extra])


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.is_file() and "tmp" in p.name.lower()]


# --------------------------------------------------------------------------------------------------
# readout inputs: validated at the door

@pytest.mark.parametrize("bad, given", [
    (b"hello world", "bytes"), (bytearray(b"hello"), "bytearray"), ({"a": "hello"}, "dict"), (5, "int"),
    (None, "None"), (3.5, "float"), (object(), "object"), ({"hello", "world"}, "set"),
])
def test_readout_refuses_inputs_of_the_wrong_type(lm, bad, given):
    with pytest.raises(TypeError) as info:
        eeutils.readout(lm, bad, progress=False)
    msg = str(info.value)
    assert given in msg, msg  # says what was given
    assert "str" in msg and "Workload" in msg and "tensor" in msg, msg  # and what is accepted


@pytest.mark.parametrize("bad, given", [
    ([[1.7, 2.2, 3.9]], "float"), ([[True, False, True]], "bool"), ([[1, "2", 3]], "str"),
    ([[1, None, 3]], "None"), ([[1, 2], [3.0, 4]], "float"), ([np.array([1.5, 2.5])], "float"),
    (torch.tensor([[1.5, 2.0]]), "float"), (torch.tensor([[True, False]]), "bool"),
    (np.array([[1.0, 2.0]]), "float"), (torch.zeros((1, 2, 3), dtype=torch.long), "3-D"),
    (["a text", 7], "int"),
])
def test_readout_refuses_token_ids_that_are_not_integers(lm, bad, given):
    with pytest.raises(TypeError) as info:
        eeutils.readout(lm, bad, progress=False)
    assert given in str(info.value), str(info.value)


def test_readout_accepts_python_and_numpy_integer_ids_alike(lm):
    ref = eeutils.readout(lm, [[5, 6, 7, 8]], progress=False)
    variants = [
        [5, 6, 7, 8],  # one flat list = one document
        [np.int64(5), np.int64(6), np.int64(7), np.int64(8)],  # a flat list of numpy ints
        [[np.int32(5), np.int32(6), np.int32(7), np.int32(8)]],
        np.array([[5, 6, 7, 8]], dtype=np.int64), np.array([5, 6, 7, 8], dtype=np.uint16),
        torch.tensor([[5, 6, 7, 8]]), torch.tensor([[5, 6, 7, 8]], dtype=torch.int32),
        [(5, 6, 7, 8)],
    ]
    for v in variants:
        r = eeutils.readout(lm, v, progress=False)
        assert r.token.tolist() == [5, 6, 7, 8], type(v)
        np.testing.assert_allclose(r["logit_cos"], ref["logit_cos"], atol=1e-6)


@pytest.mark.parametrize("ids, doc, pos, value", [
    ([[1, 2, 3], [4, 2048, 5]], 1, 1, 2048), ([[1, 2, 3], [4, 5, 9999]], 1, 2, 9999), ([[-1, 2, 3]], 0, 0, -1),
    ([[1, 2], [3, 4], [5, 6, -7]], 2, 2, -7),
])
def test_token_ids_outside_the_vocabulary_name_document_position_and_vocab(lm, ids, doc, pos, value):
    assert lm.vocab_size == 2048
    with pytest.raises(ValueError) as info:
        eeutils.readout(lm, ids, progress=False)
    msg = str(info.value)
    assert f"document {doc}" in msg and f"position {pos}" in msg and str(value) in msg and "2048" in msg, msg


def test_out_of_range_ids_in_a_tensor_are_refused_too(lm):
    with pytest.raises(ValueError, match="document 0, position 2"):
        eeutils.readout(lm, torch.tensor([[1, 2, 2048]]), progress=False)


# --------------------------------------------------------------------------------------------------
# load_model: errors say what is wrong with what was given

def _no_hub_advice(msg: str) -> None:
    assert "hf download" not in msg and "Hugging Face cache" not in msg, msg


def test_load_model_on_a_local_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(eeutils.ModelLoadError) as info:
        eeutils.load_model(str(missing))
    msg = str(info.value)
    assert str(missing) in msg and "does not exist" in msg, msg
    _no_hub_advice(msg)


def test_load_model_on_a_folder_with_a_config_and_no_weights(tmp_path):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(_zoo_folder() / "config.json", folder / "config.json")
    with pytest.raises(eeutils.ModelLoadError) as info:
        eeutils.load_model(str(folder))
    msg = str(info.value)
    assert str(folder) in msg and "weights" in msg and "safetensors" in msg, msg
    _no_hub_advice(msg)


def test_load_model_on_a_bert_folder_says_not_a_causal_lm(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path / "bert"
    BertForMaskedLM(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                               vocab_size=50, max_position_embeddings=32)).save_pretrained(folder)
    with pytest.raises(eeutils.ModelLoadError) as info:
        eeutils.load_model(str(folder), tokenizer=False)
    msg = str(info.value)
    assert "not a causal language model" in msg and "bert" in msg, msg
    assert "register_adapter" not in msg, msg


def test_load_model_refuses_a_revision_for_a_local_folder(tmp_path):
    folder = tmp_path / "local"
    shutil.copytree(_zoo_folder(), folder)
    with pytest.raises(eeutils.ModelLoadError) as info:
        eeutils.load_model(str(folder), revision="no-such-rev")
    msg = str(info.value)
    assert "no-such-rev" in msg and "local folder" in msg, msg
    lm = eeutils.load_model(str(folder))  # without a revision it loads
    assert lm.revision is None


# --------------------------------------------------------------------------------------------------
# Readout files: checked on load, never clobbered

def test_save_keeps_dotted_names_apart(small_readout, tmp_path):
    a = small_readout.save(tmp_path / "run.2024.01")
    b = small_readout.select(np.arange(3)).save(tmp_path / "run.2024.02")
    assert a != b and a.exists() and b.exists()
    assert eeutils.Readout.load(a).n_tokens == small_readout.n_tokens
    assert eeutils.Readout.load(b).n_tokens == 3
    assert small_readout.save(tmp_path / "plain.npz").name == "plain.npz"


def _arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _tamper(arrays: dict, how: str) -> dict:
    a = dict(arrays)
    if how.startswith("drop:"):
        del a[how[5:]]
    elif how == "meta-not-json":
        a["meta"] = np.frombuffer(b"{not json", dtype=np.uint8)
    elif how == "meta-not-a-dict":
        a["meta"] = np.frombuffer(b"[1, 2]", dtype=np.uint8)
    elif how == "topk-3-rows":
        a["topk"] = a["topk"][:3]
    elif how == "topk-fewer-layers":
        a["topk"] = a["topk"][:, :2]
    elif how == "entropy-fewer-layers":
        a["stat__entropy"] = a["stat__entropy"][:, :2]
    elif how == "max_prob-above-1":
        a["stat__max_prob"] = a["stat__max_prob"] * 5 + 1
    elif how == "negative-kl":
        a["stat__kl_to_final"] = a["stat__kl_to_final"] - 1
    elif how == "cosine-above-1":
        a["stat__logit_cos"] = a["stat__logit_cos"] + 2
    elif how == "top1-beyond-vocab":
        a["stat__top1"] = a["stat__top1"] + 100_000
    elif how == "float-top1":
        a["stat__top1"] = a["stat__top1"].astype(np.float32) + 0.5
    elif how == "doc-short":
        a["doc"] = a["doc"][:-1]
    elif how == "negative-position":
        a["position"] = a["position"] - 100
    else:
        raise AssertionError(how)
    return a


TAMPERINGS = ["drop:topk", "drop:doc", "drop:meta", "drop:stat__top1", "meta-not-json", "meta-not-a-dict",
              "topk-3-rows", "topk-fewer-layers", "entropy-fewer-layers", "max_prob-above-1", "negative-kl",
              "cosine-above-1", "top1-beyond-vocab", "float-top1", "doc-short", "negative-position"]


@pytest.mark.parametrize("how", TAMPERINGS)
def test_load_refuses_tampered_arrays_and_names_the_file(small_readout, tmp_path, how):
    good = small_readout.save(tmp_path / "good.npz")
    bad = tmp_path / f"tampered-{how.replace(':', '-')}.npz"
    np.savez_compressed(bad, **_tamper(_arrays(good), how))
    with pytest.raises(ValueError) as info:
        eeutils.Readout.load(bad)
    assert bad.name in str(info.value), str(info.value)


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "text", "directory"])
def test_load_refuses_corrupted_files_and_names_the_file(small_readout, tmp_path, how):
    raw = small_readout.save(tmp_path / "good.npz").read_bytes()
    bad = tmp_path / f"{how}.npz"
    if how == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif how == "flipped":  # flip 8 bytes inside the largest stored array's data (its CRC no longer matches)
        import io
        import zipfile

        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            member = max(z.infolist(), key=lambda i: i.compress_size)
        b = bytearray(raw)
        h = member.header_offset
        name_len = int.from_bytes(b[h + 26:h + 28], "little")
        extra_len = int.from_bytes(b[h + 28:h + 30], "little")
        start = h + 30 + name_len + extra_len + member.compress_size // 2
        for i in range(start, start + 8):
            b[i] ^= 0xFF
        bad.write_bytes(bytes(b))
    elif how == "empty":
        bad.write_bytes(b"")
    elif how == "text":
        bad.write_text("this is not a readout\n")
    else:
        bad.mkdir()
    with pytest.raises(ValueError) as info:
        eeutils.Readout.load(bad)
    assert bad.name in str(info.value), str(info.value)


def test_load_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here.npz"):
        eeutils.Readout.load(tmp_path / "nothing-here.npz")


# --------------------------------------------------------------------------------------------------
# metric and exit-rule parameters are not coerced

@pytest.mark.parametrize("alpha", [True, False, "0.5", "1", None, [0.5], float("nan")])
def test_eas_refuses_alpha_that_is_not_a_number(small_readout, alpha):
    with pytest.raises((TypeError, ValueError), match="alpha"):
        metrics.eas(small_readout, alpha=alpha)
    with pytest.raises((TypeError, ValueError), match="alpha"):
        metrics.bootstrap_eas(small_readout, n_boot=5, alpha=alpha)


def test_eas_accepts_python_and_numpy_numbers(small_readout):
    ref = metrics.eas(small_readout, alpha=0.5).value
    for a in (np.float64(0.5), np.float32(0.5), 0.5):
        assert metrics.eas(small_readout, alpha=a).value == pytest.approx(ref)
    assert metrics.eas(small_readout, alpha=1).value == pytest.approx(metrics.eas(small_readout, alpha=1.0).value)


@pytest.mark.parametrize("kwargs", [dict(ci="0.9"), dict(ci=True), dict(n_boot="10"), dict(n_boot=True),
                                    dict(seed="0"), dict(seed=1.5)])
def test_bootstrap_refuses_strings_and_bools(small_readout, kwargs):
    name = next(iter(kwargs))
    with pytest.raises((TypeError, ValueError), match=name):
        metrics.bootstrap_eas(small_readout, **dict(dict(n_boot=5), **kwargs))


@pytest.mark.parametrize("budget", ["0.05", True, None, float("nan"), [0.05]])
def test_max_skip_refuses_budget_that_is_not_a_number(small_readout, budget):
    frame = exits.tradeoff(small_readout)
    with pytest.raises((TypeError, ValueError), match="budget"):
        exits.max_skip_under_budget(frame, budget=budget)


@pytest.mark.parametrize("kind, threshold", [("max_prob", "0.5"), ("max_prob", True), ("entropy", "1"),
                                             ("static", "2"), ("static", True), ("consecutive", "3"),
                                             ("hidden_saturation", False)])
def test_exit_rule_refuses_thresholds_that_are_not_numbers(kind, threshold):
    with pytest.raises((TypeError, ValueError), match="threshold|layer|consecutive"):
        exits.ExitRule(kind, threshold)


# --------------------------------------------------------------------------------------------------
# the benchmark: no stale numbers, nothing lost, one-line errors

def test_smaller_grid_into_an_existing_out_keeps_earlier_cells(tmp_path):
    _zoo_folder()
    out = tmp_path / "bench"
    assert _bench([ZOO_MODEL], ["zoo-prose", "zoo-task"], out) == 0
    first = pd.read_parquet(out / "results.parquet")
    assert set(first["workload"]) == {"zoo-prose", "zoo-task"}
    assert _bench([ZOO_MODEL], ["zoo-prose"], out) == 0
    again = pd.read_parquet(out / "results.parquet")
    assert set(again["workload"]) == {"zoo-prose", "zoo-task"}
    assert len(again) == len(first)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {c["workload"] for c in manifest["cells"]} == {"zoo-prose", "zoo-task"}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("eeutils: error:"), err
    return lines[0]


def test_out_under_a_file_is_a_one_line_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _bench([ZOO_MODEL], ["zoo-prose"], afile / "out") == 2
    assert "afile" in _one_line_error(capsys)


def _read_only_folder(tmp_path: Path) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    probe = ro / "probe"
    try:
        probe.mkdir()  # root ignores permissions: use a read-only file system instead
        probe.rmdir()
    except OSError:
        return ro
    ro.chmod(0o755)
    for candidate in (Path("/sys"), Path("/proc/sys")):
        try:
            (candidate / "eeutils-probe").mkdir()
        except OSError:
            return candidate
        (candidate / "eeutils-probe").rmdir()
    pytest.skip("no read-only folder available here")


def test_out_in_a_read_only_folder_is_a_one_line_error(tmp_path, capsys):
    ro = _read_only_folder(tmp_path)
    try:
        assert _bench([ZOO_MODEL], ["zoo-prose"], ro / "eeutils-out") == 2
        line = _one_line_error(capsys)
        assert "eeutils-out" in line or str(ro) in line, line
    finally:
        if ro.is_relative_to(tmp_path):
            ro.chmod(0o755)


def test_unloadable_model_does_not_advise_a_rerun(tmp_path, capsys):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(_zoo_folder() / "config.json", folder / "config.json")
    code = _bench([folder], ["zoo-prose"], tmp_path / "out")
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "resume" not in err.lower() and "rerun the same command" not in err.lower(), err
    assert "weights" in err and str(folder) in err, err


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import pandas as pd

    real, seen = pd.DataFrame.to_parquet, []

    def dying(self, path, *args, **kwargs):
        where = str(path) if isinstance(path, (str, os.PathLike)) else str(getattr(path, "name", ""))
        if "cells" in where:
            seen.append(path)
            if len(seen) == 2:  # the second cell: leave a half-written temporary file, then die
                if hasattr(path, "write"):
                    path.write(b"PAR1 half")
                    path.flush()
                else:
                    with open(path, "wb") as f:
                        f.write(b"PAR1 half")
                os.kill(os.getpid(), signal.SIGKILL)
        return real(self, path, *args, **kwargs)

    pd.DataFrame.to_parquet = dying
    try:
        from eeutils.bench.cli import main
    except ImportError:
        from eeutils.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_killed_run_leaves_nothing_behind_after_a_successful_rerun(tmp_path):
    _zoo_folder()
    out = tmp_path / "bench"
    argv = ["bench", "--models", ZOO_MODEL, "--workloads", "zoo-prose", "zoo-task", "--out", str(out), *BENCH_ARGS]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _KILLER, *argv], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _tmp_files(out), "the killed run should have left a temporary file (test precondition)"
    assert _cli(argv) == 0
    assert _tmp_files(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert set(pd.read_parquet(out / "results.parquet")["workload"]) == {"zoo-prose", "zoo-task"}


def test_failed_run_does_not_leave_the_manifest_saying_running(tmp_path):
    bench = _bench_module()
    from eeutils.workloads import workload_from_texts

    def boom(cell, workload, config):
        raise RuntimeError("cell exploded")

    wl = workload_from_texts(["a b c"], "w")
    with pytest.raises(bench.CellFailed):
        bench.run_benchmark(["m"], [wl], tmp_path, compute_cell=boom, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] != "running" and "cell exploded" in json.dumps(manifest), manifest


def _perturb_weights(folder: Path, scale: float = 0.05) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    g = torch.Generator().manual_seed(1)
    for name, t in tensors.items():
        if t.is_floating_point():
            tensors[name] = (t.float() + scale * torch.randn(t.shape, generator=g)).to(t.dtype)
    save_file(tensors, path, metadata={"format": "pt"})


def _eas_values(out: Path) -> pd.Series:
    f = pd.read_parquet(out / "results.parquet")
    f = f[f["row_type"] == "eas"].sort_values(["workload", "similarity"])
    return f.set_index(["workload", "similarity"])["eas"]


def test_perturbed_local_weights_invalidate_the_bench_readout_cache(tmp_path, capsys):
    folder = tmp_path / "local-model"
    shutil.copytree(_zoo_folder(), folder)
    out = tmp_path / "bench"
    assert _bench([folder], ["zoo-prose"], out) == 0
    before = _eas_values(out)
    _perturb_weights(folder)
    assert _bench([folder], ["zoo-prose"], tmp_path / "fresh") == 0
    fresh = _eas_values(tmp_path / "fresh")
    assert not np.allclose(fresh.values, before.values)  # the perturbation matters (precondition)
    # rerun into the same folder: refused as stale, or recomputed; never the old numbers
    code = _bench([folder], ["zoo-prose"], out)
    if code == 0:
        pd.testing.assert_series_equal(_eas_values(out), fresh, rtol=1e-9, atol=1e-12)
    else:
        assert code == 2
    # after deleting cells/, as the refusal advises, the cached readout must not be reused either
    shutil.rmtree(out / "cells")
    assert _bench([folder], ["zoo-prose"], out) == 0
    pd.testing.assert_series_equal(_eas_values(out), fresh, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# zoo training resumes without unpickling code

def test_zoo_training_resumes_with_weights_only_load(tmp_path, monkeypatch):
    from dataclasses import replace

    from eeutils.zoo import train as TR
    from eeutils.zoo.build import RECIPES

    r = replace(RECIPES["dense-mid"], d=32, layers=2, steps=6, batch=4, warmup=2, checkpoints=())
    g = torch.Generator().manual_seed(0)
    wins, val = torch.randint(3, 256, (32, 16), generator=g), torch.randint(3, 256, (4, 16), generator=g)
    monkeypatch.setattr(TR, "STATE_EVERY", 3)
    TR.train(replace(r, steps=4), wins, val, 256, state_dir=tmp_path, progress=False)
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 3  # a plain, safe state file
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    TR.train(r, wins, val, 256, state_dir=tmp_path, progress=False)
    assert calls and all(c is True for c in calls), calls


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["EEUTILS_TEST_MARKER"]),))


def test_zoo_training_refuses_a_crafted_state_file(tmp_path, monkeypatch):
    from dataclasses import replace

    from eeutils.zoo import train as TR
    from eeutils.zoo.build import RECIPES

    marker = tmp_path / "code-ran"
    monkeypatch.setenv("EEUTILS_TEST_MARKER", str(marker))
    torch.save({"model": _Planted(), "step": 3}, tmp_path / "state.pt")
    r = replace(RECIPES["dense-mid"], d=32, layers=2, steps=6, batch=4, warmup=2, checkpoints=())
    g = torch.Generator().manual_seed(0)
    wins, val = torch.randint(3, 256, (32, 16), generator=g), torch.randint(3, 256, (4, 16), generator=g)
    with pytest.raises(Exception) as info:
        TR.train(r, wins, val, 256, state_dir=tmp_path, progress=False)
    assert not marker.exists()
    assert "state.pt" in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------------
# auto-discovery on unknown families: works, or an AdapterError that says what it found

def _ids(n=6, vocab=97):
    return [[(7 * i + 3) % vocab for i in range(n)]]


def _discovered_or_adapter_error(model):
    """Either the discovered adapter reproduces the model's logits, or AdapterError names what it found."""
    try:
        lm = eeutils.wrap_model(model)
    except eeutils.AdapterError as err:
        msg = str(err)
        assert "found" in msg and "missing" in msg or "reproduce" in msg, msg
        return None
    assert eeutils.check_last_layer(lm, _ids()) <= 1e-4, lm.resolved.paths
    r = eeutils.readout(lm, _ids(), progress=False)
    np.testing.assert_allclose(r["kl_to_final"][:, -1], 0, atol=1e-5)
    return lm


def test_discovery_handles_a_projection_between_final_norm_and_head():
    from transformers import OPTConfig, OPTForCausalLM

    assert "opt" not in eeutils.ADAPTERS
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(hidden_size=32, word_embed_proj_dim=16, ffn_dim=48, num_hidden_layers=2,
                                     num_attention_heads=4, vocab_size=97, max_position_embeddings=64)).eval()
    tm.perturb_norms(model)
    lm = _discovered_or_adapter_error(model)
    assert lm is not None, "a final norm followed by a projection must be discovered"


@pytest.mark.parametrize("model_type, extra", [
    ("opt", dict(hidden_size=32, word_embed_proj_dim=16, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
                 vocab_size=97, max_position_embeddings=64, do_layer_norm_before=False)),  # OPT-350m: no final norm
    ("bart", dict(d_model=32, decoder_layers=2, encoder_layers=2, decoder_attention_heads=4,
                  encoder_attention_heads=4, decoder_ffn_dim=48, encoder_ffn_dim=48, vocab_size=97,
                  max_position_embeddings=64)),  # post-norm decoder: the last norm sits inside each block
    ("recurrent_gemma", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=97, lru_width=32, head_dim=8,
                             attention_window_size=16)),  # soft-capped logits
])
def test_discovery_on_unknown_families_works_or_says_what_it_found(model_type, extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    assert model_type not in eeutils.ADAPTERS
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **extra)).eval()
    tm.perturb_norms(model)
    _discovered_or_adapter_error(model)


class _ToyConfig:
    model_type = "toy-moe"
    hidden_size = 16
    vocab_size = 40


class _ToyBlock(torch.nn.Module):
    def __init__(self, d, n_experts):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.experts = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(n_experts))

    def forward(self, h, **kwargs):
        x = self.norm(h)
        return h + sum(e(x) for e in self.experts) / len(self.experts)


class _ToyLM(torch.nn.Module):
    """An unknown family whose per-layer expert lists are longer than its list of layers."""

    def __init__(self, n_layers=2, n_experts=6):
        super().__init__()
        cfg = _ToyConfig()
        self.config = cfg
        self.model = torch.nn.Module()
        self.model.embed = torch.nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.layers = torch.nn.ModuleList(_ToyBlock(cfg.hidden_size, n_experts) for _ in range(n_layers))
        self.model.norm = torch.nn.LayerNorm(cfg.hidden_size)
        self.lm_head = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def get_input_embeddings(self):
        return self.model.embed

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask=None, **kwargs):
        h = self.model.embed(input_ids)
        for block in self.model.layers:
            h = block(h)
        from types import SimpleNamespace
        return SimpleNamespace(logits=self.lm_head(self.model.norm(h)))


def test_discovery_does_not_take_expert_lists_for_layers():
    torch.manual_seed(0)
    model = _ToyLM().eval()
    tm.perturb_norms(model)
    lm = _discovered_or_adapter_error(model)
    if lm is not None:
        assert lm.n_layers == 2 and lm.resolved.paths["blocks"] == "model.layers"


def test_a_damaged_notebook_cache_entry_is_recomputed(tmp_path):
    _zoo_folder()
    from eeutils.notebook.experiments import cached_readout

    kw = dict(n_docs=2, max_tokens=16, cache_dir=tmp_path)
    first = cached_readout(ZOO_MODEL, "zoo-prose", **kw)
    (entry,) = (tmp_path / "readouts").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(UserWarning, match=entry.name):
        again = cached_readout(ZOO_MODEL, "zoo-prose", **kw)
    np.testing.assert_array_equal(again["logit_cos"], first["logit_cos"])
    assert eeutils.Readout.load(entry).n_tokens == first.n_tokens  # rewritten whole
