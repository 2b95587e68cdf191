"""The ``eeutils`` console script.

    eeutils bench --models zoo/dense-mid zoo/moe-mid --workloads zoo-prose zoo-task --out runs/bench
    eeutils workloads            # list the registered workloads
    eeutils zoo list             # list the embedded zoo models

User errors (bad arguments, unknown models or workloads, a dataset not available offline) print one
line ``eeutils: error: ...`` and exit with status 2, without a traceback (``--debug`` shows it).
A failed cell exits 1, an interrupt 130; both say that rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from ..arch.loading import ModelLoadError
from ..core.zoo_store import zoo_table
from ..workloads.registry import list_workloads
from ..workloads.types import WorkloadUnavailable
from .config import BenchConfig, BenchmarkError, CellFailed, RunOptions
from .runner import run_benchmark


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eeutils", description="Early-exit kit: benchmark, workloads and the embedded model zoo.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser("bench", help="run the models x workloads benchmark (resumable)",
                       description="Run every (model, workload) cell into OUT; finished cells are skipped on "
                                   "a rerun. Results: OUT/results.parquet, OUT/results.csv, OUT/manifest.json.")
    b.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="zoo/<name>, a hub id (NAME@REVISION for a checkpoint) or a local model folder")
    b.add_argument("--workloads", nargs="+", required=True, metavar="WORKLOAD",
                   help="registered workload names (see `eeutils workloads`)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder (reuse it to resume)")
    b.add_argument("--budget", type=float, default=0.05,
                   help="relative accuracy loss allowed for the max-skip rows, in [0, 1) (default 0.05)")
    b.add_argument("--alpha", type=float, default=0.5, help="EAS alpha in [0, 1] (default 0.5)")
    b.add_argument("--similarities", nargs="+", default=None, metavar="KIND",
                   help="EAS similarity kinds (default: logit_cos top1 topk_overlap kl)")
    b.add_argument("--n-docs", type=int, default=None, help="documents per workload (deterministic subset)")
    b.add_argument("--max-chars", type=int, default=None, help="cut each document to this many characters")
    b.add_argument("--max-tokens", type=int, default=512, help="tokens per document (default 512)")
    b.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates for EAS intervals (0: none)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--k", type=int, default=5, help="top-k size of the readout (default 5)")
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16 or auto")
    b.add_argument("--device", default=None, help="cpu, cuda, ... (default: the loader's choice)")
    b.add_argument("--executor", choices=("local", "ray"), default="local")
    b.add_argument("--ray-address", default=None, help="address of a running Ray cluster (or set RAY_ADDRESS)")
    b.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per cell task on Ray (default 1)")
    b.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs per cell task on Ray (default 0)")
    b.add_argument("--no-merge", action="store_true",
                   help="only write cell files (one job of many sharing OUT); a final run without it merges")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("workloads", help="list the registered workloads")

    z = sub.add_parser("zoo", help="the embedded zoo of tiny trained models")
    zsub = z.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zsub.add_parser("list", help="list the zoo models")
    return parser


def _error(msg: str, code: int = 2) -> int:
    print(f"eeutils: error: {msg}", file=sys.stderr)
    return code


def _print_frame(frame) -> None:
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200,
                           "display.max_colwidth", 80):
        print(frame.to_string(index=False))


def _settings(args) -> tuple[BenchConfig, RunOptions]:
    """The run's settings from the command line: what the cells compute, and how the run executes."""
    sims = {"similarities": tuple(args.similarities)} if args.similarities else {}
    config = BenchConfig(budget=args.budget, alpha=args.alpha, n_docs=args.n_docs, max_chars=args.max_chars,
                         max_tokens=args.max_tokens, n_boot=args.n_boot, seed=args.seed, k=args.k,
                         batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                         progress=not args.no_progress, **sims)
    ray_options = None
    if args.executor == "ray":
        ray_options = {"num_cpus": args.ray_cpus}
        if args.ray_gpus:
            ray_options["num_gpus"] = args.ray_gpus
    options = RunOptions(executor=args.executor, merge=not args.no_merge, ray_address=args.ray_address,
                         ray_options=ray_options)
    return config, options


def _cmd_bench(args) -> int:
    config, options = _settings(args)
    frame = run_benchmark(args.models, args.workloads, args.out, config=config, options=options)
    where = f"{args.out}/results.parquet" if not args.no_merge else f"{args.out}/cells/"
    print(f"{len(frame)} rows -> {where}")
    if "row_type" in frame.columns and not args.no_merge:
        summary = frame[frame["row_type"] == "eas"]
        cols = [c for c in ("model", "workload", "similarity", "eas", "eas_lo", "eas_hi", "eas_normalised")
                if c in summary.columns]
        if len(summary) and cols:
            _print_frame(summary[cols].round(4))
    return 0


def _cmd_workloads(args) -> int:
    _print_frame(list_workloads())
    return 0


def _cmd_zoo(args, parser) -> int:
    if args.zoo_command != "list":
        return _error("usage: eeutils zoo list")
    table = zoo_table()
    if len(table):
        _print_frame(table)
    else:
        print("no zoo models built yet (build them with: python -m eeutils.zoo build)")
    return 0


_USER_ERRORS = (BenchmarkError, WorkloadUnavailable, ValueError, FileNotFoundError, ModelLoadError)


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a cell failed, 2 a user error, 130 interrupted)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "workloads":
            return _cmd_workloads(args)
        if args.command == "zoo":
            return _cmd_zoo(args, parser)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("eeutils: interrupted; rerun the same command to resume (finished cells are kept)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001
        if args.debug:
            raise
        if isinstance(exc, CellFailed):
            return _error(str(exc), 1)
        if isinstance(exc, _USER_ERRORS):
            return _error(str(exc), 2)
        if isinstance(exc, OSError) and args.command == "bench":  # a full disk, a folder made read-only meanwhile
            return _error(f"cannot write {exc.filename or args.out} ({exc.strerror or exc}); the results already in "
                          f"{args.out} are kept: free some space (or fix the permissions), then rerun the same "
                          "command to resume", 1)
        raise
    return _error(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
