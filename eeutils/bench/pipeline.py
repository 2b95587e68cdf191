"""One benchmark cell: the default pipeline (readout -> trade-off, EAS and max-skip rows) and its atomic file."""
from __future__ import annotations

import gc
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.bootstrap import bootstrap_eas
from ..analysis.eas import eas
from ..analysis.exits import max_skip_under_budget, tradeoff
from ..analysis.rule_parse import parse_rules
from ..analysis.rules import ExitRule
from ..arch.loading import ModelLoadError, load_model
from ..core.zoo_store import ZooError
from ..arch.table import AdapterError
from ..core.io import write_parquet_atomic
from ..lens.cache import model_weights_digest, readout_key
from ..lens.readout import readout as run_readout
from ..lens.kernel import NonFiniteLogits
from ..lens.result import Readout
from ..workloads.types import Workload
from .config import META_COLUMNS, BenchConfig, Cell, kit_version


def cell_path(out_dir, cell: Cell) -> Path:
    return Path(out_dir) / "cells" / f"{cell.key}.parquet"


def readout_path(out_dir, cell: Cell) -> Path:
    return Path(out_dir) / "readouts" / f"{cell.key}.npz"


def cell_stamp(path: Path) -> tuple[str, str | None]:
    """(bench_config, weights_digest) a cell file was computed with; ValueError saying why when the file is
    damaged (not readable as parquet: a truncated copy, a full disk) or is not a cell file (no rows, no stamp)."""
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - ArrowInvalid, OSError, ...: a damaged file
        raise ValueError(f"it cannot be read as parquet: {type(err).__name__}: {err}") from err
    if not len(frame) or "bench_config" not in frame.columns or frame["bench_config"].iloc[0] is None:
        raise ValueError("it holds no rows stamped with the benchmark settings (no bench_config)")
    get = lambda c: str(frame[c].iloc[0]) if c in frame.columns and frame[c].iloc[0] is not None else None  # noqa: E731
    return str(frame["bench_config"].iloc[0]), get("weights_digest")


_MODEL_CACHE: dict = {}


def _load_cached(name: str, revision: str | None, config: BenchConfig):
    key = (name, revision, config.dtype, config.device, model_weights_digest(name, revision))
    if key not in _MODEL_CACHE:
        release_models()
        kwargs = {}
        if config.dtype is not None:
            kwargs["dtype"] = config.dtype
        if config.device is not None:
            kwargs["device"] = config.device
        _MODEL_CACHE[key] = load_model(name, revision=revision, **kwargs)
    return _MODEL_CACHE[key]


def release_models() -> None:
    """Drop the cached model (the runner keeps one loaded across a model's workloads)."""
    _MODEL_CACHE.clear()
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def _readout_digest(cell: Cell, workload: Workload, config: BenchConfig) -> str:
    return readout_key(cell.name, cell.revision, workload, max_tokens=config.max_tokens, k=config.k,
                       dtype=config.dtype, batch_size=config.batch_size, device=config.device)


def cell_readout(cell: Cell, workload: Workload, config: BenchConfig):
    """The cell's Readout: reused from out_dir/readouts if it matches, else computed (and saved)."""
    digest = _readout_digest(cell, workload, config)
    path = readout_path(config.out_dir, cell) if config.out_dir else None
    if path is not None and path.exists():
        try:
            ro = Readout.load(path)
            if ro.meta.get("bench_readout") == digest:
                return ro
        except Exception:  # noqa: BLE001 - unreadable: recompute
            pass
    lm = _load_cached(cell.name, cell.revision, config)
    max_length = config.max_tokens
    context = getattr(lm, "max_length", None)
    if max_length is not None and context is not None:
        max_length = min(max_length, context)
    ro = run_readout(lm, workload, k=config.k, batch_size=config.batch_size, max_length=max_length,
                 progress=config.progress, workload=workload.name)
    ro.meta.update(bench_readout=digest, workload_kind=workload.kind)
    if path is not None and config.save_readouts:
        ro.save(path)
    return ro


def _get(obj, name, default=np.nan):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _rules_with_oracle(config: BenchConfig, n_layers: int):
    """config.rules (None: the default grid, which has the budget oracle at the budget), with the budget
    oracle at config.budget added if missing: the max-skip rows always show the most any exit could save."""
    if config.rules is None:
        return None
    rules = parse_rules(config.rules, n_layers)
    oracle = ExitRule("budget_oracle", config.budget)
    return rules if oracle.label in {r.label for r in rules} else [*rules, oracle]


