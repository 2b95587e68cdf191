"""What one exit check costs, per lens, in block-equivalents of weight multiply-adds per token.

The tuned lens' extra term is `checks.LENS_EXTRA_MACS`, which the decoder also counts on every tuned check: a
check under the logit lens reads the final norm and the head
(d x vocab multiply-adds); under the tuned lens the layer's affine translator runs first, one more d x d
product (+ d for its bias). Divided by one block's active multiply-adds (`evaluation.cost_profile`), as the
realised-decoding cost model counts everything. Norms, softmax and per-call overheads are not counted.
"""
from __future__ import annotations

import pandas as pd

from .checks import LENS_EXTRA_MACS
from .evaluation import cost_profile
from .inputs import as_loaded


def check_cost_blocks(model, lens: str = "logit") -> float:
    """Cost of one exit check at one layer for one token, in blocks: (head [+ translator]) / block."""
    if lens not in LENS_EXTRA_MACS:
        raise ValueError(f"lens must be one of {tuple(LENS_EXTRA_MACS)}, got {lens!r}")
    lm = as_loaded(model)
    p = cost_profile(lm)
    d = int(lm.describe()["d_model"])
    return (p["head_macs"] + LENS_EXTRA_MACS[lens](d)) / p["block_macs"]


def check_cost_table(models, lenses=("logit", "tuned")) -> pd.DataFrame:
    """One row per model x lens: per-check cost in blocks and the tuned lens' extra share."""
    rows = []
    for m in models:
        lm = as_loaded(m)
        base = check_cost_blocks(lm, "logit")
        for lens in lenses:
            c = check_cost_blocks(lm, lens)
            rows.append({"model": lm.name, "lens": lens, "check_cost_blocks": c, "extra_vs_logit": c / base - 1.0,
                         "d_model": int(lm.describe()["d_model"]), "vocab": lm.vocab_size})
    return pd.DataFrame(rows)
