"""Notebook 9's numbers (`eeutils.notebook.benchmark`) and the benchmark's max-skip rows with both oracles."""
import numpy as np
import pandas as pd
import pytest

from eeutils import exits as X
from eeutils.analysis.protocol import load_protocol
from eeutils.bench.config import BenchConfig
from eeutils.bench.pipeline import cell_rows
from eeutils.notebook import benchmark as B
from readout_factory import synthetic_readout


def _cell(ro, model, workload, **config):
    rows = cell_rows(ro, BenchConfig(similarities=("top1",), n_boot=50, **config))
    return rows.assign(model=model, workload=workload)


def _task(seed):
    ro = synthetic_readout(n_docs=10, tokens_per_doc=6, n_layers=4, seed=seed)
    ro.answer[:] = np.tile([False, False, False, False, True, True], 10)
    return ro


def test_cell_rows_have_both_oracles_and_the_paired_test():
    ro = _task(1)
    rows = _cell(ro, "m", "task")
    ms = rows[rows.row_type == "max_skip"].set_index("rule")
    assert {"budget_oracle", "saturation"} <= set(ms.index)
    assert (ms.skip_over == "answer_tokens").all()
    for col in X.PAIRED_COLUMNS:
        assert col in ms
    oracle = X.evaluate(ro, X.simulate(ro, X.ExitRule("budget_oracle", 0.05)))
    assert ms.loc["budget_oracle", "skip_ratio"] == pytest.approx(oracle["skip_ratio"])
    assert (ms.skip_ratio <= ms.loc["budget_oracle", "skip_ratio"] + 1e-12).all()
    # user rules without the budget oracle get it added at the budget
    rows = _cell(ro, "m", "task", rules="max_prob:0.5", budget=0.1)
    assert set(rows[rows.row_type == "max_skip"].rule) == {"max_prob", "budget_oracle"}


def test_best_rule_table_and_savings_summary():
    res = pd.concat([_cell(synthetic_readout(n_docs=8, tokens_per_doc=10, n_layers=4, seed=s), f"m{s}", "prose")
                     for s in range(3)] + [_cell(_task(4), "m4", "task")], ignore_index=True)
    t = B.best_rule_table(res, min_correct=0)
    assert len(t) == 4 and set(t.skip_over) == {"all_tokens", "answer_tokens"}
    ms = res[res.row_type == "max_skip"]
    for _, row in t.iterrows():
        cell = ms[(ms.model == row.model) & (ms.workload == row.workload)].set_index("rule")
        assert row.best_rule_skip == pytest.approx(cell.loc[list(B.CONFIDENCE_RULES), "skip_ratio"].max())
        assert row.budget_oracle == pytest.approx(cell.loc["budget_oracle", "skip_ratio"])
        assert row.budget_oracle + 1e-12 >= max(row.saturation, row.best_rule_skip)
    s = B.savings_summary(t)
    vals = t.best_rule_skip.to_numpy()
    assert s["effect"] == pytest.approx(0.0726 - np.median(vals))
    assert (s["lo"], s["hi"]) == (pytest.approx(0.0726 - vals.max()), pytest.approx(0.0726 - vals.min()))
    assert s["interval_kind"].startswith("range over cells") and s["n_cells"] == 4
    f = B.savings_finding(s, ["m"], ["prose"])
    assert "range over cells" in f.metric and f.effect == s["effect"] and f.verdict == "descriptive"
    # cells below min_correct are left out of the summary unless none is left
    t2 = t.assign(meaningful=[True, False, False, False])
    assert B.savings_summary(t2)["median_skip"] == pytest.approx(t.best_rule_skip.iloc[0])
    assert B.savings_summary(t.assign(meaningful=False))["all_cells_weak"]
