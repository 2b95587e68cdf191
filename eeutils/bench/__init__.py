"""Benchmark: models x workloads, one resumable, atomically written result file per cell.

Modules: `config` (settings, cells, errors), `validation` (argument checks), `pipeline` (the default
cell: readout -> rows; its atomic file), `runner` (run_benchmark, merge), `ray_executor`, `cli`.

    from eeutils.bench import run_benchmark
    frame = run_benchmark(["zoo/dense-mid", "zoo/moe-mid"], ["zoo-prose", "zoo-task"], "runs/bench")

or from a shell: ``eeutils bench --models zoo/dense-mid zoo/moe-mid --workloads zoo-prose zoo-task --out runs/bench``.

The settings are two frozen dataclasses: `BenchConfig` (what the cells compute; its fingerprint stamps every
cell) and `RunOptions` (how the run executes: executor, merge, compute_cell, ...). Pass them, or any of
their fields as keywords: ``run_benchmark(models, workloads, out, config=BenchConfig(budget=0.1), merge=False)``.

What one cell does (the default `compute_cell`)
-----------------------------------------------
1. Load the model (one model stays cached across its workloads; cells run model by model).
2. Read out every layer on the workload (`eeutils.lens.readout.readout`) and save the `Readout` to
   ``out_dir/readouts/<model>__<workload>.npz`` for notebooks. An interrupted cell whose readout was
   already saved reuses it on the rerun (checked against `eeutils.lens.cache.readout_key`: a digest of the
   model's weights, the documents and every readout setting).
3. Turn it into tidy rows, ``row_type`` saying which kind:
   - ``tradeoff``: one row per (rule, threshold) from `eeutils.exits.tradeoff`;
   - ``eas``: one row per similarity, EAS with its ceiling, normalised value and a bootstrap
     interval over documents (`eeutils.metrics.bootstrap_eas`; sampling noise of the text only);
   - ``max_skip``: one row per rule from `eeutils.exits.max_skip_under_budget` (largest skip ratio
     whose relative accuracy loss stays within ``budget``; simulated, no wall-clock), including the
     budget oracle at ``budget`` (the most any per-token exit could save) and the saturation oracle
     (zero loss); with ``n_boot`` > 0, each row's loss has a paired document-bootstrap interval,
     McNemar's exact p (exact-match workloads) and ``budget_met_ci``. ``skip_over`` says whether
     skip ratios average over answer tokens (answer-scored workloads) or all tokens.
   Every row carries the metadata: model, revision, family, n_layers, params_total, params_active,
   workload, workload_kind, kit_version, timestamp, bench_config (a digest of the settings) and
   weights_digest (of the model's weight, config and tokenizer files, `eeutils.lens.cache`).

Files under ``out_dir``
-----------------------
- ``cells/<safe-model>__<workload>.parquet``: one per finished cell, written to a temporary file
  and moved into place with `os.replace`, so a cell is finished iff its file exists. A rerun with the
  same settings skips finished cells (resume); an interrupted or failed cell leaves nothing behind.
  A rerun with different settings into the same folder is refused (use a new folder); a cell whose
  model's weights changed since (same settings, new weights_digest) is recomputed, never reused.
- ``readouts/<safe-model>__<workload>.npz``: the readouts (default pipeline only).
- ``results.parquet`` and ``results.csv``: this run's cells, then every other finished cell of the folder
  computed with the same settings and current weights (a smaller grid loses nothing), written atomically.
- ``manifest.json``: arguments, settings, package versions, cells and their files; status ``running``,
  ``complete``, ``failed`` or ``interrupted`` (with the error). A successful run removes temporary files
  that killed runs left behind.

Executors
---------
- ``executor="local"`` (default): cells run one after another in this process; the first failure
  stops the run (finished cells stay) and raises `CellFailed`, whose message says a rerun resumes, or, for
  a failure a rerun cannot cure (an unloadable model, bad arguments), to fix the cause first.
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
from .config import DEFAULT_SIMILARITIES, EXECUTORS, META_COLUMNS, BenchConfig, BenchmarkError, Cell, CellFailed, \
    RunOptions, kit_version, parse_model, safe_name
from .pipeline import cell_path, cell_readout, cell_rows, default_compute_cell, readout_path, release_models, run_cell
from .runner import load_results, merge_cells, run_benchmark
from .validation import check_model

__all__ = ["BenchConfig", "BenchmarkError", "Cell", "CellFailed", "DEFAULT_SIMILARITIES", "EXECUTORS", "META_COLUMNS",
           "RunOptions", "cell_path", "cell_readout", "cell_rows", "check_model", "default_compute_cell", "kit_version",
           "load_results", "merge_cells", "parse_model", "readout_path", "release_models", "run_benchmark", "run_cell",
           "safe_name"]
