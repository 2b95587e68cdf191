"""Tests never touch the network."""
import gc
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture
def one_thread():
    """One torch thread for the test (training steps are compared bit for bit and timed per step)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_finish(session):
    """Freeze what imports and collection built (torch, transformers, every test module): the cyclic garbage
    collector then never rescans those objects, so each `gc.collect()` (the benchmark runner calls one per model
    it releases) and each automatic full collection costs a fraction of what it did. Objects made by the tests
    themselves are still collected as before."""
    gc.collect()
    gc.freeze()


SERIES_SMOKE_RUN = ("01", "02")  # the notebooks of the shared smoke run (the book test renders them)


@pytest.fixture(scope="session")
def smoke_series(tmp_path_factory):
    """One smoke run of notebooks 01-02 through the series runner, shared by the notebook and book tests
    (each notebook's checks read its executed copy; running them twice cost ~30 s)."""
    pytest.importorskip("papermill")
    from eeutils.series import run_series

    out = tmp_path_factory.mktemp("series")
    summary = run_series(out, smoke=True, only=list(SERIES_SMOKE_RUN), html=False)
    return out, summary


@pytest.fixture
def broken_fused_compile(monkeypatch):
    """torch.compile fails as it does without a C++ compiler: the fused readout kernel must fall back to eager."""
    from eeutils.lens import fused

    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no C++ compiler")
        return call
    monkeypatch.setattr(fused, "_compiled", {})
    monkeypatch.setattr(fused, "_broken", None)
    monkeypatch.setattr(fused.torch, "compile", broken)


def dense_small():
    """The zoo's smallest model, loaded once per session (skipped where the zoo lacks it)."""
    return _dense_small()


@__import__("functools").lru_cache(maxsize=None)
def _dense_small():
    import eeutils
    from eeutils import zoo
    try:
        zoo.resolve("dense-small")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"zoo/dense-small not available: {err}")
    return eeutils.load_model("zoo/dense-small")


def small_tmpfs(tmp_path, size: str):
    """Mount a tmpfs of `size` at tmp_path/disk for a full-disk test (root only; skipped where mounting fails)."""
    import subprocess
    from contextlib import contextmanager

    @contextmanager
    def mounted():
        disk = tmp_path / "disk"
        disk.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
        try:
            yield disk
        finally:
            subprocess.run(["umount", str(disk)], capture_output=True)
    return mounted()
