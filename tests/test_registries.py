"""One registry per extension point: statistics (readout, kernel, decoder), exit rules (simulator,
decoder, widget), and the conclusions of notebook 11 computed by a tested function."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from eeutils.analysis import rule_parse as P
from eeutils.analysis import rules as R
from eeutils.lens import statistics as S


# ---- statistics -------------------------------------------------------------------------------------
DECODABLE = tuple(n for n, s in S.REGISTRY.items() if s.decodable)


def test_statistic_registry_matches_the_kernel_and_the_readout():
    from eeutils.lens.kernel import FinalRef, chunk_statistics
    g = torch.Generator().manual_seed(0)
    zf, z = torch.randn(4, 11, generator=g), torch.randn(4, 11, generator=g)
    h, hl = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    st = chunk_statistics(z, h, None, FinalRef.build(zf, hl, 3), torch.tensor([1, 2, -1, 0]), 3)
    assert list(st) == [*S.REGISTRY, "topk"]
    # each name holds its own statistic (max_prob is the largest probability)
    p = torch.softmax(z, -1)
    assert torch.allclose(st["max_prob"], p.max(-1).values, atol=1e-6)
    assert torch.allclose(st["entropy"], -(p * p.log()).sum(-1), atol=1e-5)
    assert all(st[n].dtype == spec.torch_dtype for n, spec in S.REGISTRY.items())


def test_readout_columns_and_dtypes_come_from_the_registry():
    import eeutils
    lm = eeutils.load_model("zoo/dense-small")
    r = eeutils.readout(lm, ["In the beginning God created"], progress=False, k=3)
    assert list(r.stats) == list(S.STATISTICS) == list(S.REGISTRY)
    assert all(r.stats[s.name].dtype == s.dtype for s in S.REGISTRY.values())


def test_decoder_token_statistics_agree_with_the_kernel():
    from eeutils.lens.kernel import FinalRef, chunk_statistics
    z = torch.randn(1, 13, generator=torch.Generator().manual_seed(1))
    st = chunk_statistics(z, torch.ones(1, 2), None, FinalRef.build(z, torch.ones(1, 2), 2), torch.tensor([-1]), 2)
    tok = S.token_statistics(z, DECODABLE)
    for name in ("max_prob", "margin", "entropy"):
        assert tok[name] == pytest.approx(float(st[name][0]), abs=1e-5)
    assert tok["top1"] == int(st["top1"][0])
    assert set(DECODABLE) >= {"max_prob", "margin", "entropy", "top1", "hidden_cos_prev"}
    h, prev = torch.randn(1, 6), torch.randn(1, 6)
    assert S.token_statistics(None, ("hidden_cos_prev",), hidden=(h, prev)) == {
        "hidden_cos_prev": pytest.approx(float(torch.nn.functional.cosine_similarity(h, prev)[0]), abs=1e-6)}
    # what a request needs decides what is computed: margin's terms give max_prob too, entropy's do not
    assert set(S.token_statistics(z, ("margin",))) == {"top1", "max_prob", "margin"}
    assert set(S.token_statistics(z, ("entropy", "top1_streak"))) == {"top1", "entropy"}


def test_every_statistic_reads_only_the_terms_it_declares():
    """compute() run on exactly its declared terms: reading any other raises KeyError here."""
    g = torch.Generator().manual_seed(2)
    n, k = 6, 3
    fake = {name: torch.rand(n, generator=g) + 0.5 for name in S.TERMS}
    fake.update(ids=torch.randint(0, 9, (n, k), generator=g), final_topk=torch.randint(0, 9, (n, k), generator=g),
                target=torch.tensor([1, -1, 2, 3, -1, 0]), k=k)
    for spec in S.REGISTRY.values():
        value = spec.compute({t: fake[t] for t in spec.reads})
        assert value.shape == (n,), spec.name


def test_registry_refuses_bad_entries():
    with pytest.raises(ValueError, match="unknown terms"):
        S.Statistic("bad", "?", lambda t: t["nope"], ("nope",))
    with pytest.raises(ValueError, match="decodable"):  # the decoder has no final layer for a generated token
        S.Statistic("bad", "?", lambda t: t["zpf"], ("zpf",), decodable=True)
    with pytest.raises(ValueError, match="already registered"):
        S.register_statistic(S.REGISTRY["entropy"])


# A toy statistic: the second-largest probability, from terms every kernel path already records
SECOND = S.Statistic("p_second", "p_l[top2]", lambda t: torch.exp(t["v2"] - t["lse"]), ("v2", "lse"), "float",
                     "top-k + exp-sum", decodable=True, bounds=(0, 1))


@pytest.mark.parametrize("kernel", ["eager", "fused"])
def test_a_new_statistic_is_one_entry(kernel, tmp_path):
    """Registered in one place, the statistic reaches the readout (both kernel paths), the saved file, the layer
    means, the decoder's per-token statistics and the docs table; afterwards the registry is as it was."""
    import eeutils
    import tiny_models as tm
    from eeutils.lens import Readout
    lm = eeutils.wrap_model(tm.make_model("llama"))
    ids = torch.randint(1, tm.VOCAB, (2, 11), generator=torch.Generator().manual_seed(4)).tolist()
    before = list(S.REGISTRY)
    with S.temporary_statistic(SECOND):
        r = eeutils.readout(lm, ids, k=3, kernel=kernel, progress=False, chunk_tokens=8)
        assert r.meta["kernel"] == kernel and list(r.stats) == before + ["p_second"]
        assert r["p_second"].dtype == np.float32 and r["p_second"].shape == r["max_prob"].shape
        np.testing.assert_allclose(r["p_second"], r["max_prob"] - r["margin"], atol=1e-6)
        assert "p_second" in r.layer_means().columns
        np.testing.assert_array_equal(Readout.load(r.save(tmp_path / "r")).stats["p_second"], r["p_second"])
        z = torch.randn(1, tm.VOCAB, generator=torch.Generator().manual_seed(5))
        tok = S.token_statistics(z, ("p_second",))
        assert tok["p_second"] == pytest.approx(float(torch.softmax(z, -1).topk(2).values[0, 1]), abs=1e-6)
        assert "| `p_second` | p_l[top2] |" in S.markdown_table() and "p_second" in eeutils.STATISTICS
    assert list(S.REGISTRY) == list(S.STATISTICS) == before
    assert "p_second" not in eeutils.readout(lm, ids, k=3, progress=False).stats


