"""A built wheel carries the package data: installed into a fresh folder, it reads out a zoo model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ZOO_MODEL = "dense-small"


@pytest.mark.slow
def test_built_wheel_runs_a_readout_on_a_zoo_model(tmp_path):
    src = tmp_path / "src"  # build from a copy so the checkout gets no build/ or egg-info folders
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "results*", "build", "dist",
                                                             "*.egg-info", "__pycache__", ".pytest_cache"))
    # the zoo models besides the one read below are more of the same kind of package data (safetensors, json, md
    # matched by the same globs) and ~98% of its bytes: left out, the wheel zips and unzips in a fraction of the time
    for folder in (src / "data" / "zoo").iterdir():
        if folder.is_dir() and folder.name not in (ZOO_MODEL, "tokenizer"):
            shutil.rmtree(folder)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(src)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("eeutils-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, cwd=tmp_path)
    script = textwrap.dedent(f"""
        import eeutils
        from eeutils.core.resources import data_root
        from eeutils.metrics import reported_eas
        m = eeutils.load_model("zoo/{ZOO_MODEL}")
        r = eeutils.readout(m, ["In the beginning God created the heaven and the earth."], progress=False)
        print(eeutils.__file__)
        print(data_root())
        print(r.n_layers, len(reported_eas()) > 0)
    """)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    env.pop("EEUTILS_ZOO_DIR", None)
    out = subprocess.run([sys.executable, "-c", script], cwd=run_dir, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    file_, data, last = out.stdout.strip().splitlines()[-3:]
    assert Path(file_).resolve().is_relative_to(target.resolve())
    assert Path(data).resolve().is_relative_to(target.resolve())
    layers = json.loads((REPO / "data" / "zoo" / ZOO_MODEL / "config.json").read_text())["num_hidden_layers"]
    assert last == f"{layers} True"
