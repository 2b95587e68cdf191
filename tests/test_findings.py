"""Finding records (verdicts derived from the interval and the noise floor), the findings table, plots, the\nprotocol claims on a zoo missing twins, and the series runner."""
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from readout_factory import make_readout

from eeutils.notebook import experiments, findings, findings_view, plotting, series
from eeutils.notebook.findings import Finding


def _readout(agree_at_layer1: float, n_docs=6, per_doc=5, L=4, seed=0, model="m"):
    """Tokens whose top-1 matches the final from layer 1 on with the given probability, else from layer L."""
    rng = np.random.default_rng(seed)
    n = n_docs * per_doc
    top1 = np.full((n, L + 1), 5)
    early = rng.random(n) < agree_at_layer1
    top1[~early, 1:L] = 9
    top1[:, 0] = 3
    return make_readout(top1, doc=np.repeat(np.arange(n_docs), per_doc), model=model)


def test_finding_refuses_a_verdict_its_interval_contradicts():
    K = dict(interval_kind="doc-bootstrap+seed-t")
    with pytest.raises(ValueError, match="contradicts"):
        Finding("n", "c", "a>b", "a>b", -0.7, -1.0, -0.5, "m", verdict="agree", smallest_effect=0.1, **K)
    with pytest.raises(ValueError, match="contradicts"):  # interval excludes 0 but the effect is below the floor
        Finding("n", "c", "a>b", "a>b", 0.2, 0.1, 0.3, "m", verdict="agree", smallest_effect=0.25, **K)
    with pytest.raises(ValueError, match="contradicts"):
        Finding("n", "c", "a>b", "a>b", 0.2, 0.1, 0.3, "m", verdict="inconclusive", smallest_effect=0.1, **K)
    with pytest.raises(ValueError, match="verdict"):
        Finding("n", "c", "a>b", "a>b", 1, 0, 2, "m", verdict="maybe", smallest_effect=0.1)
    with pytest.raises(ValueError, match="above its upper"):
        Finding("n", "c", "a>b", "a>b", 0.0, 0.5, -0.5, "m", smallest_effect=0.1)
    assert Finding("n", "c", "a>b", "a>b", 0.2, 0.1, 0.3, "m", smallest_effect=0.25).verdict == "inconclusive"
    assert Finding("n", "c", "a>b", "a>b", 0.4, 0.1, 0.6, "m", smallest_effect=0.25, **K).verdict == "agree"
    assert Finding("n", "c", "a>b", "a>b", -0.4, -0.6, -0.1, "m", smallest_effect=float("nan")).verdict == "inconclusive"


def test_no_silent_fallback_to_the_interval_sign():
    # an interval that excludes zero, no smallest effect: an error, never "agree" from the sign alone
    with pytest.raises(ValueError, match="no smallest_effect"):
        Finding("n", "c", "a>b", "a>b", 0.4, 0.1, 0.6, "m", interval_kind="doc-bootstrap+seed-t")
    d = Finding("n", "c", "a>b", "a>b", 0.4, 0.1, 0.6, "m", verdict="descriptive")
    assert d.verdict == "descriptive"
    # agree/disagree rows must name their interval kind
    with pytest.raises(ValueError, match="named interval kind"):
        Finding("n", "c", "a>b", "a>b", 0.4, 0.1, 0.6, "m", smallest_effect=0.1)
    with pytest.raises(ValueError, match="named interval kind"):
        Finding("n", "c", "a>b", "a>b", -0.4, -0.6, -0.1, "m", smallest_effect=0.1, interval_kind="range over cells")
    from eeutils.analysis.verdicts import verdict
    with pytest.raises(ValueError, match="smallest_effect"):
        verdict(0.1, 0.3, 0.2, None)


def test_findings_table_states_interval_kinds_floor_and_robustness(tmp_path):
    rows = [Finding("05_architectures", "dense > moe", "dense > moe", "dense > moe", 0.4, 0.1, 0.6, "EAS/ceiling",
                    interval_kind="doc-bootstrap+seed-se", noise_floor=0.05, smallest_effect=0.05, robustness="15/17",
                    n_boot=1000, ci=0.95, seeds="A: 0,1; B: 0,1"),
            Finding("06_scale", "larger > smaller", "larger > smaller", "larger > smaller", 0.3, 0.1, 0.5, "m",
                    interval_kind="doc-bootstrap", smallest_effect=float("nan"), reason="no seed twin"),
            Finding("06_scale", "larger > smaller", "larger > smaller", "larger > smaller", -0.3, -0.5, -0.1, "m",
                    interval_kind="doc-bootstrap+seed-t", noise_floor=0.05, smallest_effect=0.05,
                    comparison="matched loss")]
    for i, f in enumerate(rows):
        findings.write_finding(f, tmp_path, f"r{i}")
    rec = json.loads((tmp_path / "findings" / "r0.json").read_text())
    assert rec["n_boot"] == 1000 and rec["ci"] == 0.95 and rec["seeds"] == "A: 0,1; B: 0,1"
    md, csv = findings_view.write_findings_table(tmp_path)
    text = md.read_text()
    assert "`doc-bootstrap+seed-se`: percentile document bootstrap" in text
    assert "`doc-bootstrap`: percentile document bootstrap only" in text
    assert "| 0.050 / 0.050 |" in text and "| 15/17 |" in text and "**agree**" in text
    assert "**inconclusive**" in text and "no seed twin" in text and "n/a" in text
    assert csv.read_text().count("\n") == 4
    # one claim, one lens, two verdicts: the table says what differs and how to read it
    assert "### larger > smaller (larger > smaller) · logit lens · zoo" in text
    assert "The comparisons differ in what is held equal" in text and "**disagree** at matched loss" in text
    summary = (tmp_path / "findings_summary.md").read_text()
    assert "| dense > moe | dense > moe | agree (+0.400, floor 0.050) | not measured | not measured |" in summary
    assert (tmp_path / "figures" / "findings_summary.png").exists()


