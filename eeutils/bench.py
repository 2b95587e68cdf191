"""Benchmark runner: models x workloads, one resumable, atomically written result file per cell.

    from eeutils.bench import run_benchmark
    frame = run_benchmark(["zoo/dense-mid", "zoo/moe-mid"], ["zoo-prose", "zoo-task"], "runs/bench")

or from a shell: ``eeutils bench --models zoo/dense-mid zoo/moe-mid --workloads zoo-prose zoo-task --out runs/bench``.

What one cell does (the default `compute_cell`)
-----------------------------------------------
1. Load the model (one model stays cached across its workloads; cells run model by model).
2. Read out every layer on the workload (`eeutils.readout.readout`) and save the `Readout` to
   ``out_dir/readouts/<model>__<workload>.npz`` for notebooks. An interrupted cell whose readout was
   already saved reuses it on the rerun (checked against a digest of the model, documents and settings).
3. Turn it into tidy rows, ``row_type`` saying which kind:
   - ``tradeoff``: one row per (rule, threshold) from `eeutils.exits.tradeoff`;
   - ``eas``: one row per similarity, EAS with its ceiling, normalised value and a bootstrap
     interval over documents (`eeutils.metrics.bootstrap_eas`; sampling noise of the text only);
   - ``max_skip``: one row per rule from `eeutils.exits.max_skip_under_budget` (largest skip ratio
     whose relative accuracy loss stays within ``budget``; oracle, no wall-clock).
   Every row carries the metadata: model, revision, family, n_layers, params_total, params_active,
   workload, workload_kind, kit_version, timestamp, bench_config (a digest of the settings).

Files under ``out_dir``
-----------------------
- ``cells/<safe-model>__<workload>.parquet``: one per finished cell, written to a temporary file
  and moved into place with `os.replace`, so a cell is finished iff its file exists. A rerun with the
  same settings skips finished cells (resume); an interrupted or failed cell leaves nothing behind.
  A rerun with different settings into the same folder is refused (use a new folder).
- ``readouts/<safe-model>__<workload>.npz``: the readouts (default pipeline only).
- ``results.parquet`` and ``results.csv``: the cells of this run's grid merged, written atomically.
- ``manifest.json``: arguments, settings, package versions, cells and their files.

Executors
---------
- ``executor="local"`` (default): cells run one after another in this process; the first failure
  stops the run (finished cells stay) and raises `CellFailed`, whose message says a rerun resumes.
- ``executor="ray"`` (``pip install 'eeutils[ray]'``): each pending cell is one Ray task that writes
  its own cell file with the same atomic semantics; failed cells are reported together after the
  others finish, then the same merge runs. Connects to a running Ray instance if there is one
  (``ray.init`` already called, or ``ray_address`` / ``RAY_ADDRESS``), else starts a local one.
  ``ray_options`` (default ``{"num_cpus": 1}``) go to each task, e.g. ``{"num_gpus": 1}``.

On SLURM
--------
Through Ray: start a Ray cluster inside one allocation and point the benchmark at it. The output
folder must be on a file system every node sees. In the batch script::

    #SBATCH --nodes=2 --ntasks-per-node=1 --cpus-per-task=16 --gres=gpu:1
    nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST")); head=${nodes[0]}
    srun -N1 -n1 -w "$head" ray start --head --port=6379 --num-cpus=$SLURM_CPUS_PER_TASK --block &
    sleep 20
    for n in "${nodes[@]:1}"; do
      srun -N1 -n1 -w "$n" ray start --address="$head:6379" --num-cpus=$SLURM_CPUS_PER_TASK --block &
    done
    sleep 20
    eeutils bench --executor ray --ray-address "$head:6379" --ray-gpus 1 \\
        --models zoo/dense-mid zoo/moe-mid --workloads zoo-prose zoo-task --out /shared/runs/bench

Without Ray (submitit or job arrays): cells are independent files, so run one job per model with
``merge=False`` (``--no-merge``) into the same folder, then one final run with the whole grid,
which finds every cell finished and only merges::

    import submitit
    ex = submitit.AutoExecutor(folder="logs")
    ex.update_parameters(timeout_min=120, slurm_partition="gpu", gpus_per_node=1, cpus_per_task=8)
    jobs = [ex.submit(run_benchmark, [m], workloads, out, merge=False, progress=False) for m in models]
    [j.result() for j in jobs]
    run_benchmark(models, workloads, out)   # merge

Every job must use the same settings (they are part of each cell's ``bench_config`` digest).
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from eeutils.workloads import Workload, WorkloadUnavailable, get_workload

DEFAULT_SIMILARITIES = ("logit_cos", "top1", "topk_overlap", "kl")
EXECUTORS = ("local", "ray")
META_COLUMNS = ("model", "revision", "family", "n_layers", "params_total", "params_active", "workload",
                "workload_kind", "kit_version", "timestamp", "bench_config", "row_type")
STALE_TMP_SECONDS = 600  # a temporary file older than this belongs to a killed process


class BenchmarkError(ValueError):
    """Bad benchmark arguments, found before any cell runs."""


class CellFailed(RuntimeError):
    """A cell raised; finished cells are kept and a rerun resumes."""

    def __init__(self, message: str, cells=()):
        super().__init__(message)
        self.cells = list(cells)


def kit_version() -> str:
    try:
        from eeutils._version import __version__
        return __version__
    except Exception:  # noqa: BLE001
        try:
            from importlib.metadata import version
            return version("eeutils")
        except Exception:  # noqa: BLE001
            return "unknown"


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

    RESULT_FIELDS = ("budget", "alpha", "similarities", "rules", "n_docs", "max_chars", "max_tokens", "n_boot",
                     "seed", "k", "dtype")

    def describe(self) -> dict:
        out = {}
        for name in self.RESULT_FIELDS:
            v = getattr(self, name)
            out[name] = list(v) if isinstance(v, tuple) else (v if v is None or isinstance(v, (int, float, str))
                                                              else _stable_repr(v))
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
    """"org/model@rev" -> ("org/model", "rev"); "zoo/dense-mid" -> ("zoo/dense-mid", None)."""
    if not isinstance(spec, str) or not spec.strip():
        raise BenchmarkError(f"a model must be a non-empty string (hub id, local folder or zoo/<name>), got {spec!r}")
    spec = spec.strip()
    if "@" in spec and not Path(spec).expanduser().exists():
        name, rev = spec.rsplit("@", 1)
        if not name or not rev:
            raise BenchmarkError(f"bad model spec {spec!r}: use NAME or NAME@REVISION")
        return name, rev
    return spec, None


def safe_name(text: str) -> str:
    """A file-name-safe version of a model or workload name ("zoo/dense-mid" -> "zoo--dense-mid")."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "--", text).strip("-.")
    return out or "unnamed"