def cell_rows(readout, config: BenchConfig) -> pd.DataFrame:
    """Tidy rows of one readout: tradeoff rows, EAS rows (one per similarity) and max-skip rows (with the
    paired budget test of `eeutils.exits.max_skip_under_budget` when config.n_boot > 0)."""
    meta = readout.meta
    base = {c: meta.get(c) for c in ("revision", "family", "n_layers", "params_total", "params_active", "dtype")}
    base.update(readout_model=meta.get("model"), readout_tokens=readout.n_tokens, readout_docs=readout.n_docs)
    frames = []
    trade = tradeoff(readout, rules=_rules_with_oracle(config, readout.n_layers), budget=config.budget)
    t = trade.copy()
    t.insert(0, "row_type", "tradeoff")
    frames.append(t)
    eas_rows = []
    for sim in config.similarities:
        if config.n_boot and config.n_boot > 0:
            r = bootstrap_eas(readout, n_boot=config.n_boot, seed=config.seed, alpha=config.alpha,
                                      similarity=sim)
        else:
            r = eas(readout, alpha=config.alpha, similarity=sim)
        params = dict(_get(r, "params", {}) or {})
        eas_rows.append(dict(row_type="eas", similarity=sim, eas=float(_get(r, "value")),
                             eas_lo=float(_get(r, "lo")), eas_hi=float(_get(r, "hi")),
                             eas_ceiling=float(_get(r, "ceiling")), eas_normalised=float(_get(r, "normalised")),
                             eas_normalised_lo=float(_get(r, "normalised_lo")),
                             eas_normalised_hi=float(_get(r, "normalised_hi")),
                             alpha=config.alpha, n_boot=int(config.n_boot or 0),
                             eas_params=json.dumps(params, sort_keys=True, default=str)))
    frames.append(pd.DataFrame(eas_rows))
    paired = dict(readout=readout, n_boot=config.n_boot, seed=config.seed) if config.n_boot else {}
    ms = max_skip_under_budget(trade, budget=config.budget, metric="accuracy", **paired).copy()
    ms.insert(0, "row_type", "max_skip")
    if "budget" not in ms.columns:
        ms["budget"] = config.budget
    frames.append(ms)
    out = pd.concat([f for f in frames if len(f)], ignore_index=True, sort=False)
    for k, v in base.items():
        if k not in out.columns:
            out[k] = v
    return out


def default_compute_cell(cell: Cell, workload: Workload, config: BenchConfig) -> pd.DataFrame:
    """Readout (cached model, saved .npz) then `cell_rows`."""
    return cell_rows(cell_readout(cell, workload, config), config)


def _finalise(frame, cell: Cell, workload: Workload, config: BenchConfig) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"compute_cell must return a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise ValueError(f"compute_cell returned no rows for {cell.label}")
    frame = frame.reset_index(drop=True).copy()
    fixed = dict(model=cell.model, workload=workload.name, workload_kind=workload.kind,
                 kit_version=kit_version(), timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 bench_config=config.fingerprint(), weights_digest=model_weights_digest(cell.name, cell.revision))
    for k, v in fixed.items():
        frame[k] = v
    if cell.revision is not None or "revision" not in frame.columns:
        frame["revision"] = cell.revision
    for k in ("family", "n_layers", "params_total", "params_active"):
        if k not in frame.columns:
            frame[k] = None
    if "row_type" not in frame.columns:
        frame["row_type"] = "custom"
    first = [c for c in META_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def run_cell(cell: Cell, workload: Workload, config: BenchConfig, compute_cell=None) -> Path:
    """Compute one cell and write its file atomically; returns the file's path."""
    fn = compute_cell or default_compute_cell
    frame = _finalise(fn(cell, workload, config), cell, workload, config)
    return write_parquet_atomic(frame, cell_path(config.out_dir, cell))


def resume_hint(out_dir: Path, n_done: int) -> str:
    return (f"{n_done} finished cell(s) are kept in {out_dir / 'cells'}; rerun the same command (same "
            "settings, same --out) to resume: finished cells are skipped")


# failures a rerun cannot cure: the model cannot be loaded or read out, or the arguments are wrong
PERMANENT_ERRORS = (ModelLoadError, AdapterError, NonFiniteLogits, ZooError, TypeError, ValueError)


def failure_hint(exc: BaseException, out_dir: Path, n_done: int) -> str:
    """What to do after a cell failed: fix the cause (permanent errors) or rerun to resume (the rest)."""
    if isinstance(exc, PERMANENT_ERRORS):
        return (f"Fix this first: rerunning unchanged would fail the same way. {n_done} finished cell(s) are kept "
                f"in {out_dir / 'cells'}")
    return resume_hint(out_dir, n_done)


def progress_bar(progress: bool, n_total: int, n_done: int):
    from tqdm.auto import tqdm

    return tqdm(total=n_total, initial=n_done, desc="benchmark cells", unit="cell", disable=not progress)
