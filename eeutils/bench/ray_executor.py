"""The Ray executor of the benchmark: one task per pending cell, each writing its own cell file atomically."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .config import BenchmarkError, CellFailed
from .pipeline import failure_hint, progress_bar, resume_hint, run_cell


def _ray_cell(cell, workload, config, compute_cell):
    return str(run_cell(cell, workload, config, compute_cell))


def import_ray():
    try:
        import ray
    except ImportError as err:
        raise BenchmarkError("executor='ray' needs Ray: pip install 'eeutils[ray]' (or pip install ray); "
                             "or use executor='local'") from err
    return ray


def run_ray(pending, wls, config, options, *, n_done: int, n_total: int) -> None:
    """One Ray task per pending cell (`options`: a `RunOptions`, its ray_address and ray_options); failed
    cells are reported together (CellFailed) after the others finish, an interrupt cancels the rest."""
    ray = import_ray()
    own = not ray.is_initialized()
    if own:
        ray.init(address=options.ray_address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 ignore_reinit_error=True)
    task = ray.remote(_ray_cell).options(**_task_options(options.ray_options))
    out_dir = Path(config.out_dir)
    bar = progress_bar(config.progress, n_total, n_done)
    progress = {"finished": n_done, "remaining": []}
    try:
        refs = {task.remote(cell, wls[cell.workload], config, options.compute_cell): cell for cell in pending}
        failures = _wait_all(ray, refs, bar, progress)
    except KeyboardInterrupt:
        _cancel(ray, progress["remaining"])
        print(f"\ninterrupted; cells still running were cancelled and left no file. "
              f"{resume_hint(out_dir, progress['finished'])}", file=sys.stderr)
        raise
    finally:
        bar.close()
        if own:
            ray.shutdown()
    if failures:
        lines = "; ".join(f"{c.label}: {type(e).__name__}: {e}" for c, e in failures)
        exc = CellFailed(f"{len(failures)} of {len(pending)} cell(s) failed on Ray ({lines}). "
                         f"{failure_hint(failures[0][1], out_dir, progress['finished'])}", [c for c, _ in failures])
        raise exc from failures[0][1]


def _task_options(options: dict | None) -> dict:
    """Each cell task's Ray options (default one CPU), with a PYTHONPATH that lets workers import eeutils."""
    opts = dict(options or {"num_cpus": 1})
    if "runtime_env" not in opts:
        # workers must import eeutils even when it is not installed (a source checkout): put the
        # package's parent folder on their PYTHONPATH (a folder that does not exist on a node is ignored)
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        pypath = os.pathsep.join(p for p in (pkg_parent, os.environ.get("PYTHONPATH", "")) if p)
        opts["runtime_env"] = {"env_vars": {"PYTHONPATH": pypath}}
    return opts


def _wait_all(ray, refs: dict, bar, progress: dict) -> list:
    """Wait for every task, counting finished cells in `progress` (and keeping its "remaining" refs current,
    for cancelling on an interrupt); the (cell, exception) of each failed one."""
    failures = []
    progress["remaining"] = list(refs)
    while progress["remaining"]:
        ready, progress["remaining"] = ray.wait(progress["remaining"], num_returns=1)
        for ref in ready:
            try:
                ray.get(ref)
                progress["finished"] += 1
                bar.update(1)
            except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the cell's exception
                failures.append((refs[ref], getattr(exc, "cause", None) or exc))
    return failures


def _cancel(ray, refs) -> None:
    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:  # noqa: BLE001
            pass
