"""Issue 27's sweep: every public entry point of docs/API.md's inventory fed hostile input by hypothesis.

Each entry point gets wrong types, non-finite and out-of-range numbers, unknown names and, where it reads text,
empty, whitespace-only, odd-unicode and far-too-long documents. The property: either valid output, or a clear
error: a ValueError / TypeError / KeyError (or one of the kit's own documented classes) whose message names the
argument, raised by the kit itself: never a bare error from deep inside torch, transformers, numpy or pandas
(`clear_or_valid`). Valid values drawn beside the bad ones must give valid output, so a check that refuses too
much fails too. One tiny zoo model (zoo/dense-small, 128-token context) and one readout are shared by the module;
example counts are small (`FEW`) so the sweep stays fast.
"""
from __future__ import annotations

import functools
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from conftest import dense_small, small_tmpfs
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eeutils
from eeutils import exits, metrics, workloads, zoo  # noqa: F401  (zoo: eeutils.zoo.resolve)
from eeutils.decoding import evaluation as dec_eval
from eeutils.decoding import generate_early_exit, generate_full, generate_self_speculative
from eeutils.lens import tuned
from eeutils.lens.result import Readout

FEW = settings(max_examples=8, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.filter_too_much])
PKG = Path(eeutils.__file__).resolve().parent
CLEAR = (ValueError, TypeError, KeyError)
CONTEXT = 128  # the zoo models' context


def _innermost(err: BaseException) -> str:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename if tb is not None else ""


def clear_error(err: BaseException, names, also=()) -> None:
    """Assert `err` is a clear error: a ValueError / TypeError / KeyError (or `also`, or a class the kit defines),
    raised by the kit's own code (the innermost frame lies in the package), whose message names one of `names`."""
    kit_class = type(err).__module__.startswith("eeutils")
    assert isinstance(err, CLEAR + tuple(also)) or kit_class, f"{type(err).__name__}: {err}"
    where = Path(_innermost(err)).resolve()
    assert PKG in where.parents, f"raised inside {where}, not by the kit: {type(err).__name__}: {err}"
    msg = str(err).lower()
    assert any(str(n).lower() in msg for n in names), f"the message names none of {names}: {err}"


def clear_or_valid(call: Callable, names, also=(), valid: Callable | None = None):
    """call(): its result (checked by `valid` when given) or None after checking the error is clear."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = call()
    except Exception as err:  # noqa: BLE001 - the assertion below is the test
        clear_error(err, names, also)
        return None
    if valid is not None:
        valid(out)
    return out


def refused(call: Callable, names, also=()) -> BaseException:
    """call() must raise a clear error (`clear_error`); returns it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except Exception as err:  # noqa: BLE001
            clear_error(err, names, also)
            return err
    raise AssertionError(f"accepted a bad value silently (names: {names})")


def accepted(call: Callable):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


# ---- hostile values ---------------------------------------------------------------------------------

class _Odd:
    def __repr__(self):
        return "<odd object>"


WRONG_TYPE = st.sampled_from([None, "0.5", "", b"1", [1], (0.5,), {"a": 1}, _Odd(), 1j])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf, np.float64("nan")])
BOOL = st.sampled_from([True, False, np.True_])
NOT_BOOL = st.sampled_from([None, "no", "yes", "False", 0, 1, 0.0, [True], _Odd()])
NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12)
UNKNOWN_NAME = NAME.filter(lambda s: s.strip() != s or s.lower() not in KNOWN_NAMES) | st.sampled_from(
    ["nope", "", " ", "LOGIT", "logit ", "../x", "\x00", "🙂"])
KNOWN_NAMES = {"logit", "tuned", "auto", "fused", "eager", "truncate", "error", "accuracy", "agreement", "eas",
               "normalised", "target", "final", "propagate", "defer", "driver", "hf", "logit_cos", "hidden_cos",
               "topk_overlap", "kl", "top1", "power_of_mean", "mean_of_power", "kl_to_final", "max_prob", "margin",
               "entropy", "ce", "hidden_cos_prev", "rank_of_final", *workloads.workload_names()}
NOT_A_LIST = WRONG_TYPE.filter(lambda v: not isinstance(v, (list, tuple)))  # for parameters that take a list


def bad_real(lo=None, hi=None, lo_open=False, hi_open=False, none_ok=False):
    """Values a real parameter in [lo, hi] must refuse: wrong types (None too unless `none_ok`), bools,
    non-finite numbers, and numbers outside."""
    out = [WRONG_TYPE.filter(lambda v: v is not None) if none_ok else WRONG_TYPE, BOOL, NON_FINITE]
    if lo is not None:
        out.append(st.floats(-1e9, lo, exclude_max=not lo_open, allow_nan=False))
    if hi is not None:
        out.append(st.floats(hi, 1e9, exclude_min=not hi_open, allow_nan=False))
    return st.one_of(*out)


def good_real(lo, hi, lo_open=False, hi_open=False):
    return st.floats(lo, hi, exclude_min=lo_open, exclude_max=hi_open, allow_nan=False)


def bad_int(lo=None, hi=None, none_ok=False):
    """Values an integer parameter in [lo, hi] must refuse: wrong types (None too unless `none_ok`), bools,
    non-finite numbers, fractions, integers out of range."""
    wrong = WRONG_TYPE.filter(lambda v: v is not None) if none_ok else WRONG_TYPE
    out = [wrong, BOOL, NON_FINITE, st.floats(-50, 50).filter(lambda x: x != int(x))]
    if lo is not None:
        out.append(st.integers(lo - 1000, lo - 1))
    if hi is not None:
        out.append(st.integers(hi + 1, hi + 1000))
    return st.one_of(*out)


# ---- the shared model and readout ---------------------------------------------------------------------

def lm():
    return dense_small()  # loaded once per session (tests/conftest.py)


@functools.lru_cache(maxsize=None)
def ro() -> Readout:
    return eeutils.readout(lm(), ["The cat sat on the mat.", "In the beginning was the word.", "1 + 2 = 3"],
                           progress=False)


@functools.lru_cache(maxsize=None)
def trade() -> pd.DataFrame:
    return exits.tradeoff(ro(), ["max_prob:0.5", "margin:1.0", "static:2"])


