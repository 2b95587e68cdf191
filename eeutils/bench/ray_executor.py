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


def run_ray(pending, wls, config, compute_cell, *, n_done, n_total, address, options, progress, out_dir):
    ray = import_ray()
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
    bar = progress_bar(progress, n_total, n_done)
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
              f"{resume_hint(out_dir, finished)}", file=sys.stderr)
        raise
    finally:
        bar.close()
        if own:
            ray.shutdown()
    if failures:
        lines = "; ".join(f"{c.label}: {type(e).__name__}: {e}" for c, e in failures)
        exc = CellFailed(f"{len(failures)} of {len(pending)} cell(s) failed on Ray ({lines}). "
                         f"{failure_hint(failures[0][1], out_dir, finished)}", [c for c, _ in failures])
        raise exc from failures[0][1]
