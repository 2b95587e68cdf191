"""The notebooks' first cell: settle the parameters, quiet the libraries, and say where results go.

Every notebook starts with imports a reader can follow, then one call::

    from eeutils.notebook import start
    nb = start(smoke=SMOKE, out_dir=OUT_DIR, n_docs=N_DOCS, n_boot=N_BOOT, max_tokens=MAX_TOKENS,
               dtype=DTYPE, device=DEVICE)
    N_DOCS, N_BOOT, MAX_TOKENS, LOAD, RESULTS = nb.n_docs, nb.n_boot, nb.max_tokens, nb.load, nb.results

`start` adds nothing to the notebook's namespace: what it settles comes back as a `NotebookRun`. A parameter
left at None takes the analysis protocol's value (data/protocol.yaml); SMOKE caps documents and bootstrap
draws (a quick pass through the same code path).
"""
from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..analysis.protocol import load_protocol
from ..arch.loading import quiet
from .experiments import results_dir
from .plotting import set_style

SMOKE_LIMITS = {"n_docs": 6, "n_boot": 20}  # a quick pass: fewer documents and bootstrap draws, same code path
UNSET = "unset"  # a parameter the notebook does not have: no protocol value, and readouts use their own default


@dataclass(frozen=True)
class NotebookRun:
    """What a notebook's first cell settled: the effective parameters and where its outputs go."""

    n_docs: int | None
    n_boot: int | None
    max_tokens: int | None
    out_dir: str
    results: Path  # the folder for the notebook's tidy tables (OUT_DIR/results)
    load: dict  # keyword arguments for cached readouts: n_docs, max_tokens, cache_dir, dtype, device
    smoke: bool


def _settle(name: str, value, smoke: bool):
    """A parameter left at None takes the protocol's value; SMOKE caps it; UNSET stays None."""
    if value == UNSET:
        return None
    if value is None:
        value = load_protocol().defaults.get(name)
    if smoke and value is not None and name in SMOKE_LIMITS:
        value = min(value, SMOKE_LIMITS[name])
    return value


def start(*, smoke: bool = False, out_dir: str = "../results", n_docs: int | None | str = UNSET,
          n_boot: int | None | str = UNSET, max_tokens: int | None | str = UNSET, dtype: str = "float32",
          device: str | None = None) -> NotebookRun:
    """Prepare a notebook: quiet library chatter, the plot style, settled parameters, LOAD and RESULTS."""
    warnings.filterwarnings("ignore", message=".*truncated.*")
    quiet()  # transformers' info/warning chatter (kernel fall-backs, progress bars) off
    set_style()
    gc.collect()
    gc.freeze()  # the imported libraries leave the collector's scans: each later full collection is ~1 s cheaper
    n_docs, n_boot = _settle("n_docs", n_docs, smoke), _settle("n_boot", n_boot, smoke)
    load = {"n_docs": n_docs}
    if max_tokens != UNSET:
        load["max_tokens"] = max_tokens = _settle("max_tokens", max_tokens, smoke)
    else:
        max_tokens = None
    load.update(cache_dir=out_dir, dtype=dtype, device=device)
    return NotebookRun(n_docs, n_boot, max_tokens, out_dir, results_dir(out_dir), load, bool(smoke))