@functools.lru_cache(maxsize=None)
def sens() -> pd.DataFrame:
    return metrics.sensitivity({"a": ro(), "b": ro().select_docs([0, 1])}, alphas=(0.5,),
                               similarities=("logit_cos", "top1"))


def L() -> int:
    return ro().n_layers


# ---- the parameter table: (entry point, parameter) -> call, bad values, good values --------------------

@dataclass(frozen=True)
class Param:
    entry: str  # "module.function" as docs/API.md names it
    param: str
    call: Callable  # value -> the call's result
    bad: st.SearchStrategy
    good: st.SearchStrategy | None = None
    names: tuple = ()  # words a clear message may use for the parameter (default: the parameter itself)


P = Param
SIM_KINDS = st.sampled_from(sorted(metrics.SIMILARITY_KINDS))
PARAMS = [
    # ---- eeutils.load_model ------------------------------------------------------------------------
    P("load_model", "dtype", lambda v: eeutils.load_model("zoo/dense-small", dtype=v),
      st.one_of(UNKNOWN_NAME, st.sampled_from([3, 1.5, b"fp32"])), st.sampled_from(["float32", "fp32", None])),
    P("load_model", "device", lambda v: eeutils.load_model("zoo/dense-small", device=v),
      st.one_of(UNKNOWN_NAME, st.sampled_from([3, 1.5, b"cpu", "cuda:7", "meta" if not torch.cuda.is_available()
                                               else "quantum", "quantum"])), st.sampled_from(["cpu", None])),
    P("load_model", "trust_remote_code", lambda v: eeutils.load_model("zoo/dense-small", trust_remote_code=v),
      NOT_BOOL, st.just(False)),
    P("load_model", "tokenizer", lambda v: eeutils.load_model("zoo/dense-small", tokenizer=v), NOT_BOOL),
    P("load_model", "revision", lambda v: eeutils.load_model("zoo/dense-small", revision=v),
      st.sampled_from(["nope", "step-99999", 3, "../main"]), st.sampled_from([None, "main"]),
      names=("revision",)),
    # ---- eeutils.readout / check_last_layer -----------------------------------------------------------
    *[P("readout", p, (lambda p: lambda v: eeutils.readout(lm(), "a short text", progress=False, **{p: v}))(p),
        bad_int(lo, hi, none_ok=none_ok), st.integers(lo, good_hi)) for p, lo, hi, good_hi, none_ok in
      (("k", 2, 2048, 16, False), ("batch_size", 1, None, 4, False), ("chunk_tokens", 1, None, 64, True),
       ("max_batch_tokens", 1, None, 600, True), ("max_length", 1, CONTEXT, CONTEXT, True))],
    P("readout", "on_overflow", lambda v: eeutils.readout(lm(), "text", progress=False, on_overflow=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["truncate", "error"])),
    P("readout", "lens", lambda v: eeutils.readout(lm(), "text", progress=False, lens=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.just("logit")),
    P("readout", "kernel", lambda v: eeutils.readout(lm(), "text", progress=False, kernel=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["auto", "eager"])),
    P("readout", "lens_settings", lambda v: eeutils.readout(lm(), "text", progress=False, lens="tuned",
                                                            lens_settings=v),
      st.sampled_from(["x", 3, {"steps": 2}, [1]])),
    P("readout", "progress", lambda v: eeutils.readout(lm(), "text", progress=v), NOT_BOOL, BOOL),
    # ---- eeutils.metrics ------------------------------------------------------------------------------
    P("metrics.similarity", "kind", lambda v: metrics.similarity(ro(), v), st.one_of(UNKNOWN_NAME, WRONG_TYPE),
      SIM_KINDS, names=("kind", "similarity")),
    P("metrics.similarity", "k", lambda v: metrics.similarity(ro(), "topk_overlap", k=v), bad_int(1, 5, True),
      st.integers(1, 5)),
    P("metrics.eas", "alpha", lambda v: metrics.eas(ro(), alpha=v), bad_real(0, 1), good_real(0, 1)),
    P("metrics.eas", "similarity", lambda v: metrics.eas(ro(), similarity=v), st.one_of(UNKNOWN_NAME, WRONG_TYPE),
      SIM_KINDS),
    P("metrics.eas", "include_embedding", lambda v: metrics.eas(ro(), include_embedding=v), NOT_BOOL, BOOL),
    P("metrics.eas", "index_base", lambda v: metrics.eas(ro(), index_base=v, include_embedding=False),
      bad_int(0, 1), st.sampled_from([0, 1])),
    P("metrics.eas", "aggregate", lambda v: metrics.eas(ro(), aggregate=v), st.one_of(UNKNOWN_NAME, WRONG_TYPE),
      st.sampled_from(["power_of_mean", "mean_of_power"])),
    P("metrics.eas_ceiling", "n_layers", lambda v: metrics.eas_ceiling(v), bad_int(1, None), st.integers(1, 200)),
    P("metrics.eas_ceiling", "alpha", lambda v: metrics.eas_ceiling(6, v), bad_real(0, 1), good_real(0, 1)),
    P("metrics.bootstrap_eas", "n_boot", lambda v: metrics.bootstrap_eas(ro(), n_boot=v), bad_int(1, None),
      st.integers(1, 30)),
    P("metrics.bootstrap_eas", "ci", lambda v: metrics.bootstrap_eas(ro(), n_boot=10, ci=v),
      bad_real(0, 1, lo_open=True, hi_open=True), good_real(0.01, 0.99)),
    P("metrics.bootstrap_eas", "seed", lambda v: metrics.bootstrap_eas(ro(), n_boot=5, seed=v), bad_int(0, None),
      st.integers(0, 2**31)),
    P("metrics.bootstrap_eas", "eas_kwargs", lambda v: metrics.bootstrap_eas(ro(), n_boot=5, **{v: 0.5}),
      st.sampled_from(["alfa", "budget", "n_layers", "kind"]), names=("option",)),
    P("metrics.eas_replicates", "draws", lambda v: metrics.eas_replicates(ro(), v),
      st.sampled_from([None, "x", 3, [[0.5, 1.0]], np.full((2, 3), 9), np.full((2, 3), -1), np.zeros(3, int),
                       np.full((2, 3), np.nan)]),
      st.lists(st.lists(st.integers(0, 2), min_size=3, max_size=3), min_size=1, max_size=4).map(np.array)),
    P("metrics.eas_replicates", "value", lambda v: metrics.eas_replicates(ro(), np.zeros((2, 3), int), value=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["eas", "normalised"])),
    P("metrics.layer_curve", "similarity", lambda v: metrics.layer_curve(ro(), v), st.one_of(UNKNOWN_NAME, WRONG_TYPE),
      SIM_KINDS),
    P("metrics.layer_curve", "n_boot", lambda v: metrics.layer_curve(ro(), n_boot=v), bad_int(0, None),
      st.integers(0, 20)),
    P("metrics.layer_curve", "ci", lambda v: metrics.layer_curve(ro(), ci=v),
      bad_real(0, 1, lo_open=True, hi_open=True), good_real(0.01, 0.99)),
    P("metrics.layer_curve", "seed", lambda v: metrics.layer_curve(ro(), n_boot=3, seed=v), bad_int(0, None)),
    P("metrics.sensitivity", "readouts", lambda v: metrics.sensitivity(v),
      st.sampled_from([None, {}, [1], "x", {"a": 3}, {"a": None}]), names=("readout",)),
    P("metrics.sensitivity", "alphas", lambda v: metrics.sensitivity({"a": ro()}, alphas=v, similarities="top1"),
      st.one_of(NOT_A_LIST, st.lists(st.one_of(NOT_A_LIST, BOOL, NON_FINITE, st.floats(1.001, 9)), min_size=1,
                                     max_size=3)),
      st.lists(good_real(0, 1), min_size=1, max_size=3), names=("alpha",)),
    P("metrics.sensitivity", "similarities", lambda v: metrics.sensitivity({"a": ro()}, alphas=0.5, similarities=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE.filter(lambda x: x != "")), st.lists(SIM_KINDS, min_size=1, max_size=3),
      names=("similarit",)),
    P("metrics.sensitivity", "aggregates", lambda v: metrics.sensitivity({"a": ro()}, alphas=0.5,
                                                                         similarities="top1", aggregates=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), names=("aggregate",)),
    P("metrics.sensitivity", "k", lambda v: metrics.sensitivity({"a": ro()}, alphas=0.5,
                                                                similarities="topk_overlap", k=v),
      st.one_of(NOT_A_LIST.filter(lambda v: v is not None), BOOL, NON_FINITE, st.integers(6, 99)), st.integers(1, 5)),
    P("metrics.sensitivity", "rank_by", lambda v: metrics.sensitivity({"a": ro()}, rank_by=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE)),
    P("metrics.rank_stability", "frame", lambda v: metrics.rank_stability(v),
      st.sampled_from([None, "x", 3, pd.DataFrame(), pd.DataFrame({"model": ["a"]}), [1, 2]]), names=("frame",)),
    P("metrics.rank_stability", "reference", lambda v: metrics.rank_stability(sens(), reference=v),
      st.sampled_from(["x", 3, [1], {"nope": 1}, {"alfa": 0.5}]), st.sampled_from([None, {"alpha": 0.5}])),
    P("metrics.choice_stability", "frame", lambda v: metrics.choice_stability(v),
      st.sampled_from([None, "x", 3, pd.DataFrame(), [1, 2]])),
    P("metrics.choice_stability", "reference", lambda v: metrics.choice_stability(sens(), reference=v),
      st.sampled_from(["x", 3, {"nope": 1}]), st.sampled_from([None, {"alpha": 0.5}])),
    P("metrics.stability_summary", "choices", lambda v: metrics.stability_summary(v),
      st.sampled_from([None, "x", 3, pd.DataFrame(), pd.DataFrame({"choice": ["a"]})])),
    P("metrics.kendall_tau", "x", lambda v: metrics.kendall_tau(v, [1, 2, 3]),
      st.sampled_from(["abc", [1, 2], [[1, 2, 3]], None, [1, "a", 2], _Odd()]),
      st.lists(st.floats(-5, 5), min_size=3, max_size=3), names=("kendall_tau",)),
    P("metrics.settle_layer", "statistic", lambda v: metrics.settle_layer(ro(), v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["kl_to_final", "max_prob", "entropy"])),
    P("metrics.settle_layer", "threshold", lambda v: metrics.settle_layer(ro(), threshold=v),
      st.one_of(WRONG_TYPE, BOOL, NON_FINITE), st.floats(-10, 10)),
    P("metrics.settle_layer", "below", lambda v: metrics.settle_layer(ro(), below=v), NOT_BOOL, BOOL),
    P("metrics.settle_layer", "per_token", lambda v: metrics.settle_layer(ro(), per_token=v), NOT_BOOL, BOOL),
    P("metrics.settle_layer", "min_layer", lambda v: metrics.settle_layer(ro(), min_layer=v), bad_int(0, 6),
      st.integers(0, 6)),
    P("metrics.kl_settle_layer", "threshold", lambda v: metrics.kl_settle_layer(ro(), threshold=v),
      bad_real(0, None), st.floats(0, 50)),
    P("metrics.kl_settle_layer", "per_token", lambda v: metrics.kl_settle_layer(ro(), per_token=v), NOT_BOOL),
    P("metrics.kl_settle_layer", "min_layer", lambda v: metrics.kl_settle_layer(ro(), min_layer=v), bad_int(0, 6)),
    P("metrics.saturated_matrix", "top1", lambda v: metrics.saturated_matrix(v),
      st.sampled_from([None, "x", 3, np.zeros(3, int), np.zeros((2, 0), int), np.full((2, 3), 0.5), [[1, "a"]]]),
      st.lists(st.lists(st.integers(0, 9), min_size=3, max_size=3), min_size=1, max_size=4).map(np.array)),
    P("metrics.saturation_layer", "min_layer", lambda v: metrics.saturation_layer(ro(), v), bad_int(0, 6),
      st.integers(0, 6)),
    P("metrics.saturation_summary", "min_layer", lambda v: metrics.saturation_summary(ro(), v), bad_int(0, 6)),
    P("metrics.depth_summary", "layers", lambda v: metrics.depth_summary(v, 6),
      st.sampled_from([None, "x", [1.5], [np.nan], [7], [-1], [[1, 2]][0:0]]),
      st.lists(st.integers(0, 6), min_size=1, max_size=8)),
    P("metrics.depth_summary", "n_layers", lambda v: metrics.depth_summary([1, 2], v), bad_int(2, None),
      st.integers(2, 100), names=("n_layers", "layers")),
    P("metrics.reported_eas", "path", lambda v: metrics.reported_eas(v),
      st.sampled_from([3, "", "/no/such/file.csv", "README.md", b"x", "/"]), names=("path", "reported")),
    *[P(f"metrics.{f.__name__}", "readout", (lambda f: lambda v: f(v))(f),
        st.sampled_from([None, "x", 3, {}, pd.DataFrame()]))
      for f in (metrics.similarity, metrics.eas, metrics.bootstrap_eas, metrics.layer_curve, metrics.settle_layer,
                metrics.kl_settle_layer, metrics.saturation_layer, metrics.saturation_summary)],
    # ---- eeutils.exits --------------------------------------------------------------------------------
    P("exits.ExitRule", "kind", lambda v: exits.ExitRule(v, 0.5), st.one_of(UNKNOWN_NAME, WRONG_TYPE),
      names=("kind", "rule")),
    P("exits.ExitRule", "threshold", lambda v: exits.ExitRule("max_prob", v), bad_real(0, 1), good_real(0, 1)),
    P("exits.ExitRule", "min_layer", lambda v: exits.ExitRule("max_prob", 0.5, min_layer=v), bad_int(1, None),
      st.integers(1, 6)),
    P("exits.as_rule", "item", lambda v: exits.as_rule(v, 6),
      st.sampled_from([None, 3, "nope:0.5", "max_prob:abc", "max_prob:nan", "max_prob:inf", "max_prob:-1", "",
                       ("max_prob",), ("max_prob", math.nan), {"kind": "max_prob", "threshold": "x"}, b"max_prob:1",
                       "saturation:0.5", "static:200%", {"kind": "max_prob", "bogus": 1}]),
      st.sampled_from(["max_prob:0.5", ("margin", 1.0), {"kind": "static", "threshold": 3}, "static:50%"]),
      names=("rule", "threshold", "kind", "max_prob", "static", "bogus")),
    P("exits.parse_rules", "rules", lambda v: exits.parse_rules(v, 6),
      st.sampled_from([None, 3, [], "", b"x", ["nope"], 1.5, "max_prob:0.5,max_prob:0.5"]),
      st.sampled_from(["max_prob:0.5,margin:1", ["static:2"], exits.ExitRule("margin", 1.0)]),
      names=("rule",)),
    P("exits.parse_rules", "n_layers", lambda v: exits.parse_rules("max_prob:0.5", v), bad_int(1, None),
      st.integers(1, 64)),
    P("exits.default_rules", "n_layers", lambda v: exits.default_rules(v), bad_int(1, None), st.integers(1, 64)),
    P("exits.default_rules", "budget", lambda v: exits.default_rules(6, v),
      bad_real(0, 1, hi_open=True, none_ok=True),
      good_real(0, 1, hi_open=True)),
    P("exits.rule_fires", "rule", lambda v: exits.rule_fires(v, {"max_prob": np.ones(3)}, 1, 6),
      st.sampled_from([None, "max_prob:0.5", 3, {"kind": "max_prob"}])),
    P("exits.rule_fires", "layer_stats", lambda v: exits.rule_fires(exits.ExitRule("max_prob", 0.5), v, 1, 6),
      st.sampled_from([None, "x", 3, [0.5], {"margin": np.ones(2)}, {}]),
      st.lists(st.floats(0, 1), min_size=1, max_size=4).map(lambda x: {"max_prob": np.array(x)}),
      names=("layer_stats", "layer statistic")),
    P("exits.rule_fires", "layer", lambda v: exits.rule_fires(exits.ExitRule("max_prob", 0.5),
                                                               {"max_prob": np.ones(2)}, v, 6),
      bad_int(0, 6), st.integers(0, 6)),
    P("exits.rule_fires", "n_layers", lambda v: exits.rule_fires(exits.ExitRule("max_prob", 0.5),
                                                                  {"max_prob": np.ones(2)}, 1, v),
      bad_int(1, None), st.integers(1, 64)),
    P("exits.top1_streak", "top1", lambda v: exits.top1_streak(v),
      st.sampled_from([None, "x", 3, np.zeros(3, int), np.full((2, 3), 0.5), [["a", "b"]]]),
      st.lists(st.lists(st.integers(0, 9), min_size=3, max_size=3), min_size=1, max_size=4).map(np.array)),
    P("exits.update_streak", "top1", lambda v: exits.update_streak(np.zeros(2, int), np.ones(2, int), v),
      st.sampled_from([None, "x", [0.5, 1.5], np.ones(3, int), [[1, 2], [3, 4], [5, 6]]]),
      st.lists(st.integers(0, 9), min_size=2, max_size=2), names=("top1", "streak")),
    P("exits.simulate", "rule", lambda v: exits.simulate(ro(), v),
      st.sampled_from([None, "max_prob:0.5", 3, ("max_prob", 0.5)]), names=("rule",)),
    P("exits.evaluate", "exit_layers", lambda v: exits.evaluate(ro(), v),
      st.sampled_from([None, "x", 3, np.zeros(3, int), [1.5, 2.5]]), names=("exit",)),
    P("exits.tradeoff", "rules", lambda v: exits.tradeoff(ro(), v),
      st.sampled_from([3, 1.5, True, b"x", ["nope"], "nope:1", [None]]),
      st.sampled_from([["max_prob:0.5"], "margin:1.0", [("static", 2)]]), names=("rule",)),
    P("exits.tradeoff", "budget", lambda v: exits.tradeoff(ro(), budget=v),
      bad_real(0, 1, hi_open=True, none_ok=True),
      good_real(0, 0.99)),
    P("exits.max_skip_under_budget", "tradeoff_frame", lambda v: exits.max_skip_under_budget(v),
      st.sampled_from([None, "x", 3, pd.DataFrame(), pd.DataFrame({"rule": ["a"]})]), names=("frame",)),
    P("exits.max_skip_under_budget", "budget", lambda v: exits.max_skip_under_budget(trade(), v),
      bad_real(0, 1, hi_open=True), good_real(0, 0.99)),
    P("exits.max_skip_under_budget", "metric", lambda v: exits.max_skip_under_budget(trade(), metric=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["accuracy", "agreement"])),
    P("exits.max_skip_under_budget", "by", lambda v: exits.max_skip_under_budget(trade(), by=v),
      st.sampled_from([3, "nope", ["nope"], [None], 1.5]), st.sampled_from([None, [], ["model"], "model"])),
    *[P("exits.max_skip_under_budget", p, (lambda p: lambda v: exits.max_skip_under_budget(trade(), **{p: v}))(p),
        bad, good) for p, bad, good in
      (("ci", bad_real(0, 1, lo_open=True, hi_open=True), good_real(0.01, 0.99)),
       ("n_boot", bad_int(1, None), st.integers(1, 50)), ("seed", bad_int(0, None), st.integers(0, 100)))],
    P("exits.max_skip_under_budget", "seed", lambda v: exits.max_skip_under_budget(trade(), readout=ro(), n_boot=5,
                                                                                     seed=v),
      bad_int(0, None), st.integers(0, 2**31)),
    P("exits.budget_oracle_exits", "budget", lambda v: exits.budget_oracle_exits(ro(), v), bad_real(0, 1),
      good_real(0, 1)),
    P("exits.budget_oracle_exits", "min_layer", lambda v: exits.budget_oracle_exits(ro(), 0.05, v), bad_int(0, 6),
      st.integers(0, 6)),
    P("exits.budget_oracle_exits", "reference", lambda v: exits.budget_oracle_exits(ro(), 0.05, reference=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["target", "final"])),
    P("exits.paired_loss", "exit_layers", lambda v: exits.paired_loss(ro(), v, 0.05, n_boot=5),
      st.sampled_from([None, "x", 0.5, np.zeros(2, int), np.full(3, 1.5), [math.nan]]),
      names=("exit",)),
    P("exits.paired_loss", "budget", lambda v: exits.paired_loss(ro(), np.full(ro().n_tokens, L()), v, n_boot=5),
      bad_real(0, 1), good_real(0, 1)),
    P("exits.paired_loss", "seed", lambda v: exits.paired_loss(ro(), np.full(ro().n_tokens, L()), 0.05, n_boot=5,
                                                               seed=v),
      bad_int(0, None), st.integers(0, 2**31)),
    P("exits.mcnemar_exact", "b", lambda v: exits.mcnemar_exact(v, 2), bad_int(0, None), st.integers(0, 200)),
    P("exits.skip_tokens", "readout", lambda v: exits.skip_tokens(v), st.sampled_from([None, "x", 3, {}])),
    # ---- eeutils.decoding -----------------------------------------------------------------------------
    P("decoding.generate_early_exit", "max_new_tokens",
      lambda v: generate_early_exit(lm(), "Hello there", max_new_tokens=v), bad_int(1, CONTEXT), st.integers(1, 3)),
    P("decoding.generate_early_exit", "strategy",
      lambda v: generate_early_exit(lm(), "Hello", "max_prob:0.5", max_new_tokens=2, strategy=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["propagate", "defer"])),
    P("decoding.generate_early_exit", "min_layer",
      lambda v: generate_early_exit(lm(), "Hello", ("margin", 1.0), max_new_tokens=2, min_layer=v),
      bad_int(1, 6), st.integers(1, 6)),
    P("decoding.generate_early_exit", "rule",
      lambda v: generate_early_exit(lm(), "Hello", v, max_new_tokens=2),
      st.sampled_from([3, "nope:1", ("max_prob",), "saturation", "budget_oracle:0.05", "static:99"]),
      st.sampled_from([None, "max_prob:0.5", ("margin", 1.0)]), names=("rule", "threshold", "static")),
    *[P("decoding.generate_early_exit", p,
        (lambda p: lambda v: generate_early_exit(lm(), "Hello", max_new_tokens=2, **{p: v}))(p), NOT_BOOL, BOOL)
      for p in ("return_trace", "complete_cache", "stop_at_eos")],
    P("decoding.generate_early_exit", "lens", lambda v: generate_early_exit(lm(), "Hello", max_new_tokens=2, lens=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE)),
    P("decoding.generate_full", "backend", lambda v: generate_full(lm(), "Hello", 2, backend=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["driver", "hf"])),
    P("decoding.generate_full", "stop_at_eos", lambda v: generate_full(lm(), "Hello", 2, stop_at_eos=v), NOT_BOOL),
    P("decoding.generate_full", "max_new_tokens", lambda v: generate_full(lm(), "Hello", v), bad_int(1, CONTEXT)),
    P("decoding.generate_self_speculative", "early_exit_layer",
      lambda v: generate_self_speculative(lm(), "Hello", 2, early_exit_layer=v), bad_int(1, 5), st.integers(1, 5)),
    P("decoding.generate_self_speculative", "num_assistant_tokens",
      lambda v: generate_self_speculative(lm(), "Hello", 2, num_assistant_tokens=v), bad_int(1, None, True),
      st.sampled_from([None, 1, 3])),
    P("decoding.compare_decoding", "prompts",
      lambda v: dec_eval.compare_decoding(lm(), v, ["max_prob:0.5"], strategies=("propagate",),
                                          max_new_tokens=1, repeats=1, hf_baseline=False),
      st.sampled_from([None, 3, "a single prompt", [], [""], ["  "], [None], [[1.5]], [[10**9]], [b"x"]]),
      names=("prompt",)),
    *[P("decoding.compare_decoding", p, (lambda p: lambda v: dec_eval.compare_decoding(lm(), ["Hello"], **{
        "rules": ["max_prob:0.5"], "strategies": ("propagate",), "max_new_tokens": 1, "repeats": 1,
        "hf_baseline": False, p: v}))(p),
        bad, None, names) for p, bad, names in
      (("rules", st.sampled_from([3, "nope:1", [None]]), ("rule",)),
       ("strategies", st.one_of(UNKNOWN_NAME, st.sampled_from([[], 3, [None]])), ("strateg",)),
       ("max_new_tokens", bad_int(1, None), ("max_new_tokens",)), ("repeats", bad_int(1, None), ("repeats",)),
       ("stop_at_eos", NOT_BOOL, ("stop_at_eos",)), ("include_full", NOT_BOOL, ("include_full",)),
       ("lens", st.one_of(UNKNOWN_NAME, WRONG_TYPE), ("lens",)),
       ("answers", st.sampled_from([["a", "b"], 3, [[1.5]], [""]]), ("answer",)))],
    P("decoding.workload_prompts", "workload", lambda v: dec_eval.workload_prompts(lm(), v, 2),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.just("zoo-prose"), names=("workload",)),
    *[P("decoding.workload_prompts", p, (lambda p: lambda v: dec_eval.workload_prompts(lm(), "zoo-prose",
                                                                                      **{"n_prompts": 2, p: v}))(p),
        bad, good) for p, bad, good in
      (("n_prompts", bad_int(1, None, True), st.integers(1, 3)), ("prompt_tokens", bad_int(1, None), st.integers(1, 40)),
       ("max_new_tokens", bad_int(0, CONTEXT), st.integers(0, 20)), ("seed", bad_int(0, None), st.integers(0, 9)))],
    *[P("decoding.batched_skip_ratio", p, (lambda p: lambda v: dec_eval.batched_skip_ratio(
        **{"exit_layers": np.array([1, 2, 3, 6]), "n_layers": 6, "n_draws": 10, "batch_sizes": (1, 2), p: v}))(p),
        bad, good, names) for p, bad, good, names in
      (("exit_layers", st.sampled_from([None, "x", [1.5, 2], [7], [-1], []]), None, ("exit_layers", "exit layers")),
       ("n_layers", bad_int(6, None), st.integers(6, 50), ("n_layers", "exit layers")),
       ("n_draws", bad_int(1, None), st.integers(1, 20), ()), ("seed", bad_int(0, None), st.integers(0, 9), ()),
       ("ci", bad_real(0, 1, lo_open=True, hi_open=True), good_real(0.01, 0.99), ()),
       ("batch_sizes", st.sampled_from([[0], [1.5], ["a"], [None]]), st.sampled_from([[1], (1, 4)]), ()))],
    # ---- the tuned-lens trainer -----------------------------------------------------------------------
    *[P("lens.tuned.TunedLensSettings", p, (lambda p: lambda v: tuned.TunedLensSettings(**{p: v}))(p), bad, good)
      for p, bad, good in
      (("n_windows", bad_int(1, None), st.integers(1, 64)), ("context", bad_int(1, None), st.integers(1, 64)),
       ("steps", bad_int(1, None), st.integers(1, 64)), ("batch", bad_int(1, None), st.integers(1, 8)),
       ("seed", bad_int(0, None), st.integers(0, 9)), ("lr", bad_real(0, None, lo_open=True), good_real(1e-6, 1)))],
    P("lens.tuned.train_tuned_lens", "windows",
      lambda v: tuned.train_tuned_lens(lm(), v, tuned.TunedLensSettings(n_windows=2, context=4, steps=1, batch=1),
                                       progress=False),
      st.sampled_from([None, "x", [[1, 2]], torch.zeros(3, dtype=torch.long), torch.zeros((2, 0), dtype=torch.long),
                       torch.full((2, 4), 0.5), torch.full((2, 4), 10**6), torch.full((2, 4), -1)]),
      st.integers(0, 2047).map(lambda t: torch.full((2, 4), t))),
    P("lens.tuned.train_tuned_lens", "settings", lambda v: tuned.train_tuned_lens(lm(), torch.ones((2, 4), dtype=int),
                                                                                    v, progress=False),
      st.sampled_from([None, "x", {"steps": 1}, 3])),
    # ---- Readout.save / load / concat ----------------------------------------------------------------
    P("Readout.save", "path", lambda v: ro().save(v), st.sampled_from([None, 3, "", "   ", b"x", "/", 1.5]),
      names=("path",)),
    P("Readout.load", "path", lambda v: Readout.load(v),
      st.sampled_from([None, 3, "", b"x", "/no/such/readout", "/etc/hostname"]), names=("path", "readout")),
    P("Readout.concat", "parts", lambda v: Readout.concat(v), st.sampled_from([None, [], [3], "x", 3, [None]]),
      names=("part", "concatenate", "readout")),
    # ---- the workload registry -----------------------------------------------------------------------
    P("workloads.get_workload", "name", lambda v: workloads.get_workload(v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE), st.sampled_from(["zoo-prose", "zoo-task"]), names=("workload",)),
    *[P("workloads.get_workload", p, (lambda p: lambda v: workloads.get_workload("zoo-prose", **{p: v}))(p),
        bad, good) for p, bad, good in
      (("n_docs", bad_int(1, None, True), st.integers(1, 50)),
       ("max_chars", bad_int(1, None, True), st.integers(1, 500)),
       ("seed", bad_int(0, None), st.integers(0, 2**31)))],
    P("workloads.register_workload", "name", lambda v: workloads.register_workload(v, lambda: ["x"]),
      st.sampled_from([None, 3, "", " ", "a/b", "../x", "zoo-prose", "\x00"]), names=("workload", "name")),
    P("workloads.register_workload", "loader", lambda v: workloads.register_workload("sweep-tmp", v),
      st.sampled_from([None, 3, "x", ["a"]])),
    P("workloads.register_workload", "kind", lambda v: workloads.register_workload("sweep-tmp", list, kind=v),
      st.one_of(UNKNOWN_NAME, WRONG_TYPE)),
    P("workloads.register_workload", "overwrite",
      lambda v: workloads.register_workload("zoo-prose", list, overwrite=v), NOT_BOOL),
    P("workloads.workload_from_texts", "texts", lambda v: workloads.workload_from_texts(v, "sweep"),
      st.sampled_from([None, 3, "abc", [], [""], ["  \n"], [3], ["ok", None], [b"x"], ["bad \ud800 text"]]),
      names=("text", "document", "workload")),
    P("workloads.workload_from_pairs", "pairs", lambda v: workloads.workload_from_pairs(v, "sweep"),
      st.sampled_from([None, 3, "ab", [("a",)], [("q", "")], [("q", 3)], [(None, "a")], [{"prompt": "a"}]]),
      names=("pair", "answer", "document")),
    P("workloads.workload_from_text_file", "path", lambda v: workloads.workload_from_text_file(v),
      st.sampled_from([None, 3, "", b"x", "/no/such/file.txt", "/"]), names=("path", "file", "folder")),
    P("workloads.workload_from_text_file", "split_on",
      lambda v: workloads.workload_from_text_file(_text_file(), split_on=v), st.sampled_from([None, "", 3, b"\n"])),
    P("workloads.workload_from_text_file", "encoding",
      lambda v: workloads.workload_from_text_file(_text_file(), encoding=v),
      st.sampled_from([3, b"utf-8", "no-such-codec", ""]), names=("encoding",)),
]


@functools.lru_cache(maxsize=None)
def _text_file() -> Path:
    path = Path(tempfile.mkdtemp(prefix="sweep-")) / "notes.txt"
    path.write_text("first block\n\nsecond block\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_stray_workload():
    yield
    workloads.unregister_workload("sweep-tmp")


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: f"{p.entry}-{p.param}")
@FEW
@given(data=st.data())
def test_bad_values_are_refused_naming_the_parameter(p, data):
    value = data.draw(p.bad, label=p.param)
    err = refused(lambda: p.call(value), p.names or (p.param,), also=(OSError,))
    assert "Traceback" not in str(err)


GOOD = [p for p in PARAMS if p.good is not None]


@pytest.mark.parametrize("p", GOOD, ids=lambda p: f"{p.entry}-{p.param}")
@FEW
@given(data=st.data())
def test_good_values_are_accepted(p, data):
    value = data.draw(p.good, label=p.param)
    accepted(lambda: p.call(value))


def test_every_inventory_entry_is_swept():
    """docs/API.md's inventory: each function named there has at least one row in PARAMS (or a test below)."""
    swept = {p.entry for p in PARAMS} | {"check_last_layer", "readout-inputs", "generate_early_exit-prompt",
                                         "load_model-name_or_path"}
    for name in metrics.__all__:
        if callable(getattr(metrics, name)) and not isinstance(getattr(metrics, name), type):
            assert f"metrics.{name}" in swept, name
    for name in ("rule_fires", "top1_streak", "update_streak", "default_rules", "simulate", "evaluate", "tradeoff",
                 "max_skip_under_budget", "as_rule", "parse_rules", "budget_oracle_exits", "paired_loss",
                 "mcnemar_exact", "skip_tokens"):
        assert f"exits.{name}" in swept, name
    for name in ("generate_early_exit", "generate_full", "generate_self_speculative", "compare_decoding",
                 "workload_prompts", "batched_skip_ratio"):
        assert f"decoding.{name}" in swept, name
    for name in ("get_workload", "register_workload", "workload_from_texts", "workload_from_pairs",
                 "workload_from_text_file"):
        assert f"workloads.{name}" in swept, name


# ---- text inputs: empty, whitespace-only, odd unicode, far past the context ----------------------------

BLANK = st.text(st.sampled_from(" \t\n\r\u00a0\u2003\u3000"), max_size=6)
ODD = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda s: s.strip())
ODD_CHOICES = st.sampled_from(["🙂" * 40, "e\u0301" * 30, "\u202eabc\u202c", "\u200b\u200bx", "a\x00b",
                               "\ufeffBOM", "\U0010ffff", "日本語のテキスト", "ﷺ" * 10, "\r\n\r\n"])


