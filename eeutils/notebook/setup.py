"""The notebooks' first cell: settle the parameters, quiet the libraries, and say where results go.

Every notebook starts with imports a reader can follow, then one call::

    from eeutils.notebook import start
    nb = start(smoke=SMOKE, out_dir=OUT_DIR, n_docs=N_DOCS, n_boot=N_BOOT, max_tokens=MAX_TOKENS,
               dtype=DTYPE, device=DEVICE)
    N_DOCS, N_BOOT, MAX_TOKENS, LOAD, RESULTS = nb.n_docs, nb.n_boot, nb.max_tokens, nb.load, nb.results

`start` adds nothing to the notebook's namespace: what it settles comes back as a `NotebookRun`. A parameter
left at None takes the analysis protocol's value (data/protocol.yaml); SMOKE caps documents and bootstrap
draws (a quick pass through the same code path).

`start` also checks the parameters before any work: SMOKE a bool, numbers positive integers, DTYPE and DEVICE
ones this machine has, and the notebook's model and workload parameters passed by name
(``models={"MODEL": MODEL}, workloads={"WORKLOAD": WORKLOAD}``: a zoo, real, local or cached hub model; a
registered workload). A bad one fails this first cell with a ValueError naming the parameter, what is wrong and
what to set it to (``papermill -p MODEL nope`` fails here, not deep inside a later cell).
"""
from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..analysis.protocol import load_protocol
from ..arch.loading import parse_dtype, quiet
from ..arch.names import list_zoo
from ..arch.real import list_real
from ..bench.config import BenchmarkError
from ..bench.validation import check_model
from ..core.checks import check_device
from ..workloads.registry import workload_names
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


def _bad(param: str, value, why: str) -> ValueError:
    return ValueError(f"notebook parameter {param} = {value!r}: {why}. Change {param} in the parameters cell "
                      f"(with papermill: -p {param} <value>) and run again")


def _names(value) -> list:
    """The names a model or workload parameter holds: one str, a list of them, or None (the protocol's)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]


def check_parameters(params: dict, models: dict, workloads: dict, revision=None) -> None:
    """ValueError (`_bad`) for the first notebook parameter that cannot work: `params` maps SMOKE, N_DOCS, N_BOOT,
    MAX_TOKENS, DTYPE and DEVICE to their values; `models` / `workloads` map parameter names to names."""
    if not isinstance(params["SMOKE"], bool):
        raise _bad("SMOKE", params["SMOKE"], "it must be True or False")
    for name, low in (("N_DOCS", 1), ("N_BOOT", 0), ("MAX_TOKENS", 1)):
        v = params[name]
        if v not in (None, UNSET) and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise _bad(name, v, f"it must be an integer >= {low}, or None for the protocol's value")
    for name, check in (("DTYPE", parse_dtype), ("DEVICE", lambda d: check_device("DEVICE", d))):
        try:
            check(params[name])
        except (TypeError, ValueError) as err:
            raise _bad(name, params[name], str(err)) from None
    known = workload_names()
    for param, value in (workloads or {}).items():
        for w in _names(value):
            if not isinstance(w, str) or w not in known:
                raise _bad(param, value, f"{w!r} is not a registered workload; registered: {', '.join(known)}")
    for i, (param, value) in enumerate((models or {}).items()):
        for m in _names(value):
            try:
                if not isinstance(m, str) or not m.strip():
                    raise BenchmarkError("a model is named by a non-empty string")
                check_model(m, revision if i == 0 else None)
            except BenchmarkError as err:
                hint = "" if str(m).startswith(("zoo/", "real/")) else (
                    f"; the kit's own models are zoo/<name> ({', '.join(list_zoo())}) and real/<name> "
                    f"({', '.join(list_real())})")
                raise _bad(param, value, f"{err}{hint}") from None


def start(*, smoke: bool = False, out_dir: str = "../results", n_docs: int | None | str = UNSET,
          n_boot: int | None | str = UNSET, max_tokens: int | None | str = UNSET, dtype: str = "float32",
          device: str | None = None, **names) -> NotebookRun:
    """Prepare a notebook: check its parameters (`check_parameters`; `names`: models= / workloads=, the notebook's
    model and workload parameters by name, and revision=, the first model's), quiet library chatter, the plot style,
    settled parameters, LOAD and RESULTS."""
    unknown = set(names) - {"models", "workloads", "revision"}
    if unknown:
        raise TypeError(f"start() got unknown argument(s) {sorted(unknown)}; it also takes models=, workloads=, "
                        "revision=")
    check_parameters(dict(SMOKE=smoke, N_DOCS=n_docs, N_BOOT=n_boot, MAX_TOKENS=max_tokens, DTYPE=dtype,
                          DEVICE=device), names.get("models"), names.get("workloads"), names.get("revision"))
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
