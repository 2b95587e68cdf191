"""Argument checks of the benchmark: everything is checked before any cell runs."""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import replace
from pathlib import Path

from ..analysis.similarity import SIMILARITY_KINDS
from ..core.zoo_store import is_zoo_name, resolve as resolve_zoo
from ..arch.real import RealModelError, installed_versions, is_real_name, real_spec
from ..arch.loading import parse_dtype
from ..core.checks import check_count, check_device, check_real
from ..core.env import hf_cache_dir, hf_offline
from ..core.io import write_json_atomic
from ..core.spec import local_folder_problem, looks_like_path
from ..workloads.types import Workload
from .config import EXECUTORS, BenchConfig, BenchmarkError, RunOptions
from .ray_executor import import_ray

SETTINGS_FILE = "settings.json"  # the settings every cell of the folder was computed with (its first run's)

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_model(name: str, revision: str | None = None) -> None:
    """Raise BenchmarkError if `name` cannot be a loadable model here (cheap: no weights are read).

    zoo/<name> must be in the zoo; real/<name> registered and its pip package installed (it is converted
    on first load); an existing path must be a folder with config.json and weight files (their contents
    are checked when the cell loads them, `eeutils.arch.folder`); a path-like
    name must exist; a hub id must be cached when offline (HF_HUB_OFFLINE=1). Online hub ids are not
    checked here (loading reports them).
    """
    if is_zoo_name(name):
        try:
            resolve_zoo(name[4:], revision)
        except Exception as err:  # noqa: BLE001 - ZooError and friends
            msg = str(err)
            if "zoo" not in msg:
                msg = f"unknown zoo model {name!r}{'@' + revision if revision else ''}: {msg}"
            raise BenchmarkError(msg) from err
        return
    if is_real_name(name):
        try:
            installed_versions(real_spec(name))
        except RealModelError as err:
            raise BenchmarkError(str(err)) from err
        if revision:
            raise BenchmarkError(f"{name!r} has no revisions; drop '@{revision}'")
        return
    path = Path(name).expanduser()
    if path.exists():
        problem = local_folder_problem(name)
        if problem:
            raise BenchmarkError(f"model {problem}")
        if revision is not None:
            raise BenchmarkError(f"model {name!r} is a local folder, which has no revisions (got @{revision}); "
                                 "pass the folder of that checkpoint instead")
        return
    if looks_like_path(name) or not _HUB_ID.match(name):
        raise BenchmarkError(f"model {name!r}: no such local folder (and not a hub id like 'org/model'); "
                             "for an embedded model use zoo/<name> (see `eeutils zoo list`)")
    if hf_offline():
        cached = None
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(name, "config.json", cache_dir=hf_cache_dir(), revision=revision)
        except Exception:  # noqa: BLE001
            cached = None
        if not isinstance(cached, str):
            raise BenchmarkError(
                f"model {name!r}{'@' + revision if revision else ''} is neither a local folder nor in the Hugging Face "
                f"cache ({hf_cache_dir()}), and HF_HUB_OFFLINE is set: download it once online "
                f"(`hf download {name}`), pass a local folder, or use a zoo model such as zoo/dense-mid")


def _check_fraction(name, value, hi_open: bool):
    hint = " (a relative accuracy loss, e.g. 0.05 for 5%)" if name == "budget" else ""
    try:
        check_real(name, value, 0, 1, hi_open=hi_open, hint=hint)
    except (TypeError, ValueError) as err:
        raise BenchmarkError(str(err)) from None


def _check_int(name, value, minimum, allow_none=True):
    try:
        check_count(name, value, minimum, allow_none=allow_none)
    except ValueError as err:
        raise BenchmarkError(str(err)) from None


# (setting, minimum, None allowed) of the integer settings
_INT_SETTINGS = (("n_docs", 1, True), ("max_tokens", 1, True), ("max_chars", 1, True), ("n_boot", 0, False),
                 ("seed", 0, False), ("k", 2, False), ("batch_size", 1, False))


def check_run(config: BenchConfig, options: RunOptions, out_dir) -> tuple[BenchConfig, RunOptions, Path]:
    """(config, options, out_dir) checked and normalised (numbers as float/int, similarities as a tuple,
    out_dir a Path recorded in config, check_models decided), or BenchmarkError naming the first bad one."""
    _check_fraction("budget", config.budget, hi_open=True)
    _check_fraction("alpha", config.alpha, hi_open=False)
    for name, minimum, allow_none in _INT_SETTINGS:
        _check_int(name, getattr(config, name), minimum, allow_none)
    check_load_options(config.dtype, config.device)
    _check_options(options)
    if out_dir is None or not str(out_dir).strip():
        raise BenchmarkError("out_dir must be a folder path")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchmarkError(f"out_dir {out_dir} exists and is a file, not a folder; pick another --out")
    config = replace(config, budget=float(config.budget), alpha=float(config.alpha),
                     similarities=_check_similarities(config.similarities), n_boot=int(config.n_boot),
                     seed=int(config.seed), k=int(config.k), batch_size=int(config.batch_size),
                     out_dir=str(out_dir), progress=bool(config.progress), save_readouts=bool(config.save_readouts))
    if options.check_models is None:
        options = replace(options, check_models=options.default_pipeline)
    return config, options, out_dir