def _valid_readout(r, n_docs):
    assert isinstance(r, Readout) and r.n_docs == n_docs and r.n_layers == lm().n_layers
    assert 0 < r.n_tokens <= CONTEXT * n_docs
    for name in ("max_prob", "entropy", "kl_to_final", "logit_cos"):
        assert np.isfinite(r[name]).all(), name
    assert ((r["top1"] >= 0) & (r["top1"] < lm().vocab_size)).all()


@FEW
@given(text=BLANK)
def test_blank_documents_are_refused_everywhere(text):
    refused(lambda: eeutils.readout(lm(), text, progress=False), ("document", "input"))
    refused(lambda: eeutils.readout(lm(), ["fine", text], progress=False), ("document 1",))
    refused(lambda: generate_early_exit(lm(), text, max_new_tokens=2), ("prompt",))
    refused(lambda: generate_full(lm(), text, 2), ("prompt",))
    refused(lambda: generate_self_speculative(lm(), text, 2), ("prompt",))
    refused(lambda: workloads.workload_from_texts([text], "blank"), ("document 0", "empty"))
    refused(lambda: dec_eval.compare_decoding(lm(), ["ok", text], ["max_prob:0.5"], strategies=("propagate",),
                                              max_new_tokens=1, repeats=1, hf_baseline=False), ("prompts[1]",))


