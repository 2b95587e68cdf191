"""The benchmark runner: models x workloads, one resumable, atomically written result file per cell
(see the package docstring, `eeutils.bench`, for files, executors and SLURM)."""
from __future__ import annotations

import platform
import re
import sys
import time
import warnings
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from ..core.io import LockHeld, clean_stale_tmp, file_lock, parquet_safe, write_csv_atomic, write_json_atomic, \
    write_parquet_atomic
from ..workloads.registry import get_workload
from ..workloads.types import Workload, WorkloadUnavailable
from .config import DEFAULT_SIMILARITIES, EXECUTORS, BenchConfig, BenchmarkError, Cell, CellFailed, kit_version, \
    parse_model, safe_name
from ..lens.cache import model_weights_digest
from .pipeline import cell_path, cell_stamp, failure_hint, progress_bar, release_models, resume_hint, run_cell
from .ray_executor import import_ray, run_ray
from .validation import _as_list, _check_fraction, _check_int, _check_similarities, check_model, check_out_dir, \
    check_load_options, check_settings

LOCK_FILE = ".eeutils-bench.lock"  # held by a run for its whole length: exclusive, shared by --no-merge jobs


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


def _model_specs(models, check: bool) -> list[tuple[str, str, str | None]]:
    """(spec as given, name, revision) per distinct model; with `check`, every unloadable one in one error."""
    model_specs = []
    for m in _as_list(models, "models"):
        name, rev = parse_model(m) if isinstance(m, str) else parse_model(str(m))
        spec = m.strip() if isinstance(m, str) else str(m)
        if spec not in [s for s, _, _ in model_specs]:
            model_specs.append((spec, name, rev))
    if check:
        errors = []
        for spec, name, rev in model_specs:
            try:
                check_model(name, rev)
            except BenchmarkError as err:
                errors.append(str(err))
        if errors:
            raise BenchmarkError("; ".join(errors))
    return model_specs


def _grid(model_specs, wls) -> list[Cell]:
    """The (model, workload) cells, model by model; two whose file names collide are refused."""
    cells, keys = [], {}
    for spec, name, rev in model_specs:
        for wname in wls:
            key = f"{safe_name(spec)}__{safe_name(wname)}"
            if key in keys:
                raise BenchmarkError(f"{spec!r} x {wname!r} and {keys[key]} map to the same file name {key!r}; "
                                     "rename one")
            keys[key] = f"{spec!r} x {wname!r}"
            cells.append(Cell(model=spec, name=name, revision=rev, workload=wname, key=key))
    return cells


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
    check_load_options(dtype, device)
    if executor not in EXECUTORS:
        raise BenchmarkError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "ray":
        import_ray()
        if ray_options is not None and not isinstance(ray_options, dict):
            raise BenchmarkError(f"ray_options must be a dict of Ray task options, got {ray_options!r}")
    if compute_cell is not None and not callable(compute_cell):
        raise BenchmarkError("compute_cell must be a callable (cell, workload, config) -> DataFrame")
    if out_dir is None or not str(out_dir).strip():
        raise BenchmarkError("out_dir must be a folder path")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchmarkError(f"out_dir {out_dir} exists and is a file, not a folder; pick another --out")
    default_pipeline = compute_cell is None
    sims = _check_similarities(similarities)
    if check_models is None:
        check_models = default_pipeline

    model_specs = _model_specs(models, check_models)
    wls = _resolve_workloads(workloads, n_docs, max_chars, seed)

    cells = _grid(model_specs, wls)

    config = BenchConfig(budget=float(budget), alpha=float(alpha), similarities=sims, rules=rules, n_docs=n_docs,
                         max_chars=max_chars, max_tokens=max_tokens, n_boot=int(n_boot), seed=int(seed), k=int(k),
                         batch_size=int(batch_size), dtype=dtype, device=device, out_dir=str(out_dir),
                         progress=bool(progress), save_readouts=bool(save_readouts))

    check_out_dir(out_dir)
    lock = ExitStack()
    try:
        lock.enter_context(file_lock(out_dir / LOCK_FILE, shared=not merge))
    except LockHeld as err:
        raise BenchmarkError(
            f"{out_dir} is in use by another eeutils bench run ({err}): two runs in one --out would mix their "
            "results. Wait for it to finish, or use another --out (jobs of one grid share a folder with "
            "--no-merge; a killed run's lock is released by the system, its leftover file is harmless)") from None
    with lock:
        check_settings(out_dir, config)
        run = dict(executor=executor, merge=merge, progress=progress, ray_address=ray_address,
                   ray_options=ray_options, default_pipeline=default_pipeline)
        return _execute(cells, wls, config, compute_cell, model_specs, **run)


