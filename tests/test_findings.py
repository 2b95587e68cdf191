"""Finding records, group effects with seed spread, the findings table, plots and the series runner."""
import json

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from eeutils.notebook import experiments, findings, plotting, series  # noqa: E402
from eeutils.notebook.findings import Finding  # noqa: E402

from readout_factory import make_readout  # noqa: E402


def _readout(agree_at_layer1: float, n_docs=6, per_doc=5, L=4, seed=0, model="m"):
    """Tokens whose top-1 matches the final from layer 1 on with the given probability, else from layer L."""
    rng = np.random.default_rng(seed)
    n = n_docs * per_doc
    top1 = np.full((n, L + 1), 5)
    early = rng.random(n) < agree_at_layer1
    top1[~early, 1:L] = 9
    top1[:, 0] = 3
    return make_readout(top1, doc=np.repeat(np.arange(n_docs), per_doc), model=model)


def test_verdict_from_interval():
    assert findings.verdict(0.1, 0.3) == "agree"
    assert findings.verdict(-0.3, -0.01) == "disagree"
    assert findings.verdict(-0.1, 0.2) == "inconclusive"
    assert findings.verdict(float("nan"), 1) == "inconclusive"
    with pytest.raises(ValueError, match="verdict"):
        Finding("n", "c", "a>b", "a>b", 1, 0, 2, "m", verdict="maybe")


def test_group_effect_hand_computed_and_seed_spread():
    # top1 similarity, alpha=1: EAS = mean over layers 1..L of S_l; S_l = share agreeing (l<L), 1 at L
    a1, a2, b = _readout(1.0), _readout(1.0, seed=1), _readout(0.0)
    rs = {"a1": a1, "a2": a2, "b": b}
    eff = experiments.group_effect(rs, ["a1", "a2"], ["b"], n_boot=20, similarity="top1", alpha=1.0, value="eas")
    # a: S = 1 at every layer -> 1; b: S = 0 at layers 1..3, 1 at 4 -> 0.25
    assert eff["effect"] == pytest.approx(0.75)
    assert eff["seed_min"] == pytest.approx(0.75) and eff["seed_max"] == pytest.approx(0.75)
    assert eff["lo"] <= 0.75 <= eff["hi"]
    with pytest.raises(KeyError, match="no readout"):
        experiments.group_effect(rs, ["zz"], ["b"], n_boot=0)


def test_check_claim_writes_record_and_table(tmp_path):
    rs = {"dense": _readout(0.9), "moe": _readout(0.2, seed=3)}
    f, _ = findings.check_claim(rs, ["dense"], ["moe"], notebook="05_architectures", claim="dense > moe",
                                paper_direction="dense > moe", positive="dense > moe", negative="moe > dense",
                                similarity="top1", out_dir=tmp_path, n_boot=50)
    assert f.effect > 0 and f.verdict == "agree" and f.measured_direction == "dense > moe"
    rec = json.loads((tmp_path / "findings" / "05_architectures_top1.json").read_text())
    assert rec["verdict"] == "agree"
    md, csv = findings.write_findings_table(tmp_path)
    assert "| 05_architectures |" in md.read_text() and "**agree**" in md.read_text()
    assert csv.read_text().count("\n") == 2
    rev, _ = findings.check_claim(rs, ["moe"], ["dense"], notebook="x", claim="moe > dense", paper_direction="",
                                  positive="moe > dense", negative="dense > moe", similarity="top1", n_boot=50)
    assert rev.verdict == "disagree"


def test_empty_findings_table(tmp_path):
    md, _ = findings.write_findings_table(tmp_path)
    assert "no finding records" in md.read_text()


def test_plots_are_labelled(tmp_path):
    rs = {"a": _readout(0.9), "b": _readout(0.3, seed=2)}
    frame = experiments.curves(rs, similarity="top1", n_boot=10)
    ax = plotting.layer_curves(frame, y="S", ylabel="agreement", band=("S_lo", "S_hi"))
    assert ax.get_xlabel() == plotting.DEPTH_LABEL and ax.get_ylabel() == "agreement"
    path = plotting.savefig(ax.figure, "unit", tmp_path)
    assert path.exists() and path.stat().st_size > 1000
    assert frame.rel_depth.max() == 1.0 and set(frame.model) == {"a", "b"}


def test_model_spec_and_labels():
    assert experiments.model_spec("zoo/dense-mid@step-10") == ("zoo/dense-mid", "step-10")
    assert experiments.model_spec(("gpt2", None)) == ("gpt2", None)
    assert experiments.label_of("zoo/dense-mid@step-10") == "dense-mid@step-10"
    assert experiments.label_of("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"


def test_series_parameters_and_presets(tmp_path):
    nbs = series.list_notebooks()
    assert nbs and nbs[0].name.startswith("01_")
    assert [p.name[:2] for p in series.list_notebooks(["3"])] == ["03"]
    with pytest.raises(SystemExit, match="no notebook"):
        series.list_notebooks(["99"])
    with pytest.raises(SystemExit, match="unknown preset"):
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