def test_the_issue_case_generate_early_exit_of_an_empty_prompt():
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_early_exit(lm(), "")


@FEW
@given(text=st.one_of(ODD, ODD_CHOICES))
def test_odd_unicode_gives_a_valid_readout_and_generation(text):
    r = clear_or_valid(lambda: eeutils.readout(lm(), text, progress=False), ("document",),
                       valid=lambda r: _valid_readout(r, 1))
    if r is None:  # a text the tokenizer turns into no tokens is the only refusal allowed
        return
    g = clear_or_valid(lambda: generate_early_exit(lm(), text, "max_prob:0.5", max_new_tokens=2), ("context",))
    if g is not None:  # (a text of more than 127 tokens is refused: it leaves no room to generate)
        assert len(g.tokens) <= 2 and all(1 <= e <= lm().n_layers for e in g.exit_layers)
    else:
        assert r.n_tokens >= CONTEXT
    wl = workloads.workload_from_texts([text], "odd")
    assert wl.docs[0].text == text


@FEW
@given(repeat=st.integers(CONTEXT, 40 * CONTEXT), word=st.sampled_from(["word ", "🙂", "a", "The cat. "]))
def test_documents_far_past_the_context(repeat, word):
    text = word * repeat
    with pytest.warns(UserWarning, match="truncated"):
        r = eeutils.readout(lm(), [text, "short"], progress=False)
    _valid_readout(r, 2)
    assert (r.position < CONTEXT).all() and r.meta["max_length"] == CONTEXT
    refused(lambda: eeutils.readout(lm(), text, progress=False, on_overflow="error"), ("max_length",))
    refused(lambda: generate_early_exit(lm(), text, max_new_tokens=2), ("context",))
    refused(lambda: eeutils.readout(lm(), [list(range(5)) * repeat], progress=False, on_overflow="error"),
            ("max_length",))


