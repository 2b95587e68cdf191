"""Matched-loss comparisons: the revision of one side whose validation loss (from the model cards) is closest
to the other side's final loss (the protocol's rule, docs/PROTOCOL.md)."""
from __future__ import annotations

import numpy as np

from ..core.zoo_store import ZooError, load_card
from ..core.spec import parse_model_spec

__all__ = ["closest_revision", "final_loss", "revision_losses", "unigram_loss"]


def revision_losses(name: str) -> dict[str, float]:
    """{revision: card validation loss} of a zoo model: its checkpoints and its final revision."""
    card = load_card(name)
    out = {c["revision"]: float(c["val_loss"]) for c in card.get("checkpoints", []) if "val_loss" in c}
    out[card.get("final_revision") or "main"] = float(card["val_loss"])
    return out


def final_loss(spec) -> float:
    """Card validation loss of a spec's revision (the final one when it names none)."""
    name, rev = parse_model_spec(spec)
    card = load_card(name)
    if rev in (None, "main", card.get("final_revision")):
        return float(card["val_loss"])
    losses = revision_losses(name)
    if rev not in losses:
        raise ZooError(f"{name} has no card loss for revision {rev!r}; have {sorted(losses)}")
    return losses[rev]


def unigram_loss(name: str) -> float:
    """The card's unigram validation loss (a token-frequency-only predictor on the same windows)."""
    return float(load_card(name)["unigram_val_loss"])


def closest_revision(candidates: dict[str, list[float]], target: float) -> tuple[str, float, float]:
    """(revision, its mean loss over seeds, |gap| to target) minimising the gap; ties go to the earlier entry.

    candidates: {revision: [loss of each seed that has it]}."""
    if not candidates:
        raise ValueError("no candidate revisions to match")
    if not np.isfinite(target):
        raise ValueError(f"target loss must be finite, got {target!r}")
    best = min(candidates, key=lambda r: abs(float(np.mean(candidates[r])) - target))
    mean = float(np.mean(candidates[best]))
    return best, mean, abs(mean - target)
