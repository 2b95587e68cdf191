"""Benchmark settings, cells, errors and names (the runner's vocabulary)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

from .. import _version
from ..core.spec import ModelSpecError, parse_model_spec

DEFAULT_SIMILARITIES = ("logit_cos", "top1", "topk_overlap", "kl")
EXECUTORS = ("local", "ray")
META_COLUMNS = ("model", "revision", "family", "n_layers", "params_total", "params_active", "workload",
                "workload_kind", "kit_version", "timestamp", "bench_config", "weights_digest", "row_type")


class BenchmarkError(ValueError):
    """Bad benchmark arguments, found before any cell runs."""


class CellFailed(RuntimeError):
    """A cell raised; finished cells are kept. The message says whether a rerun resumes or the cause
    (an unloadable model, bad arguments) must be fixed first."""

    def __init__(self, message: str, cells=()):
        super().__init__(message)
        self.cells = list(cells)


def kit_version() -> str:
    return _version.__version__


# --------------------------------------------------------------------------------------------------
# settings and cells

@dataclass(frozen=True)
class BenchConfig:
    """Settings shared by every cell. `fingerprint()` digests those that change results.

    budget: relative accuracy loss allowed for the max-skip rows, in [0, 1). alpha: EAS weight in [0, 1].
    similarities: EAS similarity kinds, one EAS row each. rules: exit rules for `exits.tradeoff` (None: its
    defaults). n_docs / max_chars / seed: deterministic workload subset (`get_workload`), the same for every
    model. max_tokens: tokens per document (truncated; capped at the model's context). n_boot: bootstrap
    replicates for the EAS interval (0: none). k, batch_size, dtype, device: readout and loading options.
    out_dir: the run's folder (`run_benchmark` sets it). progress: progress bars. save_readouts: keep each
    cell's readout in out_dir/readouts.
    """

    budget: float = 0.05
    alpha: float = 0.5
    similarities: tuple = DEFAULT_SIMILARITIES
    rules: Any = None
    n_docs: int | None = None
    max_chars: int | None = None
    max_tokens: int | None = 512
    n_boot: int = 200
    seed: int = 0
    k: int = 5
    batch_size: int = 8
    dtype: str | None = "float32"
    device: str | None = None
    out_dir: str = ""
    progress: bool = True
    save_readouts: bool = True

    # bump when the rows a cell computes change (2: budget oracle, answer-token skip, paired budget test),
    # so a folder of older cells is refused rather than mixed with new ones
    ROWS_VERSION = 2
    RESULT_FIELDS = ("budget", "alpha", "similarities", "rules", "n_docs", "max_chars", "max_tokens", "n_boot",
                     "seed", "k", "dtype")

    def describe(self) -> dict:
        out = {}
        for name in self.RESULT_FIELDS:
            v = getattr(self, name)
            out[name] = list(v) if isinstance(v, tuple) else (v if v is None or isinstance(v, (int, float, str))
                                                              else _stable_repr(v))
        out["rows_version"] = self.ROWS_VERSION
        return out

    def fingerprint(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunOptions:
    """How a run executes, apart from what its cells compute (none of these enter the fingerprint).

    executor: "local" or "ray". merge: write results.parquet/csv and manifest.json at the end (False for one
    job of many sharing a folder). compute_cell(cell, workload, config) -> DataFrame replaces the readout +
    metrics pipeline (tests, custom metrics). check_models: validate model names up front (None: only with
    the default pipeline). ray_address, ray_options: the Ray cluster and the options of each cell task.
    """

    executor: str = "local"
    merge: bool = True
    compute_cell: Callable | None = None
    check_models: bool | None = None
    ray_address: str | None = None
    ray_options: dict | None = None

    @property
    def default_pipeline(self) -> bool:
        return self.compute_cell is None


def split_settings(config: BenchConfig | None, options: RunOptions | None,
                   settings: dict) -> tuple[BenchConfig, RunOptions]:
    """`config` and `options` (None: defaults) with the keyword `settings` put in their fields, each to the
    dataclass that has it; a keyword neither has is a TypeError naming it (and the settings there are)."""
    for value, kind in ((config, BenchConfig), (options, RunOptions)):
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"expected a {kind.__name__} or None, got {type(value).__name__}")
    config_keys = {f.name for f in fields(BenchConfig)} - {"out_dir"}
    option_keys = {f.name for f in fields(RunOptions)}
    unknown = sorted(set(settings) - config_keys - option_keys)
    if unknown:
        raise TypeError(f"run_benchmark() got unknown setting(s) {', '.join(unknown)}; the settings are "
                        f"BenchConfig's {', '.join(sorted(config_keys))} and RunOptions' "
                        f"{', '.join(sorted(option_keys))}")
    config = replace(config or BenchConfig(), **{k: v for k, v in settings.items() if k in config_keys})
    options = replace(options or RunOptions(), **{k: v for k, v in settings.items() if k in option_keys})
    return config, options


def _stable_repr(obj) -> str:
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


@dataclass(frozen=True)
class Cell:
    """One (model, workload) pair. `model` is the name as given, `name`/`revision` its parts."""

    model: str
    name: str
    revision: str | None
    workload: str
    key: str

    @property
    def label(self) -> str:
        return f"{self.model} x {self.workload}"


def parse_model(spec: str) -> tuple[str, str | None]:
    """"org/model@rev" -> ("org/model", "rev"); "zoo/dense-mid" -> ("zoo/dense-mid", None) (`parse_model_spec`)."""
    if not isinstance(spec, str):
        raise BenchmarkError(f"a model must be a non-empty string (hub id, local folder or zoo/<name>), got {spec!r}")
    try:
        return parse_model_spec(spec)
    except ModelSpecError as err:
        raise BenchmarkError(str(err)) from None


def safe_name(text: str) -> str:
    """A file-name-safe version of a model or workload name ("zoo/dense-mid" -> "zoo--dense-mid")."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "--", text).strip("-.")
    return out or "unnamed"
