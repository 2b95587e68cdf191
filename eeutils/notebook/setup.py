"""The notebooks' shared first cell, as one call::

    import eeutils
    from eeutils.notebook import setup
    setup(globals())

It reads the parameters cell's values from the notebook's namespace (SMOKE, N_DOCS, N_BOOT, MAX_TOKENS,
OUT_DIR, DTYPE, DEVICE, where defined; N_DOCS, N_BOOT, MAX_TOKENS left at None take the analysis protocol's
values, data/protocol.yaml), applies the smoke limits, and puts into the namespace what every notebook uses:
np, pd, plt, Markdown, display, the modules ex (experiments), metrics, exits, plotting, findings, claims,
and LOAD (the cached-readout options) and RESULTS (the folder for tidy tables).
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import exits, metrics
from ..analysis.protocol import load_protocol
from ..arch.loading import quiet
import eeutils.notebook.claims as claims
import eeutils.notebook.experiments as experiments
import eeutils.notebook.findings as findings
import eeutils.notebook.plotting as plotting

SMOKE_LIMITS = {"N_DOCS": 6, "N_BOOT": 20}  # a quick pass: fewer documents and bootstrap draws, same code path
PROTOCOL_PARAMETERS = {"N_DOCS": "n_docs", "N_BOOT": "n_boot", "MAX_TOKENS": "max_tokens"}


def setup(namespace: dict, smoke_limits: dict | None = None) -> SimpleNamespace:
    """Prepare a notebook: quiet logging, plot style, smoke limits, LOAD and RESULTS; returns what it added."""
    from IPython.display import Markdown, display

    warnings.filterwarnings("ignore", message=".*truncated.*")
    quiet()  # transformers' info/warning chatter (kernel fall-backs, progress bars) off
    plotting.set_style()
    protocol = load_protocol().defaults
    for name, key in PROTOCOL_PARAMETERS.items():  # a parameter left at None takes the protocol's value
        if name in namespace and namespace[name] is None:
            namespace[name] = protocol[key]
    if namespace.get("SMOKE"):
        for name, limit in (SMOKE_LIMITS if smoke_limits is None else smoke_limits).items():
            if namespace.get(name) is not None:
                namespace[name] = min(namespace[name], limit)
    out_dir = namespace.get("OUT_DIR", "../results")
    load = {"n_docs": namespace.get("N_DOCS")}
    if "MAX_TOKENS" in namespace:
        load["max_tokens"] = namespace["MAX_TOKENS"]
    load.update(cache_dir=out_dir, dtype=namespace.get("DTYPE", "float32"), device=namespace.get("DEVICE"))
    added = {"np": np, "pd": pd, "plt": plt, "Markdown": Markdown, "display": display, "ex": experiments,
                 "metrics": metrics, "exits": exits, "plotting": plotting, "findings": findings, "claims": claims, "LOAD": load,
                 "RESULTS": experiments.results_dir(out_dir)}
    namespace.update(added)
    return SimpleNamespace(**added)
