"""Checks for notebook 2 (exit rules): an entropy exit rule written by hand, which way a threshold moves
the trade-off, and the max-prob threshold a loss budget allows. References: `eeutils.exits` (simulate,
evaluate, tradeoff, max_skip_under_budget)."""
from __future__ import annotations

import numpy as np

from ..analysis.exits import evaluate, max_skip_under_budget, simulate, tradeoff
from ..analysis.rules import ExitRule
from .core import Hint, as_number, exercise, expect_choice

DIRECTIONS = ("higher", "lower", "same")


def _entropy_thresholds(entropy: np.ndarray) -> list[float]:
    """Thresholds that make the rule fire early, late and never for some tokens of this readout."""
    inner = entropy[:, 1:-1]
    return [float(q) for q in np.quantile(inner, (0.1, 0.3, 0.5, 0.8))] + [0.0]


def _diagnose_exits(got: np.ndarray, entropy: np.ndarray, threshold: float) -> None:
    """Name the typical mistake in exit layers that differ from the rule's (raises Hint)."""
    n, n_lay = entropy.shape
    L = n_lay - 1
    if (got == 0).any():
        raise Hint("some tokens exit at layer 0: the embeddings never exit (no block has run yet).")
    never = ~(entropy[:, 1:L] <= threshold).any(axis=1)
    at_exit = entropy[np.arange(n), got]
    if (~never & (got < L) & (at_exit > threshold)).any():
        raise Hint("some tokens exit where the entropy is above the threshold: low entropy means confident, so "
                   "exit where entropy <= threshold.")
    if never.any() and (got[never] != L).any():
        raise Hint("a token whose rule never fires must run every block: its exit layer is L, the last one.")
    raise Hint("some tokens exit later than they could: a token stops at the FIRST layer where the rule holds.")


@exercise("02.entropy_rule", "an entropy exit rule: exit layer per token")
def entropy_rule(answer, readout):
    """answer(entropy [n, L+1], threshold) -> exit layer per token, as exits.simulate(ExitRule("entropy", t))."""
    entropy = np.asarray(readout["entropy"], dtype=np.float64)
    for t in _entropy_thresholds(entropy):
        got = np.asarray(answer(readout["entropy"], t))
        if got.shape != (readout.n_tokens,):
            raise Hint(f"return one exit layer per token: shape ({readout.n_tokens},), got {got.shape}.")
        want = simulate(readout, ExitRule("entropy", t))
        if not np.array_equal(got, want):
            _diagnose_exits(got.astype(np.int64), entropy, t)
    return "the same exit layers as exits.simulate with ExitRule('entropy', t), at every threshold tried."


@exercise("02.threshold_direction", "predict: lower the entropy threshold", kind="predict")
def threshold_direction(answer, readout, high: float = 2.0, low: float = 0.5):
    """answer: {"skip_ratio": d, "agreement": d}, d in higher/lower/same: what lowering the entropy threshold
    from `high` to `low` nats does to each."""
    if not isinstance(answer, dict) or set(answer) != {"skip_ratio", "agreement"}:
        raise Hint('answer with a dict: {"skip_ratio": "higher" | "lower" | "same", "agreement": ...}.')
    before, after = (evaluate(readout, simulate(readout, ExitRule("entropy", t))) for t in (high, low))
    notes = []
    for name in ("skip_ratio", "agreement"):
        expect_choice(answer[name], DIRECTIONS, f"your {name} prediction")
        diff = after[name] - before[name]
        truth = "same" if abs(diff) < 1e-12 else ("higher" if diff > 0 else "lower")
        if answer[name] != truth:
            raise Hint(f"{name}: think about which tokens the stricter threshold lets exit, and at which layers.")
        notes.append(f"{name} {before[name]:.1%} -> {after[name]:.1%}")
    return "a lower entropy threshold is a stricter rule: " + ", ".join(notes) + "."


@exercise("02.budget_threshold", "the lowest max-prob threshold within an agreement budget", kind="explore")
def budget_threshold(answer, readout, thresholds, budget: float = 0.05):
    """answer: the max_prob threshold (one of `thresholds`) with the largest skip ratio whose agreement loss
    (1 - agreement) is at most `budget`."""
    table = tradeoff(readout, rules=[("max_prob", t) for t in thresholds])
    best = max_skip_under_budget(table, budget=budget, metric="agreement").iloc[0]
    got = as_number(answer, "answer with one threshold, a number from the grid.")
    if not any(np.isclose(got, t) for t in thresholds):
        raise Hint("pick one of the thresholds in the grid you were given.")
    row = table[np.isclose(table.threshold, got)].iloc[0]
    if 1 - row.agreement > budget + 1e-12:
        raise Hint("at that threshold more predictions change than the budget allows.")
    if row.skip_ratio < best.skip_ratio - 1e-12:
        raise Hint("within budget, but a lower threshold also stays within it and skips more layers.")
    return f"max_prob >= {got:g} skips {row.skip_ratio:.1%} of layers at {row.agreement:.1%} agreement."