def test_docs_statistics_table_is_the_registry():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md").read_text()
    assert S.markdown_table() in text, "regenerate docs/DESIGN.md's table: eeutils.lens.statistics.markdown_table()"


# ---- exit rules ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(R.RULE_KINDS))
def test_every_rule_kind_is_usable_from_its_row(kind):
    row = R.RULE_KINDS[kind]
    t = None if row.threshold is None else (2 if row.threshold == "int" else row.bounds[0])
    rule = R.ExitRule(kind, t)
    assert rule.required_stats == row.reads and rule.realisable == row.realisable
    stats = {"saturated": np.array([True]), "top1": np.array([3]), "target": np.array([3]),
             "top1_streak": np.array([5]), "max_prob": np.array([1.0]), "margin": np.array([1.0]),
             "entropy": np.array([0.0]), "hidden_cos_prev": np.array([1.0])}
    if row.comparison == "solver":  # whole-readout oracles are not decided layer by layer
        with pytest.raises(ValueError, match="whole readout"):
            R.rule_fires(rule, {s: stats[s] for s in row.reads}, 3, 4)
    else:
        assert R.rule_fires(rule, {s: stats[s] for s in row.reads}, 3, 4)[0]  # every kind fires at its easy end
    if row.threshold is not None and row.bounds[1] != math.inf:
        with pytest.raises(ValueError):
            R.ExitRule(kind, row.bounds[1] + 1)


def test_rule_table_drives_defaults_decoder_and_widget():
    from eeutils.notebook.widgets import RULES
    assert set(RULES) == {k for k, r in R.RULE_KINDS.items() if r.widget}
    assert set(R.REALISABLE) == {k for k, r in R.RULE_KINDS.items() if r.realisable}
    assert {"saturation", "budget_oracle", "budget_oracle_agreement", "oracle_correct"}.isdisjoint(R.REALISABLE)
    kinds = [r.kind for r in P.default_rules(4)]
    assert kinds.count("static") == 4 and kinds.count("consecutive") == 3
    assert kinds.count("max_prob") == len(R.RULE_KINDS["max_prob"].grid)