@FEW
@given(ids=st.one_of(st.lists(st.integers(-5, 3000), min_size=1, max_size=8), st.lists(
    st.lists(st.integers(0, 2047), min_size=2, max_size=2), min_size=1, max_size=3)), as_float=st.booleans())
def test_check_last_layer_takes_token_ids_or_names_them(ids, as_float):
    flat = np.asarray(ids).reshape(-1)
    given_ids = [[float(t) for t in row] if isinstance(row, list) else float(row) for row in ids] if as_float else ids
    out = clear_or_valid(lambda: eeutils.check_last_layer(lm(), given_ids), ("input_ids",))
    if as_float:
        assert out is None  # floats are never taken as token ids
    elif ((flat < 0) | (flat >= lm().vocab_size)).any():
        assert out is None
    else:
        assert out is not None and 0 <= out < 1e-3


def test_the_issue_case_check_last_layer_with_an_out_of_range_id():
    with pytest.raises(ValueError, match=r"input_ids: .*token id 5000 is outside the vocabulary \[0, 2048\)"):
        eeutils.check_last_layer(lm(), [[1, 2, 5000]])


@FEW
@given(ids=st.lists(st.one_of(st.integers(-3, 2050), st.floats(0, 10), st.booleans()), min_size=0, max_size=5))
def test_prompt_ids_are_integers_in_the_vocabulary(ids):
    ok = ids and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < lm().vocab_size for t in ids)
    out = clear_or_valid(lambda: generate_early_exit(lm(), ids, max_new_tokens=1), ("prompt",))
    assert (out is not None) == bool(ok)