# --------------------------------------------------------------------------------------------------
# validation (everything is checked before any cell runs)

def _hf_offline() -> bool:
    return any(os.environ.get(v, "0").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hf_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    try:
        from huggingface_hub import constants
        return constants.HF_HUB_CACHE
    except Exception:  # noqa: BLE001
        return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def _looks_like_path(name: str) -> bool:
    return (name.startswith(("/", "./", "../", "~", ".\\")) or name.endswith(("/", "\\"))
            or name.count("/") > 1 or bool(re.match(r"^[A-Za-z]:[\\/]", name)))


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_model(name: str, revision: str | None = None) -> None:
    """Raise BenchmarkError if `name` cannot be a loadable model here (cheap: no weights are read).

    zoo/<name> must be in the zoo; an existing path must be a folder with config.json; a path-like
    name must exist; a hub id must be cached when offline (HF_HUB_OFFLINE=1). Online hub ids are not
    checked here (loading reports them).
    """
    if name.startswith(("zoo/", "zoo:")):
        try:
            from eeutils import zoo
        except ImportError as err:
            raise BenchmarkError(f"{name!r}: the embedded zoo (eeutils.zoo) is not available: {err}") from err
        try:
            zoo.resolve(name[4:], revision)
        except Exception as err:  # noqa: BLE001 - ZooError and friends
            msg = str(err)
            if "zoo" not in msg:
                msg = f"unknown zoo model {name!r}{'@' + revision if revision else ''}: {msg}"
            raise BenchmarkError(msg) from err
        return
    if name.startswith("real/"):  # a real GGUF model: registered and its package installed (converted on load)
        from eeutils.arch.real import RealModelError, installed_versions, real_spec
        try:
            installed_versions(real_spec(name))
        except RealModelError as err:
            raise BenchmarkError(str(err)) from err
        if revision:
            raise BenchmarkError(f"{name!r} has no revisions; drop '@{revision}'")
        return
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise BenchmarkError(f"{name!r} exists but is not a model folder (a folder with config.json)")
        return
    if _looks_like_path(name) or not _HUB_ID.match(name):
        raise BenchmarkError(f"model {name!r}: no such local folder (and not a hub id like 'org/model'); "
                             "for an embedded model use zoo/<name> (see `eeutils zoo list`)")
    if _hf_offline():
        cached = None
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(name, "config.json", cache_dir=_hf_cache_dir(), revision=revision)
        except Exception:  # noqa: BLE001
            cached = None
        if not isinstance(cached, str):
            raise BenchmarkError(
                f"model {name!r}{'@' + revision if revision else ''} is neither a local folder nor in the Hugging Face "
                f"cache ({_hf_cache_dir()}), and HF_HUB_OFFLINE is set: download it once online "
                f"(`hf download {name}`), pass a local folder, or use a zoo model such as zoo/dense-mid")


def _check_fraction(name, value, hi_open: bool):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = 0.0 <= value < 1.0 if hi_open else 0.0 <= value <= 1.0
    if not ok:
        rng = "[0, 1)" if hi_open else "[0, 1]"
        hint = " (a relative accuracy loss, e.g. 0.05 for 5%)" if name == "budget" else ""
        raise BenchmarkError(f"{name} must be a number in {rng}{hint}, got {value!r}")


def _check_int(name, value, minimum, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BenchmarkError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}")


def _as_list(x, what: str) -> list:
    if isinstance(x, (str, Workload)):
        x = [x]
    try:
        out = list(x)
    except TypeError:
        raise BenchmarkError(f"{what} must be a list, got {type(x).__name__}") from None
    if not out:
        raise BenchmarkError(f"no {what} given")
    return out


def _default_pipeline_check(similarities) -> None:
    missing = []
    for mod in ("eeutils.loading", "eeutils.readout", "eeutils.metrics", "eeutils.exits"):
        try:
            __import__(mod)
        except ImportError as err:
            missing.append(f"{mod} ({err})")
    if missing:
        raise BenchmarkError("the default benchmark pipeline needs " + ", ".join(missing))


def _check_similarities(similarities, required: bool) -> tuple:
    if isinstance(similarities, str):
        similarities = (similarities,)
    sims = tuple(similarities or ())
    if not sims:
        raise BenchmarkError("similarities must name at least one similarity, e.g. ('logit_cos', 'top1')")
    try:
        from eeutils.metrics import SIMILARITY_KINDS
    except ImportError:
        if required:
            raise
        return sims
    bad = [s for s in sims if s not in SIMILARITY_KINDS]
    if bad:
        raise BenchmarkError(f"unknown similarity {bad}; choose from {sorted(SIMILARITY_KINDS)}")
    return sims


# --------------------------------------------------------------------------------------------------
# files

def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """write(tmp) then os.replace(tmp, path); the temporary file never survives an exception."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass
    return path


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns of mixed types become strings (dicts/lists as JSON) so parquet can store them."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        vals = [v for v in frame[col] if not _isnull(v)]
        types = {type(v) for v in vals}
        if not vals or types <= {str} or types <= {bool, np.bool_}:
            continue
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in vals):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
            continue
        frame[col] = [None if _isnull(v) else (v if isinstance(v, str) else json.dumps(v, default=str)
                                               if isinstance(v, (dict, list, tuple)) else str(v))
                      for v in frame[col]]
    return frame


def _isnull(v) -> bool:
    try:
        return v is None or (not isinstance(v, (str, dict, list, tuple, np.ndarray)) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def write_parquet_atomic(frame: pd.DataFrame, path) -> Path:
    safe = _parquet_safe(frame)
    return _atomic_write(Path(path), lambda tmp: safe.to_parquet(tmp, index=False))


def _write_json_atomic(obj, path) -> Path:
    text = json.dumps(obj, indent=2, default=str, sort_keys=False)
    return _atomic_write(Path(path), lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def _clean_stale_tmp(folders: Iterable[Path]) -> None:
    now = time.time()
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and (p.name.endswith(".tmp") or p.name.endswith(".tmp.npz")):
                try:
                    if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                        p.unlink()
                except OSError:
                    pass


def cell_path(out_dir, cell: Cell) -> Path:
    return Path(out_dir) / "cells" / f"{cell.key}.parquet"


def readout_path(out_dir, cell: Cell) -> Path:
    return Path(out_dir) / "readouts" / f"{cell.key}.npz"


def _existing_fingerprint(path: Path) -> str | None:
    try:
        col = pd.read_parquet(path, columns=["bench_config"])["bench_config"]
        return str(col.iloc[0]) if len(col) else None
    except Exception:  # noqa: BLE001 - unreadable / no such column
        return None


# --------------------------------------------------------------------------------------------------
# the default pipeline

_MODEL_CACHE: dict = {}


def _load_cached(name: str, revision: str | None, config: BenchConfig):
    key = (name, revision, config.dtype, config.device)
    if key not in _MODEL_CACHE:
        release_models()
        from eeutils.loading import load_model

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


def _docs_digest(workload: Workload) -> str:
    h = hashlib.sha1()
    for d in workload.docs:
        for part in (d.text, d.prompt, d.answer):
            h.update(b"\x00" if part is None else part.encode("utf-8", "surrogatepass") + b"\x01")
        h.update(b"\x02")
    return h.hexdigest()


def _readout_digest(cell: Cell, workload: Workload, config: BenchConfig) -> str:
    blob = json.dumps([cell.name, cell.revision, workload.name, _docs_digest(workload), config.max_tokens,
                       config.k, config.dtype], default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def cell_readout(cell: Cell, workload: Workload, config: BenchConfig):
    """The cell's Readout: reused from out_dir/readouts if it matches, else computed (and saved)."""
    from eeutils.result import Readout

    digest = _readout_digest(cell, workload, config)
    path = readout_path(config.out_dir, cell) if config.out_dir else None
    if path is not None and path.exists():
        try:
            ro = Readout.load(path)
            if ro.meta.get("bench_readout") == digest:
                return ro
        except Exception:  # noqa: BLE001 - unreadable: recompute
            pass
    from eeutils.readout import readout

    lm = _load_cached(cell.name, cell.revision, config)
    max_length = config.max_tokens
    context = getattr(lm, "max_length", None)
    if max_length is not None and context is not None:
        max_length = min(max_length, context)
    ro = readout(lm, workload, k=config.k, batch_size=config.batch_size, max_length=max_length,
                 progress=config.progress, workload=workload.name)
    ro.meta.update(bench_readout=digest, workload_kind=workload.kind)
    if path is not None and config.save_readouts:
        ro.save(path)
    return ro


def _get(obj, name, default=np.nan):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def cell_rows(readout, config: BenchConfig) -> pd.DataFrame:
    """Tidy rows of one readout: tradeoff rows, EAS rows (one per similarity) and max-skip rows."""
    from eeutils import exits, metrics

    meta = readout.meta
    base = {c: meta.get(c) for c in ("revision", "family", "n_layers", "params_total", "params_active", "dtype")}
    base.update(readout_model=meta.get("model"), readout_tokens=readout.n_tokens, readout_docs=readout.n_docs)
    frames = []
    trade = exits.tradeoff(readout, rules=config.rules)
    t = trade.copy()
    t.insert(0, "row_type", "tradeoff")
    frames.append(t)
    eas_rows = []
    for sim in config.similarities:
        if config.n_boot and config.n_boot > 0:
            r = metrics.bootstrap_eas(readout, n_boot=config.n_boot, seed=config.seed, alpha=config.alpha,
                                      similarity=sim)
        else:
            r = metrics.eas(readout, alpha=config.alpha, similarity=sim)
        params = dict(_get(r, "params", {}) or {})
        eas_rows.append(dict(row_type="eas", similarity=sim, eas=float(_get(r, "value")),
                             eas_lo=float(_get(r, "lo")), eas_hi=float(_get(r, "hi")),
                             eas_ceiling=float(_get(r, "ceiling")), eas_normalised=float(_get(r, "normalised")),
                             eas_normalised_lo=float(_get(r, "normalised_lo")),
                             eas_normalised_hi=float(_get(r, "normalised_hi")),
                             alpha=config.alpha, n_boot=int(config.n_boot or 0),
                             eas_params=json.dumps(params, sort_keys=True, default=str)))
    frames.append(pd.DataFrame(eas_rows))
    ms = exits.max_skip_under_budget(trade, budget=config.budget, metric="accuracy").copy()
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


# --------------------------------------------------------------------------------------------------
# running one cell

def _finalise(frame, cell: Cell, workload: Workload, config: BenchConfig) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"compute_cell must return a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise ValueError(f"compute_cell returned no rows for {cell.label}")
    frame = frame.reset_index(drop=True).copy()
    fixed = dict(model=cell.model, workload=workload.name, workload_kind=workload.kind,
                 kit_version=kit_version(), timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 bench_config=config.fingerprint())
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


def _ray_cell(cell, workload, config, compute_cell):
    return str(run_cell(cell, workload, config, compute_cell))


# --------------------------------------------------------------------------------------------------
# the runner

def _resolve_workloads(workloads, n_docs, max_chars, seed) -> dict[str, Workload]:
    out: dict[str, Workload] = {}
    for w in _as_list(workloads, "workloads"):
        if not isinstance(w, (str, Workload)):
            raise BenchmarkError(f"a workload must be a registered name or a Workload, got {type(w).__name__}")
        try:
            wl = get_workload(w, n_docs=n_docs, max_chars=max_chars, seed=seed)
        except WorkloadUnavailable:
            raise
        except (ValueError, TypeError) as err:
            raise BenchmarkError(str(err)) from err
        if wl.name in out:
            if isinstance(w, Workload) and out[wl.name].docs != wl.docs:
                raise BenchmarkError(f"two different workloads are named {wl.name!r}; rename one")
            continue
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", wl.name):
            raise BenchmarkError(f"workload name {wl.name!r} must use letters, digits, '.', '_' or '-' "
                                 "(it names result files)")
        out[wl.name] = wl
    return out


def _versions(executor: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform(), "eeutils": kit_version()}
    names = ["numpy", "pandas", "pyarrow", "torch", "transformers", "datasets", "tqdm"]
    if executor == "ray":
        names.append("ray")
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out


def run_benchmark(models, workloads, out_dir, *, budget: float = 0.05, alpha: float = 0.5,
                  similarities=DEFAULT_SIMILARITIES, rules=None, n_docs: int | None = None,
                  max_tokens: int | None = 512, max_chars: int | None = None, n_boot: int = 200, seed: int = 0,
                  k: int = 5, batch_size: int = 8, dtype: str | None = "float32", device: str | None = None,
                  executor: str = "local", progress: bool = True, compute_cell: Callable | None = None,
                  check_models: bool | None = None, merge: bool = True, save_readouts: bool = True,
                  ray_address: str | None = None, ray_options: dict | None = None) -> pd.DataFrame:
    """Run every (model, workload) cell into `out_dir`, resuming finished cells; return the merged frame.

    models: hub ids ("EleutherAI/pythia-70m", with "@revision" for a checkpoint), local folders or
    zoo names ("zoo/dense-mid"). workloads: registered names (see `eeutils.workloads.list_workloads`)
    or `Workload` objects. budget: relative accuracy loss allowed for the max-skip rows, in [0, 1).
    alpha: EAS weight in [0, 1]. similarities: EAS similarity kinds, one EAS row each. rules: exit
    rules for `exits.tradeoff` (None: its defaults). n_docs / max_chars / seed: deterministic workload
    subset (`get_workload`), the same for every model. max_tokens: tokens per document (truncated; capped
    at the model's context). n_boot: bootstrap replicates for the EAS interval (0: none). k, batch_size,
    dtype, device: readout and loading options. executor: "local" or "ray" (see the module docstring).
    compute_cell(cell, workload, config) -> DataFrame replaces the readout + metrics pipeline (tests,
    custom metrics); the runner adds the metadata columns. check_models: validate model names up front
    (default: True with the default pipeline, False with a custom compute_cell). merge: write
    results.parquet/csv and manifest.json at the end (False for one job of many sharing a folder).

    Every argument is checked, and every workload loaded, before the first cell runs.
    """
    # ---- validate everything up front ------------------------------------------------------------
    _check_fraction("budget", budget, hi_open=True)
    _check_fraction("alpha", alpha, hi_open=False)
    _check_int("n_docs", n_docs, 1)
    _check_int("max_tokens", max_tokens, 1)
    _check_int("max_chars", max_chars, 1)
    _check_int("n_boot", n_boot, 0, allow_none=False)
    _check_int("seed", seed, 0, allow_none=False)
    _check_int("k", k, 2, allow_none=False)
    _check_int("batch_size", batch_size, 1, allow_none=False)
    if executor not in EXECUTORS:
        raise BenchmarkError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "ray":
        _import_ray()
        if ray_options is not None and not isinstance(ray_options, dict):
            raise BenchmarkError(f"ray_options must be a dict of Ray task options, got {ray_options!r}")
    if compute_cell is not None and not callable(compute_cell):
        raise BenchmarkError("compute_cell must be a callable (cell, workload, config) -> DataFrame")
    if out_dir is None or not str(out_dir).strip():
        raise BenchmarkError("out_dir must be a folder path")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchmarkError(f"out_dir {out_dir} exists and is not a folder")
    default_pipeline = compute_cell is None
    if default_pipeline:
        _default_pipeline_check(similarities)
    sims = _check_similarities(similarities, required=default_pipeline)
    if check_models is None:
        check_models = default_pipeline

    model_specs = []
    for m in _as_list(models, "models"):
        name, rev = parse_model(m) if isinstance(m, str) else parse_model(str(m))
        spec = m.strip() if isinstance(m, str) else str(m)
        if spec not in [s for s, _, _ in model_specs]:
            model_specs.append((spec, name, rev))
    if check_models:
        errors = []
        for spec, name, rev in model_specs:
            try:
                check_model(name, rev)
            except BenchmarkError as err:
                errors.append(str(err))
        if errors:
            raise BenchmarkError("; ".join(errors))
    wls = _resolve_workloads(workloads, n_docs, max_chars, seed)

    cells, keys = [], {}
    for spec, name, rev in model_specs:
        for wname in wls:
            key = f"{safe_name(spec)}__{safe_name(wname)}"
            if key in keys:
                raise BenchmarkError(f"{spec!r} x {wname!r} and {keys[key]} map to the same file name {key!r}; "
                                     "rename one")
            keys[key] = f"{spec!r} x {wname!r}"
            cells.append(Cell(model=spec, name=name, revision=rev, workload=wname, key=key))

    config = BenchConfig(budget=float(budget), alpha=float(alpha), similarities=sims, rules=rules, n_docs=n_docs,
                         max_chars=max_chars, max_tokens=max_tokens, n_boot=int(n_boot), seed=int(seed), k=int(k),
                         batch_size=int(batch_size), dtype=dtype, device=device, out_dir=str(out_dir),
                         progress=bool(progress), save_readouts=bool(save_readouts))
    fp = config.fingerprint()

    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp([out_dir, out_dir / "cells", out_dir / "readouts"])
    done, stale = [], []
    for c in cells:
        p = cell_path(out_dir, c)
        if p.exists():
            (done if _existing_fingerprint(p) == fp else stale).append(c)
    if stale:
        raise BenchmarkError(
            f"{out_dir} already holds results computed with different settings for {len(stale)} cell(s) "
            f"(e.g. {stale[0].label}); use a new --out folder, or delete {out_dir / 'cells'} to recompute")
    pending = [c for c in cells if c not in done]

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = dict(
        kit_version=kit_version(), started=started, status="running", out_dir=str(out_dir), executor=executor,
        args=dict(models=[s for s, _, _ in model_specs], workloads=list(wls), **config.describe(),
                  batch_size=config.batch_size, device=device, compute_cell=getattr(compute_cell, "__qualname__",
                                                                                    "default")),
        bench_config=fp, versions=_versions(executor),
        workloads={n: dict(kind=w.kind, source=w.source, n_docs=len(w),
                           n_available=w.meta.get("n_available", len(w))) for n, w in wls.items()},
        cells=[dict(model=c.model, workload=c.workload, file=f"cells/{c.key}.parquet",
                    readout=f"readouts/{c.key}.npz" if default_pipeline and save_readouts else None)
               for c in cells])
    if merge:
        _write_json_atomic(manifest, out_dir / "manifest.json")

    # ---- run -------------------------------------------------------------------------------------
    try:
        if pending:
            if executor == "ray":
                _run_ray(pending, wls, config, compute_cell, n_done=len(done), n_total=len(cells),
                         address=ray_address, options=ray_options, progress=progress, out_dir=out_dir)
            else:
                _run_local(pending, wls, config, compute_cell, n_done=len(done), n_total=len(cells),
                           progress=progress, out_dir=out_dir)
    finally:
        if default_pipeline:
            release_models()

    if not merge:
        return pd.concat([pd.read_parquet(cell_path(out_dir, c)) for c in cells], ignore_index=True, sort=False)
    # ---- merge -----------------------------------------------------------------------------------
    frame = merge_cells(out_dir, cells)
    write_parquet_atomic(frame, out_dir / "results.parquet")
    frame = pd.read_parquet(out_dir / "results.parquet")  # return exactly what a notebook will read
    _atomic_write(out_dir / "results.csv", lambda tmp: frame.to_csv(tmp, index=False))
    manifest.update(status="complete", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    n_rows=int(len(frame)), n_cells=len(cells), n_resumed=len(done))
    _write_json_atomic(manifest, out_dir / "manifest.json")
    return frame


def merge_cells(out_dir, cells) -> pd.DataFrame:
    """Concatenate the cell files of `cells` (in grid order)."""
    parts = [pd.read_parquet(cell_path(out_dir, c)) for c in cells]
    return _parquet_safe(pd.concat(parts, ignore_index=True, sort=False))


def load_results(out_dir) -> pd.DataFrame:
    """The merged results of a finished benchmark folder."""
    path = Path(out_dir) / "results.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the benchmark has not finished (rerun it to resume)")
    return pd.read_parquet(path)