def test_empty_findings_table(tmp_path):
    md, _ = findings_view.write_findings_table(tmp_path)
    assert "no finding records" in md.read_text()


def test_plots_are_labelled(tmp_path):
    rs = {"a": _readout(0.9), "b": _readout(0.3, seed=2)}
    frame = experiments.curves(rs, similarity="top1", n_boot=10)
    ax = plotting.layer_curves(frame, y="S", ylabel="agreement", band=("S_lo", "S_hi"))
    assert ax.get_xlabel() == plotting.DEPTH_LABEL and ax.get_ylabel() == "agreement"
    path = plotting.savefig(ax.figure, "unit", tmp_path)
    assert path.exists() and path.stat().st_size > 1000
    assert frame.rel_depth.max() == 1.0 and set(frame.model) == {"a", "b"}


def test_bar_whiskers_come_from_the_interval_columns():
    frame = pd.DataFrame({"model": ["a", "b"], "normalised": [0.5, 0.2], "normalised_lo": [0.4, 0.1],
                          "normalised_hi": [0.7, 0.25], "lo": [0.5, 0.0], "hi": [0.5, 0.3]})

    def whiskers(ax):
        segments = next(c for c in ax.containers if hasattr(c, "has_yerr")).lines[2][0].get_segments()
        return [(round(float(s[0][1]), 6), round(float(s[1][1]), 6)) for s in segments]

    ax = plotting.bar_with_ci(frame, x="model", y="normalised", ylabel="EAS / ceiling")
    assert whiskers(ax) == [(0.4, 0.7), (0.1, 0.25)] and ax.get_ylabel() == "EAS / ceiling"
    assert whiskers(plotting.bar_with_ci(frame, x="model", y="normalised", ylabel="e", interval=("lo", "hi"))) == \
        [(0.5, 0.5), (0.0, 0.3)]