# ---- unknown model names --------------------------------------------------------------------------------

MODEL_NAMES = st.one_of(
    st.builds(lambda s: f"zoo/no-such-{s}", st.text("abc123-", min_size=1, max_size=6)),
    st.builds(lambda s: f"real/no-such-{s}", st.text("abc123-", min_size=1, max_size=6)),
    st.builds(lambda s: f"/no/such/folder-{s}", st.text("abc123", min_size=1, max_size=6)),
    st.builds(lambda s: f"no-such-org/model-{s}", st.text("abc123", min_size=1, max_size=6)),
    st.sampled_from(["zoo/../dense-small", "zoo/", "real/", "zoo/dense-small/../../x"]))


@FEW
@given(name=MODEL_NAMES)
def test_unknown_model_names_are_named(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tail = name.rstrip("/").split("/")[-1] or name
    refused(lambda: eeutils.load_model(name), (tail, "name_or_path", "unknown zoo model", "unknown real model"),
            also=(RuntimeError,))


@pytest.mark.parametrize("name", [None, 3, b"zoo/dense-small", "", "   ", ["zoo/dense-small"]])
def test_load_model_names_of_the_wrong_type(name):
    refused(lambda: eeutils.load_model(name), ("name_or_path",))


def test_the_issue_case_cuda_on_a_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"device='cuda': CUDA is not available on this machine; available here: cpu"):
        eeutils.load_model("zoo/dense-small", device="cuda")