def test_a_new_rule_kind_is_one_entry():
    """One keyword row: every list derived from the table, the parser, the simulator and the evaluation see it."""
    from eeutils import exits
    from eeutils.notebook import benchmark, real_models
    from readout_factory import synthetic_readout
    with pytest.raises(TypeError):  # rows are keyword rows
        R.RuleKind("toy", "a toy", ">=", "toy>={t:g}")
    toy = R.RuleKind(kind="toy", description="max_prob_l >= threshold (a copy of max_prob under a new name)",
                     reads=("max_prob",), comparison=">=", threshold="float", bounds=(0.0, 1.0), grid=(0.5, 0.9),
                     label="toy>={t:g}", confidence=True, decode="0.7", cheap=("0.7/every=2",))
    R.register_rule_kind(toy)
    try:
        with pytest.raises(ValueError, match="exists"):
            R.register_rule_kind(toy)
        for kinds in (R.REALISABLE, R.CONFIDENCE_RULES, exits.REALISABLE, benchmark.CONFIDENCE_RULES,
                      real_models.CONFIDENCE_RULES, R.EXIT_KINDS):
            assert "toy" in kinds
        assert "toy" not in R.ORACLES and "toy" not in R.WIDGET_RULES and R.DEFAULT_THRESHOLDS["toy"] == (0.5, 0.9)
        assert "toy:0.7" in R.DECODE_DEFAULTS and R.DECODE_DEFAULTS[-1] == "margin:1.0"  # the probe stays last
        assert "toy:0.7/every=2" in R.CHEAP_CHECKS and R.CHEAP_CHECKS[0] == "margin:1.0/cand=16"
        assert [r.threshold for r in P.default_rules(6) if r.kind == "toy"] == [0.5, 0.9]
        assert P.as_rule("toy:0.7/every=2").label == "toy>=0.7/every=2"
        with pytest.raises(ValueError, match="toy threshold out of range"):
            R.ExitRule("toy", 1.5)
        ro = synthetic_readout(n_docs=4, tokens_per_doc=10, n_layers=6, seed=2)
        e = exits.simulate(ro, R.ExitRule("toy", 0.7))
        assert np.array_equal(e, exits.simulate(ro, R.ExitRule("max_prob", 0.7))) and (e < ro.n_layers).any()
        assert exits.evaluate(ro, e)["skip_ratio"] > 0
        frame = exits.tradeoff(ro)
        assert list(frame[frame.rule == "toy"].label) == ["toy>=0.5", "toy>=0.9"]
    finally:
        R.unregister_rule_kind("toy")
    assert "toy" not in R.REALISABLE and "toy" not in R.EXIT_KINDS and "toy:0.7" not in R.DECODE_DEFAULTS


def test_rule_lists_are_derived_from_the_table():
    import eeutils.decoding.evaluation as de
    from eeutils.notebook import benchmark, real_models
    assert benchmark.CONFIDENCE_RULES is R.CONFIDENCE_RULES is real_models.CONFIDENCE_RULES
    assert R.CONFIDENCE_RULES == ["max_prob", "margin", "entropy", "hidden_saturation"]
    assert de.DEFAULT_RULES == "static:50%,max_prob:0.9,margin:0.5,entropy:1.0,hidden_saturation:0.99,margin:1.0"
    assert de.CHEAP_RULES.split(",")[:2] == ["margin:1.0/cand=16", "max_prob:0.9/cand=16"]
    assert all(P.as_rule(r, 6).check in ("candidates", "state") or P.as_rule(r, 6).subset
               for r in de.CHEAP_RULES.split(","))


def test_rule_arguments_are_parsed_in_one_place():
    import eeutils.decoding.evaluation as de
    from eeutils.analysis.exits import tradeoff  # noqa: F401  (uses as_rule too)
    assert P.as_rule("static:50%", 6) == R.ExitRule("static", 3)
    assert P.as_rule(("margin", 0.5)) == P.as_rule({"kind": "margin", "threshold": 0.5}) == P.as_rule("margin:0.5")
    assert P.as_rule("saturation").kind == "saturation"
    assert P.as_rule("budget_oracle:0.05").threshold == 0.05
    with pytest.raises(ValueError, match="now 'saturation'"):
        P.as_rule("oracle")
    assert de.parse_rules is P.parse_rules  # one parser; compare_decoding passes its default explicitly
    with pytest.raises(ValueError, match="kind:threshold"):
        P.as_rule("entropy")
    with pytest.raises(ValueError, match="unknown exit rule kind"):
        P.as_rule("frobnicate")


