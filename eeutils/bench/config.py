"""Benchmark settings, cells, errors and names (the runner's vocabulary)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

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
    """Settings shared by every cell. `fingerprint()` digests those that change results."""

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
