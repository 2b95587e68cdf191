"""The Colab install cell: generated from the repository URL, first in every notebook, and correct offline
(exec'd with a fake ``google.colab`` and a recording subprocess runner: nothing touches the network)."""
import json
import os
import subprocess
import sys
import types

import pytest

from eeutils.notebook import colab

URL = "https://github.com/early-exit-kit/eeutils"


def run_cell(source, monkeypatch, on_colab: bool, clone_exists: bool = False):
    """Exec the cell; return the commands it would have run, the directory it moved to and sys.path."""
    calls, moved = [], []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)))
    monkeypatch.setattr(os, "chdir", moved.append)
    monkeypatch.setattr(os.path, "isdir", lambda p: clone_exists if p == colab.CLONE_DIR else os.path.exists(p))
    monkeypatch.setattr(sys, "path", list(sys.path))
    if on_colab:
        google = types.ModuleType("google")
        google.__path__ = []
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.setitem(sys.modules, "google.colab", None)  # import fails as it does off Colab
    namespace = {}
    exec(compile(source, "<colab cell>", "exec"), namespace)
    return calls, moved, sys.path, namespace


def test_repository_url_is_defined_once():
    assert colab.repository_url() == URL
    assert colab.github_slug(URL) == "early-exit-kit/eeutils"
    with pytest.raises(ValueError, match="GitHub"):
        colab.github_slug("https://gitlab.com/a/b")


def test_cell_on_colab_runs_the_exact_commands(monkeypatch):
    src = colab.install_cell_source("01_logit_lens.ipynb", URL)
    calls, moved, path, ns = run_cell(src, monkeypatch, on_colab=True)
    assert ns["ON_COLAB"] is True
    assert [c for c, _ in calls] == [
        ["git", "clone", "--depth", "1", "--branch", "main", URL, "/content/eeutils"],
        [sys.executable, "-m", "pip", "install", "-q", "-e", "/content/eeutils"],  # Colab's own Jupyter stack stays
    ]
    assert all(kw == {"check": True} for _, kw in calls)  # a failed step stops the notebook here, not later
    assert moved == ["/content/eeutils/notebooks"] and path[0] == "/content/eeutils"


def test_cell_on_colab_rerun_skips_the_clone(monkeypatch):
    src = colab.install_cell_source("10_your_model.ipynb", URL)
    calls, _, _, _ = run_cell(src, monkeypatch, on_colab=True, clone_exists=True)
    assert [c for c, _ in calls] == [[sys.executable, "-m", "pip", "install", "-q", "-e",
                                      "/content/eeutils[data]"]]


def test_cell_elsewhere_does_nothing(monkeypatch):
    before = list(sys.path)
    calls, moved, path, ns = run_cell(colab.install_cell_source("01_logit_lens.ipynb", URL), monkeypatch,
                                      on_colab=False)
    assert calls == [] and moved == [] and path == before and ns["ON_COLAB"] is False


@pytest.mark.parametrize("path", colab.list_notebooks(), ids=lambda p: p.name)
def test_every_notebook_starts_with_the_current_cell(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "code" and cells[0]["id"] == colab.CELL_ID, \
        "run `python -m eeutils.notebook.colab` to insert the Colab cell"
    assert "".join(cells[0]["source"]) == colab.install_cell_source(path), \
        "stale Colab cell: run `python -m eeutils.notebook.colab`"
    assert sum(colab._is_install_cell(c) for c in cells) == 1
    assert not colab.sync_notebook(path, write=False)


def test_readme_badges_are_current():
    text = colab.README.read_text()
    for p in colab.list_notebooks():
        assert colab.colab_link(p) in text, f"no Colab badge for {p.name}: run `python -m eeutils.notebook.colab`"
    assert not colab.sync_readme(colab.list_notebooks(), write=False)


def test_sync_is_idempotent_and_keeps_the_cell_first(tmp_path):
    import nbformat

    src = colab.list_notebooks()[0]
    nb = nbformat.read(src, as_version=4)
    stale = nbformat.v4.new_code_cell("# old colab cell", id=colab.CELL_ID)
    nb.cells = [c for c in nb.cells if not colab._is_install_cell(c)]
    nb.cells.insert(2, stale)  # a stale copy in the wrong place
    path = tmp_path / src.name
    path.write_text(nbformat.writes(nb) + "\n")
    assert colab.sync_notebook(path, URL)
    once = path.read_bytes()
    assert not colab.sync_notebook(path, URL) and path.read_bytes() == once
    cells = json.loads(once)["cells"]
    assert cells[0]["id"] == colab.CELL_ID and sum(colab._is_install_cell(c) for c in cells) == 1
    assert len(cells) == len(nb.cells)
