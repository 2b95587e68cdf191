"""Property-based tests (hypothesis) over the public entry points.

Properties: every input gives a valid result or a clear TypeError / ValueError, never a silent
coercion; Readout save/load is the identity whatever the file name; bootstrap intervals contain
their point estimate; EAS lies in [0, ceiling]. Example counts are kept small (the file runs in
well under a minute on two CPU cores).
"""
from __future__ import annotations

import functools
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import dense_small
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import eeutils
from eeutils import exits, metrics

FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CLEAR = (TypeError, ValueError)


def _lm():
    return dense_small()  # loaded once per session (tests/conftest.py)


@functools.lru_cache(maxsize=None)
def _readout():
    texts = ["The cat sat on the mat and looked out of the window.", "In the beginning was the word.",
             "1 + 2 = 3, and 3 + 4 = 7.", "def f(x):\n    return x * 2\n"]
    return eeutils.readout(_lm(), texts, progress=False)


def _valid(r, n_expected=None):
    assert isinstance(r, eeutils.Readout)
    assert r.n_tokens > 0 and r.n_layers == _lm().n_layers
    if n_expected is not None:
        assert r.n_tokens == n_expected
    for name in ("max_prob", "margin", "entropy", "kl_to_final", "logit_cos", "hidden_cos", "topk_overlap"):
        assert np.isfinite(r[name]).all(), name
    assert ((r["top1"] >= 0) & (r["top1"] < _lm().vocab_size)).all()
    np.testing.assert_allclose(r["kl_to_final"][:, -1], 0, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# readout inputs

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@FEW
@given(text=TEXT)
def test_any_text_gives_a_valid_readout_or_a_clear_error(text):
    lm = _lm()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            r = eeutils.readout(lm, text, progress=False)
    except ValueError as err:
        assert not text.strip(), (text, err)  # only an empty text may be refused
        return
    ids = lm.encode(text)
    _valid(r, min(len(ids), lm.max_length))
    assert r.token.tolist() == ids[: r.n_tokens]  # the text's own tokens, nothing substituted


@FEW
@given(texts=st.lists(TEXT.filter(lambda t: t.strip()), min_size=1, max_size=4))
def test_a_list_of_texts_is_read_document_by_document(texts):
    lm = _lm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        r = eeutils.readout(lm, texts, progress=False)
    assert r.n_docs == len(texts)
    for d, t in enumerate(texts):
        assert r.token[r.doc == d].tolist() == lm.encode(t)[: lm.max_length]


def _id_lists(vocab):
    edge = st.sampled_from([0, 1, vocab - 1, vocab, vocab + 1, -1, -vocab, 2**31, 2**63 - 1])
    one = st.one_of(st.integers(0, vocab - 1), edge)
    return st.lists(st.lists(one, min_size=1, max_size=12), min_size=1, max_size=4)


@SOME
@given(data=st.data(), batch_size=st.integers(1, 5), chunk_tokens=st.integers(1, 20))
def test_token_ids_give_a_valid_readout_or_name_the_bad_id(data, batch_size, chunk_tokens):
    lm = _lm()
    ids = data.draw(_id_lists(lm.vocab_size))
    bad = [(d, p, t) for d, doc in enumerate(ids) for p, t in enumerate(doc) if not 0 <= t < lm.vocab_size]
    try:
        r = eeutils.readout(lm, ids, batch_size=batch_size, chunk_tokens=chunk_tokens, progress=False)
    except ValueError as err:
        assert bad, err
        d, p, t = bad[0]
        assert f"document {d}" in str(err) and f"position {p}" in str(err) and str(t) in str(err), (bad, err)
        return
    assert not bad
    _valid(r, sum(map(len, ids)))
    assert r.token.tolist() == [t for doc in ids for t in doc]


@FEW
@given(ids=st.lists(st.lists(st.integers(2, 2000), min_size=1, max_size=10), min_size=1, max_size=4),
       batch_size=st.integers(1, 4), chunk_tokens=st.integers(1, 16))
def test_batching_and_chunking_do_not_change_the_numbers(ids, batch_size, chunk_tokens):
    lm = _lm()
    ref = eeutils.readout(lm, ids, batch_size=8, chunk_tokens=256, progress=False)
    r = eeutils.readout(lm, ids, batch_size=batch_size, chunk_tokens=chunk_tokens, progress=False)
    for name in ("logit_cos", "kl_to_final", "max_prob", "entropy"):
        np.testing.assert_allclose(r[name], ref[name], atol=2e-4, err_msg=name)


NOT_AN_INT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                       st.text(max_size=3), st.binary(max_size=3))


@FEW
@given(bad=NOT_AN_INT, where=st.integers(0, 3))
def test_a_non_integer_token_id_is_refused_with_a_type_error(bad, where):
    ids = [5, 6, 7, 8]
    ids[where] = bad
    with pytest.raises(TypeError):
        eeutils.readout(_lm(), [ids], progress=False)