def _classify(cells, out_dir: Path, fp: str, digests: dict):
    """(done, reweighed, corrupt) cells: finished with these settings and weights; computed from weights that
    changed since; a damaged cell file (warned about, recomputed alone). Another setting's cell: BenchmarkError."""
    done, stale, reweighed, corrupt = [], [], [], []
    for c in cells:
        p = cell_path(out_dir, c)
        if not p.exists():
            continue
        try:
            old_fp, old_weights = cell_stamp(p)
        except ValueError as err:
            warnings.warn(f"cell file {p} is damaged ({err}); recomputing that cell only (the other finished "
                          "cells are kept)", stacklevel=3)
            corrupt.append(c)
            continue
        if old_fp != fp:
            stale.append(c)
        elif old_weights != digests[c.model]:
            reweighed.append(c)  # same settings, but the model's weights changed: recompute
        else:
            done.append(c)
    if stale:
        raise BenchmarkError(
            f"{out_dir} already holds results computed with different settings for {len(stale)} cell(s) "
            f"(e.g. {stale[0].label}, in {cell_path(out_dir, stale[0])}); rerun with the settings they were "
            "computed with, or use a new --out folder")
    return done, reweighed, corrupt


def _manifest(cells, wls, config, compute_cell, model_specs, reweighed, corrupt, executor, default_pipeline):
    return dict(
        kit_version=kit_version(), started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        status="running", out_dir=config.out_dir, executor=executor,
        args=dict(models=[s for s, _, _ in model_specs], workloads=list(wls), **config.describe(),
                  batch_size=config.batch_size, device=config.device,
                  compute_cell=getattr(compute_cell, "__qualname__", "default")),
        bench_config=config.fingerprint(), versions=_versions(executor),
        workloads={n: dict(kind=w.kind, source=w.source, n_docs=len(w),
                           n_available=w.meta.get("n_available", len(w))) for n, w in wls.items()},
        cells=[dict(model=c.model, workload=c.workload, file=f"cells/{c.key}.parquet",
                    readout=f"readouts/{c.key}.npz" if default_pipeline and config.save_readouts else None)
               for c in cells],
        weights_changed=[c.label for c in reweighed], damaged_cells_recomputed=[c.label for c in corrupt])


def _execute(cells, wls, config, compute_cell, model_specs, *, executor, merge, progress, ray_address, ray_options,
             default_pipeline) -> pd.DataFrame:
    """Run the pending cells of the grid (under the folder's lock), then merge; see `run_benchmark`."""
    out_dir, fp, t_start = Path(config.out_dir), config.fingerprint(), time.time()
    tmp_folders = [out_dir, out_dir / "cells", out_dir / "readouts"]
    clean_stale_tmp(tmp_folders)
    digests = {spec: model_weights_digest(name, rev) for spec, name, rev in model_specs}
    done, reweighed, corrupt = _classify(cells, out_dir, fp, digests)
    pending = [c for c in cells if c not in done]
    manifest = _manifest(cells, wls, config, compute_cell, model_specs, reweighed, corrupt, executor,
                         default_pipeline)
    if merge:
        write_json_atomic(manifest, out_dir / "manifest.json")
    try:
        if pending:
            run = run_ray if executor == "ray" else _run_local
            extra = dict(address=ray_address, options=ray_options) if executor == "ray" else {}
            run(pending, wls, config, compute_cell, n_done=len(done), n_total=len(cells), progress=progress,
                out_dir=out_dir, **extra)
    except BaseException as exc:  # the manifest must not keep saying "running"
        if merge:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            manifest.update(status=status, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            error=f"{type(exc).__name__}: {exc}")
            try:
                write_json_atomic(manifest, out_dir / "manifest.json")
            except OSError:
                pass
        raise
    finally:
        if default_pipeline:
            release_models()
    if not merge:
        return pd.concat([pd.read_parquet(cell_path(out_dir, c)) for c in cells], ignore_index=True, sort=False)
    return _merge(out_dir, cells, fp, manifest, len(done), tmp_folders, t_start)