# ---- notebook 11's conclusions ------------------------------------------------------------------------
def _comparison():
    base = dict(label="m", family="dense", n_layers=4, oracle_skip_ratio=0.5, head_cost_blocks=0.8,
                kv_cost_blocks=0.25, driver_vs_generate=0.9, sim_skip_ratio=0.3, sim_agreement=0.9, owed_per_token=1.0,
                kv_writes_per_token=2.0, flop_speedup=0.7)
    rows = [dict(base, rule="full", kind="full", strategy="driver", speed_ratio=1.0, skip_ratio=0.0, agreement=1.0),
            dict(base, rule="margin>=1", kind="margin", strategy="propagate", speed_ratio=0.6, skip_ratio=0.0,
                 agreement=1.0),
            dict(base, rule="max_prob>=0.6", kind="max_prob", strategy="propagate", speed_ratio=1.3, skip_ratio=0.4,
                 agreement=0.97),
            dict(base, rule="static@2", kind="static", strategy="propagate", speed_ratio=1.8, skip_ratio=0.5,
                 agreement=0.4)]
    return pd.DataFrame(rows)


def test_decoding_summary_facts_and_text():
    from eeutils.notebook.decoding import TimingSetup, decoding_summary
    batch = pd.DataFrame({"batch_size": [1, 8], "rule": ["oracle (saturation)"] * 2, "skip_ratio": [0.5, 0.125],
                          "label": ["m", "m"]})
    s = decoding_summary(_comparison(), batch, never_label="margin>=1", quality=0.95,
                         timing=TimingSetup(repeats=3, n_prompts=2, max_new_tokens=5))
    row = s.facts.iloc[0]
    assert row.best_rule == "max_prob>=0.6" and row.best_speed_ratio == 1.3  # static@2 loses quality
    assert row.oracle_speedup == pytest.approx(2.0) and row.check_speed_ratio == 0.6
    assert "The fastest configuration that exits early and keeps ≥ 95% agreement is max_prob>=0.6" in s.markdown
    assert "the saturation oracle would skip **50%**" in s.markdown
    assert "falls to **12%** at batch 8" in s.markdown and s.batching["oracle_batch8"] == 0.125
    slow = _comparison().assign(speed_ratio=lambda d: d.speed_ratio.where(d.rule != "max_prob>=0.6", 0.5))
    assert "Every configuration that exits early" in decoding_summary(slow, None, never_label="margin>=1").markdown
    with pytest.raises(ValueError, match="lacks"):
        decoding_summary(_comparison().drop(columns="family"), None, never_label="x")


def test_notebook_start_settles_parameters_without_touching_globals(tmp_path):
    from eeutils.notebook import start
    before = set(globals())
    nb = start(smoke=True, out_dir=str(tmp_path), n_docs=48, n_boot=200, max_tokens=128, dtype="float32", device=None)
    assert set(globals()) == before, "start() must not inject names"
    assert (nb.n_docs, nb.n_boot, nb.max_tokens) == (6, 20, 128)
    assert nb.load == dict(n_docs=6, max_tokens=128, cache_dir=str(tmp_path), dtype="float32", device=None)
    assert nb.results == tmp_path / "results" and nb.results.is_dir()
    full = start(out_dir=str(tmp_path), n_docs=None, n_boot=None, max_tokens=None)  # None: the protocol's values
    assert (full.n_docs, full.n_boot, full.max_tokens) == (48, 1000, 128)
    unset = start(out_dir=str(tmp_path))  # a notebook without these parameters: readouts keep their own defaults
    assert "max_tokens" not in unset.load and unset.n_docs is None and unset.n_boot is None


def test_model_metadata_comes_from_the_card():
    from eeutils.core.zoo_store import card_meta
    assert card_meta("zoo/dense-mid-s1")["seed"] == 1 and card_meta("zoo/dense-mid")["seed"] == 0
    assert card_meta("EleutherAI/pythia-70m") == {}