def _resume_hint(out_dir: Path, n_done: int) -> str:
    return (f"{n_done} finished cell(s) are kept in {out_dir / 'cells'}; rerun the same command (same "
            "settings, same --out) to resume: finished cells are skipped")


def _bar(progress: bool, n_total: int, n_done: int):
    from tqdm.auto import tqdm

    return tqdm(total=n_total, initial=n_done, desc="benchmark cells", unit="cell", disable=not progress)


def _run_local(pending, wls, config, compute_cell, *, n_done, n_total, progress, out_dir):
    bar = _bar(progress, n_total, n_done)
    finished = n_done
    try:
        for cell in pending:
            bar.set_postfix_str(cell.label)
            try:
                run_cell(cell, wls[cell.workload], config, compute_cell)
            except KeyboardInterrupt:
                print(f"\ninterrupted in cell {cell.label}; it left no file. {_resume_hint(out_dir, finished)}",
                      file=sys.stderr)
                raise
            except Exception as exc:
                raise CellFailed(f"cell {cell.label} failed: {type(exc).__name__}: {exc}. "
                                 f"{_resume_hint(out_dir, finished)}", [cell]) from exc
            finished += 1
            bar.update(1)
    finally:
        bar.close()


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise BenchmarkError("executor='ray' needs Ray: pip install 'eeutils[ray]' (or pip install ray); "
                             "or use executor='local'") from err
    return ray