@FEW
@given(bad=st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.binary(), st.dictionaries(
    st.text(max_size=3), st.text(max_size=3), max_size=2), st.sets(st.integers(), max_size=2)))
def test_inputs_of_other_types_are_refused_with_a_type_error(bad):
    with pytest.raises(TypeError, match="accepted|accepts|expected"):
        eeutils.readout(_lm(), bad, progress=False)


@FEW
@given(batch_size=st.one_of(st.integers(-3, 0), st.floats(), st.booleans(), st.text(max_size=2)),
       chunk_tokens=st.integers(1, 8))
def test_bad_batch_sizes_are_refused(batch_size, chunk_tokens):
    with pytest.raises(CLEAR):
        eeutils.readout(_lm(), [[5, 6, 7]], batch_size=batch_size, chunk_tokens=chunk_tokens, progress=False)


# --------------------------------------------------------------------------------------------------
# metric parameters

ANYTHING = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans(),
                     st.none(), st.text(max_size=4), st.just([0.5]))


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


@SOME
@given(alpha=ANYTHING)
def test_eas_alpha_is_a_number_in_0_1_or_refused(alpha):
    ok = _is_number(alpha) and 0 <= alpha <= 1
    if not ok:
        with pytest.raises(CLEAR, match="alpha"):
            metrics.eas(_readout(), alpha=alpha)
        return
    r = metrics.eas(_readout(), alpha=alpha)
    assert r.params["alpha"] == float(alpha)


@SOME
@given(alpha=st.floats(0, 1), similarity=st.sampled_from(sorted(metrics.SIMILARITY_KINDS)),
       aggregate=st.sampled_from(metrics.AGGREGATES), include_embedding=st.booleans())
def test_eas_lies_between_0_and_its_ceiling(alpha, similarity, aggregate, include_embedding):
    r = metrics.eas(_readout(), alpha=alpha, similarity=similarity, aggregate=aggregate,
                    include_embedding=include_embedding)
    assert 0.0 <= r.value <= r.ceiling + 1e-9
    assert r.ceiling == pytest.approx(metrics.eas_ceiling(_readout().n_layers, alpha=alpha,
                                                          include_embedding=include_embedding))
    assert 0.0 <= r.normalised <= 1.0 + 1e-9


@SOME
@given(n_boot=st.integers(1, 60), ci=st.floats(0.05, 0.99), seed=st.integers(0, 2**16), alpha=st.floats(0, 1),
       similarity=st.sampled_from(sorted(metrics.SIMILARITY_KINDS)), aggregate=st.sampled_from(metrics.AGGREGATES))
def test_bootstrap_interval_contains_the_point_estimate(n_boot, ci, seed, alpha, similarity, aggregate):
    b = metrics.bootstrap_eas(_readout(), n_boot=n_boot, ci=ci, seed=seed, alpha=alpha, similarity=similarity,
                              aggregate=aggregate)
    assert b.value == pytest.approx(metrics.eas(_readout(), alpha=alpha, similarity=similarity,
                                                aggregate=aggregate).value)
    assert b.lo <= b.value <= b.hi
    assert 0.0 <= b.lo and b.hi <= b.ceiling + 1e-9


@FEW
@given(n_boot=ANYTHING, ci=ANYTHING)
def test_bootstrap_parameters_are_numbers_or_refused(n_boot, ci):
    ok = (_is_number(n_boot) and float(n_boot).is_integer() and n_boot >= 1 and _is_number(ci) and 0 < ci < 1)
    assume(not ok or n_boot <= 3)
    if not ok:
        with pytest.raises(CLEAR):
            metrics.bootstrap_eas(_readout(), n_boot=n_boot, ci=ci)
        return
    b = metrics.bootstrap_eas(_readout(), n_boot=n_boot, ci=ci)
    assert b.n_boot == n_boot and b.ci == float(ci)


# --------------------------------------------------------------------------------------------------
# exit rules and budgets

THRESHOLD_OK = {
    "max_prob": lambda v: 0 <= v <= 1, "margin": lambda v: 0 <= v <= 1, "entropy": lambda v: v >= 0,
    "hidden_saturation": lambda v: -1 <= v <= 1, "budget_oracle": lambda v: 0 <= v <= 1,
    "budget_oracle_agreement": lambda v: 0 <= v <= 1,
    "static": lambda v: float(v).is_integer() and v >= 1, "consecutive": lambda v: float(v).is_integer() and v >= 1,
}


@SOME
@given(kind=st.sampled_from(sorted(THRESHOLD_OK)), threshold=ANYTHING, min_layer=st.one_of(st.integers(-1, 5),
                                                                                           st.booleans()))