def _check_options(options: RunOptions) -> None:
    if options.executor not in EXECUTORS:
        raise BenchmarkError(f"executor must be one of {EXECUTORS}, got {options.executor!r}")
    if options.executor == "ray":
        import_ray()
        if options.ray_options is not None and not isinstance(options.ray_options, dict):
            raise BenchmarkError(f"ray_options must be a dict of Ray task options, got {options.ray_options!r}")
    if options.compute_cell is not None and not callable(options.compute_cell):
        raise BenchmarkError("compute_cell must be a callable (cell, workload, config) -> DataFrame")


def check_load_options(dtype, device) -> None:
    """BenchmarkError, before any cell runs, for a dtype or device the loader would refuse (a device this
    machine does not have: the message lists those it has)."""
    try:
        parse_dtype(dtype)
        check_device("device", device)
    except (TypeError, ValueError) as err:
        raise BenchmarkError(str(err)) from None


def check_out_dir(out_dir: Path) -> None:
    """Create out_dir/cells and prove it writable, or raise BenchmarkError saying why it cannot be used."""
    if out_dir.exists() and not out_dir.is_dir():
        raise BenchmarkError(f"out_dir {out_dir} exists and is a file, not a folder; pick another --out")
    blocker = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise BenchmarkError(f"out_dir {out_dir} cannot be created: {blocker} is a file, not a folder; pick another --out")
    try:
        (out_dir / "cells").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir / "cells"):
            pass
    except OSError as err:
        raise BenchmarkError(f"out_dir {out_dir} cannot be written ({err.strerror or type(err).__name__}); "
                             "pick a folder you can write to with --out") from err


def as_list(x, what: str) -> list:
    """`x` as a non-empty list (a single name or Workload is a list of one), or BenchmarkError."""
    if isinstance(x, (str, Workload)):
        x = [x]
    try:
        out = list(x)
    except TypeError:
        raise BenchmarkError(f"{what} must be a list, got {type(x).__name__}") from None
    if not out:
        raise BenchmarkError(f"no {what} given")
    return out


def _check_similarities(similarities) -> tuple:
    if isinstance(similarities, str):
        similarities = (similarities,)
    sims = tuple(similarities or ())
    if not sims:
        raise BenchmarkError("similarities must name at least one similarity, e.g. ('logit_cos', 'top1')")
    bad = [s for s in sims if s not in SIMILARITY_KINDS]
    if bad:
        raise BenchmarkError(f"unknown similarity {bad}; choose from {sorted(SIMILARITY_KINDS)}")
    return sims


def folder_settings(out_dir: Path) -> tuple[str, dict] | None:
    """(fingerprint, settings) the folder's results were computed with: settings.json, else (older folders)
    manifest.json's; None for a new folder. A file that cannot be read is a BenchmarkError naming it."""
    for name, fp_key, settings_key in ((SETTINGS_FILE, "bench_config", "settings"),
                                       ("manifest.json", "bench_config", "args")):
        path = out_dir / name
        if not path.exists():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return str(record[fp_key]), dict(record[settings_key])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise BenchmarkError(f"{path} is damaged ({type(err).__name__}: {err}), so the settings of the results "
                                 f"in {out_dir} are unknown; restore it, or use a new --out folder") from err
    return None


def check_settings(out_dir: Path, config: BenchConfig) -> None:
    """BenchmarkError naming each setting that differs from those the folder's results were computed with;
    records them (settings.json) when the folder has none yet."""
    fp, now = config.fingerprint(), config.describe()
    recorded = folder_settings(out_dir)
    if recorded is None:
        write_json_atomic({"bench_config": fp, "settings": now}, out_dir / SETTINGS_FILE)
        return
    old_fp, old = recorded
    if old_fp == fp:
        return
    diff = [f"{k}={old.get(k)!r} there, {v!r} now" for k, v in now.items() if old.get(k, v) != v] or \
        [f"settings digest {old_fp} there, {fp} now"]
    empty = "" if any((out_dir / "cells").glob("*.parquet")) else \
        f" (it has no finished cell yet: deleting {out_dir / SETTINGS_FILE} lets it start over with new settings)"
    raise BenchmarkError(f"{out_dir} holds results computed with different settings ({'; '.join(diff)}); a folder "
                         f"holds one setting's results: rerun with its settings, or use a new --out folder{empty}")