def _run_ray(pending, wls, config, compute_cell, *, n_done, n_total, address, options, progress, out_dir):
    ray = _import_ray()
    own = False
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 ignore_reinit_error=True)
        own = True
    opts = dict(options or {"num_cpus": 1})
    if "runtime_env" not in opts:
        # workers must import eeutils even when it is not installed (a source checkout): put the
        # package's parent folder on their PYTHONPATH (a folder that does not exist on a node is ignored)
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        pypath = os.pathsep.join(p for p in (pkg_parent, os.environ.get("PYTHONPATH", "")) if p)
        opts["runtime_env"] = {"env_vars": {"PYTHONPATH": pypath}}
    task = ray.remote(_ray_cell).options(**opts)
    bar = _bar(progress, n_total, n_done)
    refs = {}
    failures = []
    finished = n_done
    remaining = []
    try:
        for cell in pending:
            refs[task.remote(cell, wls[cell.workload], config, compute_cell)] = cell
        remaining = list(refs)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            for ref in ready:
                cell = refs[ref]
                try:
                    ray.get(ref)
                    finished += 1
                    bar.update(1)
                except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the cell's exception
                    cause = getattr(exc, "cause", None) or exc
                    failures.append((cell, cause))
    except KeyboardInterrupt:
        for ref in remaining:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001
                pass
        print(f"\ninterrupted; cells still running were cancelled and left no file. "
              f"{_resume_hint(out_dir, finished)}", file=sys.stderr)
        raise
    finally:
        bar.close()
        if own:
            ray.shutdown()
    if failures:
        lines = "; ".join(f"{c.label}: {type(e).__name__}: {e}" for c, e in failures)
        exc = CellFailed(f"{len(failures)} of {len(pending)} cell(s) failed on Ray ({lines}). "
                         f"{_resume_hint(out_dir, finished)}", [c for c, _ in failures])
        raise exc from failures[0][1]