def test_exit_rule_parameters_are_kept_or_refused(kind, threshold, min_layer):
    ok = (_is_number(threshold) and math.isfinite(threshold) and THRESHOLD_OK[kind](threshold)
          and not isinstance(min_layer, bool) and min_layer >= 1)
    if not ok:
        with pytest.raises(CLEAR):
            exits.ExitRule(kind, threshold, min_layer)
        return
    rule = exits.ExitRule(kind, threshold, min_layer)
    assert rule.threshold == threshold and rule.min_layer == min_layer  # the value given, not another


@FEW
@given(kind=st.sampled_from(["saturation", "oracle_correct"]), threshold=ANYTHING)
def test_oracle_rules_take_no_threshold(kind, threshold):
    missing = threshold is None or (isinstance(threshold, float) and math.isnan(threshold))
    if missing:
        assert exits.ExitRule(kind, threshold).threshold is None
    else:
        with pytest.raises(CLEAR):
            exits.ExitRule(kind, threshold)


@functools.lru_cache(maxsize=None)
def _tradeoff():
    return exits.tradeoff(_readout())


@SOME
@given(budget=ANYTHING)
def test_budgets_are_fractions_or_refused(budget):
    ok = _is_number(budget) and 0 <= budget < 1
    if not ok:
        with pytest.raises(CLEAR, match="budget"):
            exits.max_skip_under_budget(_tradeoff(), budget=budget)
        return
    out = exits.max_skip_under_budget(_tradeoff(), budget=budget)
    assert (out["budget"] == float(budget)).all()
    assert ((out["skip_ratio"] >= 0) & (out["skip_ratio"] <= 1)).all()
    admissible = out["n_admissible"] > 0
    assert (out.loc[admissible, "loss"] <= budget + 1e-9).all()


@FEW
@given(small=st.floats(0, 0.5), extra=st.floats(0, 0.49))
def test_a_larger_budget_never_skips_less(small, extra):
    a = exits.max_skip_under_budget(_tradeoff(), budget=small).set_index("rule")["skip_ratio"]
    b = exits.max_skip_under_budget(_tradeoff(), budget=small + extra).set_index("rule")["skip_ratio"]
    assert (b >= a - 1e-12).all()


# --------------------------------------------------------------------------------------------------
# Readout files

NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="/\\\x00"),
               min_size=1, max_size=30).filter(lambda s: s.strip(" .") != "" and len(s.encode()) < 200)
META_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53), st.text(max_size=20),
                       st.floats(allow_nan=False, allow_infinity=False))


def _same(a: eeutils.Readout, b: eeutils.Readout) -> None:
    assert set(a.stats) == set(b.stats)
    for k in a.stats:
        np.testing.assert_array_equal(a.stats[k], b.stats[k])
        assert a.stats[k].dtype == b.stats[k].dtype
    for k in ("topk", "doc", "position", "token", "target", "answer"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.meta == b.meta


@SOME
@given(name=NAME, extra=st.dictionaries(st.text(max_size=10).map(lambda s: "x_" + s), META_VALUE, max_size=3),
       n=st.integers(1, 40))
def test_save_then_load_is_the_identity_whatever_the_name(name, extra, n):
    ro = _readout().select(np.arange(n))
    ro.meta.update(extra)
    with tempfile.TemporaryDirectory() as tmp:
        path = ro.save(Path(tmp) / name)
        assert path.parent == Path(tmp) and path.exists()
        _same(ro, eeutils.Readout.load(path))
        assert [p.name for p in Path(tmp).iterdir()] == [path.name]  # nothing else left behind


@FEW
@given(a=NAME, b=NAME)
def test_different_names_never_share_a_file(a, b):
    assume(a != b and a + ".npz" != b and b + ".npz" != a)
    ro = _readout()
    with tempfile.TemporaryDirectory() as tmp:
        pa = ro.save(Path(tmp) / a)
        pb = ro.select(np.arange(2)).save(Path(tmp) / b)
        assert pa != pb
        assert eeutils.Readout.load(pa).n_tokens == ro.n_tokens and eeutils.Readout.load(pb).n_tokens == 2


@FEW
@given(positions=st.lists(st.integers(0, 10**9), min_size=1, max_size=6), mask=st.integers(1, 255))
def test_a_damaged_file_loads_identically_or_fails_naming_it(positions, mask):
    ro = _readout().select(np.arange(6))
    with tempfile.TemporaryDirectory() as tmp:
        path = ro.save(Path(tmp) / "r.npz")
        raw = bytearray(path.read_bytes())
        for p in positions:
            raw[p % len(raw)] ^= mask
        path.write_bytes(bytes(raw))
        try:
            back = eeutils.Readout.load(path)
        except ValueError as err:
            assert "r.npz" in str(err)
            return
        _same(ro, back)
