"""Checks for notebook 12 (training for early exit): the recipe against the seed-noise floor, the layers an exit saves."""
from __future__ import annotations

import numpy as np

from ..notebook.exit_training import recipe_effect, seed_noise_floor
from .core import Hint, exercise, expect_choice

CALLS = ("raises", "lowers", "within seed noise")


def recipe_call(table, layerskip, plain, similarity) -> dict:
    """exit_training.recipe_effect on the EAS table's normalised scores of one similarity (no bootstrap)."""
    t = table[table.similarity == similarity].set_index("model").normalised
    scores = {"layerskip": [float(t[m]) for m in layerskip], "plain": [float(t[m]) for m in plain]}
    return recipe_effect(scores["layerskip"], scores["plain"], seed_noise_floor(scores)["floor"])


@exercise("12.layerskip_call", "does the LayerSkip recipe raise EAS beyond the seed-noise floor?", kind="predict")
def layerskip_call(answer, table, layerskip, plain, similarity):
    """answer: "raises", "lowers" or "within seed noise", read from the per-model EAS / ceiling table."""
    expect_choice(answer, CALLS, "your call")
    c = recipe_call(table, layerskip, plain, similarity)
    if answer == c["call"]:
        return (f"{similarity}: effect {c['effect']:+.4f}, seed-noise floor {c['floor']:.4f} "
                f"(effect / floor {c['snr']:+.2f}) -> {c['call']}.")
    if answer != "within seed noise" and not c["beyond_floor"]:
        raise Hint("compare the gap between the two recipes' seed means with the largest gap between two seeds "
                   "of ONE recipe: a recipe is credited only with a gap larger than that floor.")
    if answer != "within seed noise" and not c["consistent"]:
        raise Hint("the means differ by more than the floor, but check every LayerSkip-minus-plain seed pair: "
                   "they must all have the same sign.")
    if answer == "within seed noise":
        raise Hint("the gap between the recipes' seed means exceeds the largest within-recipe seed gap, and "
                   "every seed pair agrees on its sign.")
    raise Hint("look at the sign: the effect is mean(LayerSkip seeds) - mean(plain seeds).")


@exercise("12.layers_saved", "the share of layers an early-exit decoder saved", kind="implement")
def layers_saved(answer, kit):
    """answer(kit) -> per row, the share of the model's layers not run: kit is the decoding table (one row a rule)."""
    got = np.asarray(answer(kit.copy()), dtype=float)
    want = kit["skip_ratio"].to_numpy(dtype=float)  # mean over tokens of (L - exit layer) / L
    if got.shape != want.shape:
        raise Hint(f"return one value per row of the table, shape {want.shape}; got shape {got.shape}.")
    if np.allclose(got, want):
        speed = kit["speed_ratio"].to_numpy(dtype=float)
        with np.errstate(divide="ignore"):
            ideal = 1.0 / (1.0 - want)  # the speed-up if time were proportional to the layers run
        return (f"in {int((speed < ideal).sum())} of {len(want)} rows the measured speed-up is below 1 / (1 - saved), "
                "the speed-up if time were proportional to the layers run (exit checks and the driver are what "
                "that leaves out).")
    if np.allclose(got, 1.0 - want):
        raise Hint("that is the share of layers RUN; the question asks for the share saved.")
    if np.allclose(got, 1.0 - kit["layers_per_token"].to_numpy(dtype=float) / kit["n_layers"].to_numpy(dtype=float)):
        raise Hint("layers_per_token counts every block computed, deferred work included; the saving of an exit "
                   "is measured by where it stops: mean_exit_layer.")
    raise Hint("an exit at layer l of an L-layer model leaves L - l layers unrun: a share (L - l) / L, averaged.")
