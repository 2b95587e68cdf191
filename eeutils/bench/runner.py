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

import pandas as pd

from ..core.io import LockHeld, clean_stale_tmp, file_lock, parquet_safe, write_csv_atomic, write_json_atomic, \
    write_parquet_atomic
from ..workloads.registry import get_workload
from ..workloads.types import Workload, WorkloadUnavailable
from .config import BenchConfig, BenchmarkError, Cell, CellFailed, RunOptions, kit_version, parse_model, safe_name, \
    split_settings
from ..lens.cache import model_weights_digest
from .pipeline import cell_path, cell_stamp, failure_hint, progress_bar, release_models, resume_hint, run_cell
from .ray_executor import run_ray
from .validation import as_list, check_model, check_out_dir, check_run, check_settings

LOCK_FILE = ".eeutils-bench.lock"  # held by a run for its whole length: exclusive, shared by --no-merge jobs


def _resolve_workloads(workloads, n_docs, max_chars, seed) -> dict[str, Workload]:
    out: dict[str, Workload] = {}
    for w in as_list(workloads, "workloads"):
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
    for m in as_list(models, "models"):
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


def run_benchmark(models, workloads, out_dir, *, config: BenchConfig | None = None,
                  options: RunOptions | None = None, **settings) -> pd.DataFrame:
    """Run every (model, workload) cell into `out_dir`, resuming finished cells; return the merged frame.

    models: hub ids ("EleutherAI/pythia-70m", with "@revision" for a checkpoint), local folders or
    zoo names ("zoo/dense-mid"). workloads: registered names (see `eeutils.workloads.list_workloads`)
    or `Workload` objects. config: what the cells compute (`BenchConfig`: budget, alpha, similarities,
    rules, n_docs, max_tokens, ...; its out_dir is this `out_dir`); options: how the run executes
    (`RunOptions`: executor, merge, compute_cell, check_models, ray_address, ray_options). Any field of
    either can be given as a keyword instead and overrides it: ``run_benchmark(models, workloads, out,
    budget=0.1, merge=False)``; an unknown keyword is a TypeError naming it. The two classes' docstrings
    say what each setting means.

    Every setting is checked, and every workload loaded, before the first cell runs.
    """
    config, options = split_settings(config, options, settings)
    config, options, out_dir = check_run(config, options, out_dir)
    model_specs = _model_specs(models, options.check_models)
    wls = _resolve_workloads(workloads, config.n_docs, config.max_chars, config.seed)
    cells = _grid(model_specs, wls)
    check_out_dir(out_dir)
    with _lock_folder(out_dir, shared=not options.merge):
        check_settings(out_dir, config)
        return _execute(cells, wls, model_specs, config, options)


def _lock_folder(out_dir: Path, shared: bool) -> ExitStack:
    """The folder's lock, held by the returned stack: exclusive, or shared by the --no-merge jobs of one grid."""
    lock = ExitStack()
    try:
        lock.enter_context(file_lock(out_dir / LOCK_FILE, shared=shared))
    except LockHeld as err:
        raise BenchmarkError(
            f"{out_dir} is in use by another eeutils bench run ({err}): two runs in one --out would mix their "
            "results. Wait for it to finish, or use another --out (jobs of one grid share a folder with "
            "--no-merge; a killed run's lock is released by the system, its leftover file is harmless)") from None
    return lock


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


def _manifest(cells, wls, model_specs, config, options: RunOptions, reweighed, corrupt) -> dict:
    """The run's record: arguments, settings, versions, workloads and cells (status "running")."""
    readouts = options.default_pipeline and config.save_readouts
    return dict(
        kit_version=kit_version(), started=_now(), status="running", out_dir=config.out_dir,
        executor=options.executor,
        args=dict(models=[s for s, _, _ in model_specs], workloads=list(wls), **config.describe(),
                  batch_size=config.batch_size, device=config.device,
                  compute_cell=getattr(options.compute_cell, "__qualname__", "default")),
        bench_config=config.fingerprint(), versions=_versions(options.executor),
        workloads={n: dict(kind=w.kind, source=w.source, n_docs=len(w),
                           n_available=w.meta.get("n_available", len(w))) for n, w in wls.items()},
        cells=[dict(model=c.model, workload=c.workload, file=f"cells/{c.key}.parquet",
                    readout=f"readouts/{c.key}.npz" if readouts else None) for c in cells],
        weights_changed=[c.label for c in reweighed], damaged_cells_recomputed=[c.label for c in corrupt])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _execute(cells, wls, model_specs, config: BenchConfig, options: RunOptions) -> pd.DataFrame:
    """Run the pending cells of the grid (under the folder's lock), then merge; see `run_benchmark`."""
    out_dir, fp, t_start = Path(config.out_dir), config.fingerprint(), time.time()
    tmp_folders = [out_dir, out_dir / "cells", out_dir / "readouts"]
    clean_stale_tmp(tmp_folders)
    digests = {spec: model_weights_digest(name, rev) for spec, name, rev in model_specs}
    done, reweighed, corrupt = _classify(cells, out_dir, fp, digests)
    pending = [c for c in cells if c not in done]
    manifest = _manifest(cells, wls, model_specs, config, options, reweighed, corrupt)
    if options.merge:
        write_json_atomic(manifest, out_dir / "manifest.json")
    try:
        if pending:
            run = run_ray if options.executor == "ray" else _run_local
            run(pending, wls, config, options, n_done=len(done), n_total=len(cells))
    except BaseException as exc:  # the manifest must not keep saying "running"
        if options.merge:
            _record_failure(manifest, out_dir, exc)
        raise
    finally:
        if options.default_pipeline:
            release_models()
    if not options.merge:
        return pd.concat([pd.read_parquet(cell_path(out_dir, c)) for c in cells], ignore_index=True, sort=False)
    return _merge(out_dir, cells, fp, manifest, len(done), tmp_folders, t_start)


def _record_failure(manifest: dict, out_dir: Path, exc: BaseException) -> None:
    """The manifest says the run failed (or was interrupted) and why; best effort, the run is failing anyway."""
    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    manifest.update(status=status, finished=_now(), error=f"{type(exc).__name__}: {exc}")
    try:
        write_json_atomic(manifest, out_dir / "manifest.json")
    except OSError:
        pass


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
    manifest.update(status="complete", finished=_now(),
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


def _run_local(pending, wls, config: BenchConfig, options: RunOptions, *, n_done: int, n_total: int) -> None:
    """The pending cells one after another in this process; the first failure stops the run (CellFailed)."""
    out_dir = Path(config.out_dir)
    bar = progress_bar(config.progress, n_total, n_done)
    finished = n_done
    try:
        for cell in pending:
            bar.set_postfix_str(cell.label)
            try:
                run_cell(cell, wls[cell.workload], config, options.compute_cell)
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
