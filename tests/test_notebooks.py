"""The notebook series: committed clean, and each one runs headlessly with smoke parameters."""
import json
from pathlib import Path

import numpy as np
import pytest

from eeutils.analysis.protocol import INTERVAL_KINDS

from conftest import SERIES_SMOKE_RUN

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
# figures each notebook must write (prefix match) and whether it writes finding records
EXPECTED_FINDINGS = {"04", "05", "06", "07", "08", "09", "12", "13"}
# notebook 10's smoke test reads SmolLM2 instead of its default Gemma: the same real-model code path at a
# fifth of the head (Gemma's 262k vocabulary is read in notebook 1's smoke run and tests/test_real_models.py)
SMOKE_PRESET = {"10": {"MODEL": "real/smollm2-135m-instruct"}}
# zoo models a notebook cannot run without (built by `python -m eeutils.zoo build`): skipped, with the reason
REQUIRES = {"12": ("dense-mid-layerskip", "dense-mid-layerskip-s1", "dense-mid-layerskip-s2", "dense-mid", "dense-mid-s1",
                   "dense-mid-s2")}


def test_series_is_complete():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == [f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)]
    assert len(NOTEBOOKS) >= 10


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_clean(path):
    nb = json.loads(path.read_text())
    assert "kernelspec" in nb["metadata"] and "language_info" in nb["metadata"]
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    src = "".join(params[0]["source"])
    assert "SMOKE" in src and "OUT_DIR" in src
    for c in cells:
        if c["cell_type"] == "code":
            assert not c.get("outputs"), "committed with outputs"
            assert c.get("execution_count") is None


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, request):
    pm = pytest.importorskip("papermill")
    from eeutils.zoo import list_zoo

    missing = [m for m in REQUIRES.get(path.name[:2], ()) if m not in list_zoo()]
    if missing:
        pytest.skip(f"the zoo lacks {missing} (rebuild 2: python -m eeutils.zoo build)")
    if path.name[:2] in SERIES_SMOKE_RUN:  # executed once by the series runner for this and the book test
        out, _ = request.getfixturevalue("smoke_series")
        executed = out / "notebooks" / path.name
    else:
        out, executed = tmp_path / "out", tmp_path / path.name
        from eeutils.notebook.series import parameters_for

        pm.execute_notebook(str(path), str(executed), cwd=str(NB_DIR), kernel_name="python3", progress_bar=False,
                            parameters=parameters_for(path, out, smoke=True, models=None, preset=SMOKE_PRESET))
    nb = json.loads(executed.read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # a course shows clean outputs: no warnings, progress bars or logs on stderr
    stderr = [(i, "".join(o.get("text", ""))[:300]) for i, c in enumerate(nb["cells"]) for o in c.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not stderr, f"stderr output in cells: {stderr}"
    figures = list((out / "figures").glob(f"{path.name[:2]}_*.png"))
    assert figures, "the notebook saved no figure"
    if path.name[:2] in EXPECTED_FINDINGS:
        records = [json.loads(p.read_text()) for p in (out / "findings").glob("*.json")]
        assert records, "the notebook wrote no finding record"
        for r in records:
            assert r["notebook"].startswith(path.stem[:2]), (r["notebook"], path.stem)
            # a verdict never contradicts its interval (it may be inconclusive for other reasons)
            assert r["verdict"] != "agree" or r["lo"] > 0, r
            assert r["verdict"] != "disagree" or r["hi"] < 0, r
            if r["verdict"] in ("agree", "disagree"):  # a verdict carries its floor and a named interval kind
                assert r["smallest_effect"] is not None and np.isfinite(r["smallest_effect"]), r
                assert r["interval_kind"] in INTERVAL_KINDS, r
        # every protocol record follows from the per-model table written beside it
        from eeutils.notebook.records import check_records

        problems = check_records(out)
        assert problems.empty, problems.to_string()
    if path.name.startswith("09"):  # the finding recomputed from the table the notebook wrote
        import pandas as pd
        table = pd.read_csv(out / "results" / "09_best_rule.csv")
        used = table[table.meaningful] if table.meaningful.any() else table
        rec = json.loads((out / "findings" / "09_benchmark.json").read_text())
        assert rec["effect"] == pytest.approx(0.0726 - used.best_rule_skip.median())
        assert rec["lo"] == pytest.approx(0.0726 - used.best_rule_skip.max())
        assert "range over cells" in rec["metric"] and "range over cells" in rec.get("interval_kind", "range over cells")
        assert (table.budget_oracle + 1e-9 >= table.best_rule_skip).all()
        _check_real_records(out)


def _check_real_records(out):
    """Notebook 9's real-model records recomputed from the held-out table it wrote (09_real_heldout_max_skip.csv)."""
    import pandas as pd
    from eeutils.analysis.heldout import claim_settings
    from eeutils.analysis.protocol import INTERVAL_KINDS

    held = pd.read_csv(out / "results" / "09_real_heldout_max_skip.csv")
    prim = held[held.halves == "primary"]
    assert len(prim) and (prim.groupby("model").best.sum() == 1).all()
    for model, g in prim.groupby("model"):
        for what, row in (("oracle", g[g.rule == "budget_oracle"].iloc[0]), ("rule", g[g.best].iloc[0])):
            name = f"09_benchmark_real_{model.removeprefix('real/')}_{what}.json"
            rec = json.loads((out / "findings" / name).read_text())
            assert rec["effect"] == pytest.approx(0.0726 - row.skip)
            assert (rec["lo"], rec["hi"]) == (pytest.approx(0.0726 - row.skip_hi), pytest.approx(0.0726 - row.skip_lo))
            assert rec["interval_kind"] == row.interval_kind and rec["interval_kind"] in INTERVAL_KINDS
            assert rec["smallest_effect"] == claim_settings()["min_effect"] and rec["n_docs"] == row.n_items
            assert rec["claim_key"] == "max_skip_within_budget" and f"McNemar exact p {row.mcnemar_p:.3g}" in rec["notes"]