def _merge(out_dir: Path, cells, fp: str, manifest: dict, n_done: int, tmp_folders, t_start) -> pd.DataFrame:
    """This grid's cells, then every other finished cell of the folder with the same settings: results files."""
    others, outdated = _other_cells(out_dir, cells, fp)
    if outdated:
        warnings.warn(f"{len(outdated)} earlier cell(s) in {out_dir / 'cells'} were computed from weights that "
                      f"have changed since and are left out of results.parquet (e.g. {outdated[0].name}); rerun "
                      "them to include them", stacklevel=3)
    frame = merge_cells(out_dir, cells, extra=others)
    write_parquet_atomic(frame, out_dir / "results.parquet")
    frame = pd.read_parquet(out_dir / "results.parquet")  # return exactly what a notebook will read
    write_csv_atomic(frame, out_dir / "results.csv")
    manifest["cells"] += [dict(model=str(f["model"].iloc[0]), workload=str(f["workload"].iloc[0]),
                               file=f"cells/{p.name}", readout=_readout_of(p)) for p, f in others]
    manifest.update(status="complete", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    n_rows=int(len(frame)), n_cells=len(cells) + len(others), n_resumed=n_done,
                    n_kept_from_earlier_runs=len(others), outdated_cells=[f"cells/{p.name}" for p in outdated])
    write_json_atomic(manifest, out_dir / "manifest.json")
    clean_stale_tmp(tmp_folders, before=t_start)  # whatever a killed earlier run left half-written
    return frame


def _readout_of(cell_file: Path) -> str | None:
    npz = cell_file.parent.parent / "readouts" / f"{cell_file.stem}.npz"
    return f"readouts/{npz.name}" if npz.exists() else None


def _other_cells(out_dir: Path, cells, fp: str):
    """Finished cells in out_dir/cells outside this grid computed with the same settings: (kept, outdated),
    kept as (path, frame) pairs, outdated (paths) when their model's weights changed since."""
    mine = {cell_path(out_dir, c).name for c in cells}
    kept, outdated = [], []
    for p in sorted((out_dir / "cells").glob("*.parquet")):
        if p.name in mine:
            continue
        try:
            f = pd.read_parquet(p)
        except Exception:  # noqa: BLE001 - unreadable: not a finished cell
            continue
        if not len(f) or "bench_config" not in f.columns or str(f["bench_config"].iloc[0]) != fp:
            continue
        name, rev = parse_model(str(f["model"].iloc[0]))
        old = f["weights_digest"].iloc[0] if "weights_digest" in f.columns else None
        if old == model_weights_digest(name, rev):
            kept.append((p, f))
        else:
            outdated.append(p)
    return kept, outdated


def merge_cells(out_dir, cells, extra=()) -> pd.DataFrame:
    """Concatenate the cell files of `cells` (in grid order), then the (path, frame) pairs of `extra`."""
    parts = [pd.read_parquet(cell_path(out_dir, c)) for c in cells] + [f for _, f in extra]
    return parquet_safe(pd.concat(parts, ignore_index=True, sort=False))


def load_results(out_dir) -> pd.DataFrame:
    """The merged results of a finished benchmark folder."""
    path = Path(out_dir) / "results.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the benchmark has not finished (rerun it to resume)")
    return pd.read_parquet(path)


def _run_local(pending, wls, config, compute_cell, *, n_done, n_total, progress, out_dir):
    bar = progress_bar(progress, n_total, n_done)
    finished = n_done
    try:
        for cell in pending:
            bar.set_postfix_str(cell.label)
            try:
                run_cell(cell, wls[cell.workload], config, compute_cell)
            except KeyboardInterrupt:
                print(f"\ninterrupted in cell {cell.label}; it left no file. {resume_hint(out_dir, finished)}",
                      file=sys.stderr)
                raise
            except Exception as exc:
                raise CellFailed(f"cell {cell.label} failed: {type(exc).__name__}: {exc}. "
                                 f"{failure_hint(exc, out_dir, finished)}", [cell]) from exc
            finished += 1
            bar.update(1)
    finally:
        bar.close()