def test_model_spec_and_labels():
    assert experiments.model_spec("zoo/dense-mid@step-10") == ("zoo/dense-mid", "step-10")
    assert experiments.model_spec(("gpt2", None)) == ("gpt2", None)
    assert experiments.label_of("zoo/dense-mid@step-10") == "dense-mid@step-10"
    assert experiments.label_of("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"


def test_series_parameters_and_presets(tmp_path):
    nbs = series.list_notebooks()
    assert nbs and nbs[0].name.startswith("01_")
    assert [p.name[:2] for p in series.list_notebooks(["3"])] == ["03"]
    with pytest.raises(series.SeriesError, match="no notebook"):
        series.list_notebooks(["99"])
    with pytest.raises(series.SeriesError, match="unknown preset"):
        series.load_preset("nope")
    preset = {"*": {"DTYPE": "bfloat16"}, "05": {"GROUPS": {"dense": ["x"]}}}
    p = series.parameters_for(nbs[4], tmp_path, True, ["gpt2"], preset)
    assert p["SMOKE"] is True and p["DTYPE"] == "bfloat16" and p["GROUPS"] == {"dense": ["x"]}
    assert "MODELS" not in p and "INTERACTIVE" not in p  # notebook 5 declares neither
    p1 = series.parameters_for(nbs[0], tmp_path, False, None, preset)
    assert p1["INTERACTIVE"] is False and p1["OUT_DIR"] == str(tmp_path)
    p3 = series.parameters_for(nbs[2], tmp_path, False, ["gpt2"], {})
    assert p3["MODELS"] == ["gpt2"]
    assert series.load_preset("paper")["*"]["DEVICE"] == "cuda"


def _partial_zoo(tmp_path, names):
    """A zoo folder holding only some of the shipped models (links), to test claims with missing twins."""
    from eeutils.core.zoo_store import zoo_root

    src = zoo_root()
    dst = tmp_path / "zoo"
    dst.mkdir()
    for n in ["tokenizer", *names]:
        (dst / n).symlink_to(src / n, target_is_directory=True)
    return dst


def test_protocol_claim_with_a_missing_twin_is_inconclusive_not_a_crash(tmp_path, monkeypatch):
    from eeutils.notebook import claims

    monkeypatch.setenv("EEUTILS_ZOO_DIR", str(_partial_zoo(tmp_path, ["dense-mid", "dense-mid-s1", "hybrid-mid"])))
    load = {"n_docs": 3, "max_tokens": 16, "cache_dir": tmp_path / "out", "dtype": "float32", "device": None}
    run = claims.run_claim("dense_vs_hybrid", tmp_path / "out", load, n_boot=10)
    f = run.finding
    assert run.sides == {"a": ["dense-mid", "dense-mid-s1"], "b": ["hybrid-mid"]}
    assert f.verdict == "inconclusive" and "no seed twin" in f.reason and "hybrid-mid-s1" in f.reason
    assert np.isfinite(f.effect) and f.interval_kind == "doc-bootstrap"
    assert f.robustness == "17/17" and f.n_boot == 10 and f.seeds == "A: 0,1; B: 0"
    assert "n_docs 3 (protocol 48)" in f.deviations and "n_boot 10" in f.deviations
    rec = json.loads((tmp_path / "out" / "findings" / "05_dense_vs_hybrid.json").read_text())
    assert rec["verdict"] == "inconclusive" and rec["claim_key"] == "dense_vs_hybrid"
    gone = claims.run_claim("dense_vs_moe", tmp_path / "out", load, n_boot=10, write=False)
    assert gone.finding.verdict == "inconclusive" and "models missing" in gone.finding.reason
    trend = claims.run_claim("training_dynamics", tmp_path / "out", load, n_boot=10, write=False)
    # both seeds of dense-mid have their revisions here: the trend test runs (any verdict), it does not crash
    assert trend.table is not None and np.isfinite(trend.finding.effect) and trend.finding.interval_kind


def test_borrowed_twin_pair_is_found_from_readout_labels():
    from eeutils.analysis.protocol import load_protocol
    from eeutils.notebook.claims import _borrow_map

    claim = load_protocol().claim("scale_large_vs_mid_equal_tokens")
    assert _borrow_map(claim, ["dense-large@step-448"]) == {"dense-large@step-448": ("dense-large", "dense-large-s1")}
    assert _borrow_map(claim, ["dense-mid", "dense-mid-s1"]) == {}
    gen = load_protocol().claim("generations_quarter_tokens")
    assert _borrow_map(gen, ["gpt2-mid"]) == {"gpt2-mid": ("gpt2-mid-full", "gpt2-mid-full-s1")}


def test_records_recomputed_from_their_own_tables(tmp_path, monkeypatch):
    """run_claim writes the per-model table beside each record; check_records recomputes effect, floor, smallest
    effect and verdict from it and catches a record edited afterwards."""
    from eeutils.notebook import claims, records

    monkeypatch.setenv("EEUTILS_ZOO_DIR", str(_partial_zoo(tmp_path, ["dense-mid", "dense-mid-s1", "dense-mid-s2",
                                                                     "moe-mid", "moe-mid-s1", "moe-mid-s2"])))
    out = tmp_path / "out"
    load = {"n_docs": 3, "max_tokens": 16, "cache_dir": out, "dtype": "float32", "device": None}
    run = claims.run_claim("dense_vs_moe", out, load, n_boot=10)
    table = json.loads((out / "findings" / "05_dense_vs_moe.json").read_text())
    scores = records.scores_path(out / "findings" / "05_dense_vs_moe.json")
    assert scores.exists() and len(records.check_records(out)) == 0
    t = __import__("pandas").read_csv(scores)
    assert sorted(t.side.unique()) == ["a", "b"] and len(t) == 6
    assert table["effect"] == pytest.approx(t[t.side == "a"].score.mean() - t[t.side == "b"].score.mean())
    assert run.finding.headline and run.finding.lens == "logit"
    bad = dict(table, effect=table["effect"] + 0.05)
    (out / "findings" / "05_dense_vs_moe.json").write_text(json.dumps(bad))
    problems = records.check_records(out)
    assert list(problems.field) == ["effect"]


def test_no_claim_has_two_verdicts_for_one_lens_and_comparison():
    import pandas as pd

    rows = [dict(notebook="05", claim="c", paper_direction="a > b", comparison="equal tokens", workload="w",
                 verdict=v, lens="logit", models="A=x; B=y") for v in ("agree", "inconclusive")]
    assert len(findings_view.unexplained_conflicts(pd.DataFrame(rows))) == 2
    rows[1]["comparison"] = "matched loss"
    assert findings_view.unexplained_conflicts(pd.DataFrame(rows)).empty
    rows[1].update(comparison="equal tokens", lens="tuned")
    assert findings_view.unexplained_conflicts(pd.DataFrame(rows)).empty
