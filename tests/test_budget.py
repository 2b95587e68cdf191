"""The time budget: the series' per-notebook table, inductor's cache in the kit's cache, small readouts eager."""
from __future__ import annotations

from pathlib import Path

import pytest

from eeutils.decoding import evaluation
from eeutils.lens import fused
from eeutils.series import budget_table


def test_budget_table_gives_seconds_share_and_status():
    summary = {"seconds": {"01_a.ipynb": 30.0, "02_b.ipynb": 90.0}, "failed": [("02_b.ipynb", "boom")],
               "load_average": {"start": [1.0, 0.5, 0.2], "end": [2.0, 1.0, 0.5]}}
    lines = budget_table(summary).splitlines()
    a = next(line for line in lines if "01_a" in line).split()
    b = next(line for line in lines if "02_b" in line).split()
    assert a[1:] == ["30.0", "25.0%", "ok"]
    assert b[1:] == ["90.0", "75.0%", "FAILED"]
    assert next(line for line in lines if line.split()[0] == "total").split()[1] == "120.0"
    assert "load average" in lines[-1] and "[2.0, 1.0, 0.5]" in lines[-1]


def test_budget_table_without_load_or_failures():
    text = budget_table({"seconds": {"01_a.ipynb": 0.0}})
    assert "ok" in text and "load average" not in text


def test_inductor_cache_defaults_to_the_kits_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(fused.INDUCTOR_CACHE, raising=False)
    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path))
    assert Path(fused.compile_cache()) == tmp_path / "inductor"


def test_inductor_cache_respects_the_users_setting(monkeypatch, tmp_path):
    monkeypatch.setenv(fused.INDUCTOR_CACHE, str(tmp_path / "mine"))
    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path / "kit"))
    assert fused.compile_cache() == str(tmp_path / "mine")


@pytest.mark.parametrize("tokens, kernel", [(40, "eager"), (evaluation.EAGER_BELOW_TOKENS, "auto")])
def test_simulate_potential_reads_small_runs_with_the_eager_kernel(monkeypatch, tokens, kernel):
    seen = {}

    class Stop(Exception):
        pass

    def fake_readout(model, seqs, **kw):
        seen["kernel"], seen["tokens"] = kw.get("kernel"), sum(map(len, seqs))
        raise Stop

    monkeypatch.setattr(evaluation, "readout", fake_readout)
    monkeypatch.setattr(evaluation, "_as_loaded", lambda m: m)
    with pytest.raises(Stop):
        evaluation.simulate_potential(object(), [[1] * (tokens - 1)], [[2, 3]], [])
    assert seen == {"kernel": kernel, "tokens": tokens}