# ---- files: EEUTILS_CACHE, a full disk, a read-only folder -------------------------------------------------

def test_eeutils_cache_pointing_at_a_file_is_named(tmp_path, monkeypatch):
    from eeutils.core.env import eeutils_cache_dir

    f = tmp_path / "cache-file"
    f.write_text("not a folder")
    for value in (f, f / "sub"):
        monkeypatch.setenv("EEUTILS_CACHE", str(value))
        with pytest.raises(ValueError, match=rf"EEUTILS_CACHE={value} .*{f.name} is a file, not a folder"):
            eeutils_cache_dir()
        with pytest.raises(ValueError, match="EEUTILS_CACHE"):
            tuned.tuned_lens(lm(), tuned.TunedLensSettings(n_windows=2, context=8, steps=1, batch=1), progress=False)
    monkeypatch.setenv("EEUTILS_CACHE", str(tmp_path / "fresh"))
    assert eeutils_cache_dir() == tmp_path / "fresh"


def _read_only(folder: Path):
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root: chmod does not stop writes
        folder.chmod(0o755)
        pytest.skip("running as root: a read-only folder is still writable")


def test_readout_save_into_a_read_only_folder_keeps_the_old_file(tmp_path):
    old = ro().select_docs([0]).save(tmp_path / "r")
    before = old.read_bytes()
    _read_only(tmp_path)
    try:
        with pytest.raises(OSError, match=r"cannot save the readout to .*r\.npz"):
            ro().save(tmp_path / "r")
    finally:
        tmp_path.chmod(0o755)
    assert old.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs at tmp_path/disk (root only)."""
    with small_tmpfs(tmp_path, "256k") as disk:
        yield disk


def test_readout_save_on_a_full_disk_keeps_the_old_file_and_no_temp(small_disk):
    small = ro().select_docs([0])
    old = small.save(small_disk / "r")
    before = old.read_bytes()
    big = Readout.concat([ro()] * 40)
    with open(small_disk / "filler", "wb", buffering=0) as f:  # fill what is left
        try:
            f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    with pytest.raises(OSError, match=r"cannot save the readout to .*r\.npz \(No space left on device\)"):
        big.save(small_disk / "r")
    assert old.read_bytes() == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "r.npz"]
    (small_disk / "filler").unlink()
    _same = Readout.load(small_disk / "r")
    assert _same.n_tokens == small.n_tokens


@pytest.mark.parametrize("damage", ["truncated", "not-json", "emptied"])
def test_a_damaged_tokenizer_in_a_model_folder_is_named(tmp_path, damage):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(Path(eeutils.zoo.resolve("dense-small")), folder)
    tok = folder / "tokenizer.json"
    raw = tok.read_bytes()
    tok.write_bytes({"truncated": raw[: len(raw) // 2], "not-json": b"<html>not a tokenizer</html>",
                     "emptied": b""}[damage])
    err = refused(lambda: eeutils.load_model(str(folder)), ("tokenizer.json",), also=(RuntimeError,))
    assert isinstance(err, eeutils.ModelLoadError) and str(folder) in str(err) and "tokenizer=False" in str(err)
    assert eeutils.load_model(str(folder), tokenizer=False).tokenizer is None  # the weights alone still load
