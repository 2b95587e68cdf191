"""Run the whole notebook series headlessly (papermill) and gather its outputs in one folder.

    python -m eeutils.series --out results            # the kit's main job, on the embedded zoo
    python -m eeutils.series --out r --smoke          # a quick pass with few tokens
    python -m eeutils.series --preset paper --out r   # the paper's hub models (online, GPU)
    EEUTILS_MODELS=gpt2,EleutherAI/pythia-160m python -m eeutils.series --only 01 02 03

The output folder gets: notebooks/ (executed), html/ (nbconvert), figures/ (PNG), results/
(tidy tables the notebooks write), findings/ (records) and findings.md / findings.csv.

Resuming: `series-state.json` in the output folder records each notebook as it finishes. A run that was
interrupted (killed, or stopped with Ctrl-C) and is started again with the same settings and the same kit
and notebook sources skips the notebooks it finished and runs the rest; a finished run is rerun whole.
Bad arguments (an unknown notebook number or preset, a preset that is not valid JSON, an output path that is a
file) raise `SeriesError` (a ValueError; the command line prints one line and exits 2) before anything is created.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..core.io import write_json_atomic
from ..core.resources import data_path, repo_root
from .findings_view import write_findings_table
from .records import check_records

PRESET_DIR = data_path("presets")
STATE_FILE = "series-state.json"


class SeriesError(ValueError):
    """The series cannot run with these arguments; the message says what to change."""


def notebook_dir() -> Path:
    """The notebooks/ folder of the source checkout (the series runs from a checkout, not a wheel)."""
    root = repo_root()
    if root is None or not (root / "notebooks").is_dir():
        raise SeriesError("the notebook series runs from a source checkout of eeutils (its notebooks/ folder)")
    return root / "notebooks"


def list_notebooks(only=None) -> list[Path]:
    """The numbered notebooks, or those whose numbers are in `only` (e.g. ["1", "05"]); every number given
    must match one, else SeriesError listing the valid numbers."""
    nbs = sorted(notebook_dir().glob("[0-9][0-9]_*.ipynb"))
    if only:
        if isinstance(only, (str, int)):
            only = [only]
        wanted = {str(o).strip().zfill(2) for o in only}
        unknown = sorted(wanted - {p.name[:2] for p in nbs})
        if unknown:
            raise SeriesError(f"no notebook matches --only {' '.join(unknown)}; valid numbers: "
                              f"{' '.join(p.name[:2] for p in nbs)}")
        nbs = [p for p in nbs if p.name[:2] in wanted]
    return nbs


def load_preset(name_or_path: str) -> dict:
    """Per-notebook parameter overrides: {"*": {...}, "05": {...}} from data/presets/<name>.json or a path;
    SeriesError for an unknown name, a file that is not JSON, or keys that are not "*" or a notebook number
    ("_about" and other keys starting with "_" are comments)."""
    path = Path(name_or_path)
    if not path.exists():
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.exists():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
        raise SeriesError(f"unknown preset {name_or_path!r}; known: {known} (or pass a JSON file path)")
    try:
        preset = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SeriesError(f"preset {path} is not a readable JSON file ({type(err).__name__}: {err})") from None
    numbers = {p.name[:2] for p in list_notebooks()}
    if not isinstance(preset, dict):
        raise SeriesError(f"preset {path} must be a JSON object {{\"*\": {{...}}, \"05\": {{...}}}}, got a "
                          f"{type(preset).__name__}")
    for key, value in preset.items():
        if key.startswith("_"):
            continue
        if key != "*" and key not in numbers:
            raise SeriesError(f"preset {path}: key {key!r} is neither \"*\" nor a notebook number "
                              f"({' '.join(sorted(numbers))})")
        if not isinstance(value, dict):
            raise SeriesError(f"preset {path}: {key!r} must map parameter names to values, got {value!r:.60}")
    return preset


def declared_parameters(nb: Path) -> set[str]:
    """Names assigned in a notebook's `parameters` cell."""
    import papermill as pm

    return set(pm.inspect_notebook(str(nb)))


def parameters_for(nb: Path, out: Path, smoke: bool, models, preset: dict) -> dict:
    """The run's parameters for one notebook; shared ones ("*" in a preset, --models) only where declared."""
    declared = declared_parameters(nb)
    shared = {"OUT_DIR": str(out), "SMOKE": bool(smoke), "INTERACTIVE": False}
    shared.update(preset.get("*", {}))
    if models:
        shared["MODELS"] = list(models)
    params = {k: v for k, v in shared.items() if k in declared}
    params.update(preset.get(nb.name[:2], {}))  # explicit per-notebook values always pass (papermill warns if unknown)
    return params


def to_html(executed: Path, html_dir: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    html_dir.mkdir(parents=True, exist_ok=True)
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    dest = html_dir / (executed.stem + ".html")
    dest.write_text(body, encoding="utf-8")
    return dest


def _check_out(out) -> Path:
    """The output folder as an absolute path, or SeriesError when it is (or lies under) a file."""
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise SeriesError(f"--out must be a folder path, got {out!r}")
    out = Path(out).expanduser().resolve()
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise SeriesError(f"--out {out} cannot be used: {blocker} is a file, not a folder; pick another --out")
    return out


def sources_digest(notebooks) -> dict:
    """sha256 of the kit's code (every eeutils/*.py) and of each notebook: what a resumed run must share."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        h.update(f"{p.relative_to(pkg)}:".encode() + p.read_bytes())
    return {"kit": h.hexdigest(), **{nb.name: hashlib.sha256(nb.read_bytes()).hexdigest() for nb in notebooks}}


def _resumable(out: Path, settings: dict, sources: dict) -> dict:
    """The notebooks an interrupted run in `out` finished with these settings and sources: name -> seconds."""
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("finished") or state.get("settings") != settings \
            or state.get("kit") != sources["kit"]:
        return {}
    done = state.get("done") if isinstance(state.get("done"), dict) else {}
    return {name: rec["seconds"] for name, rec in done.items() if isinstance(rec, dict)
            and rec.get("source") == sources.get(name) and (out / "notebooks" / name).is_file()}


def run_series(out="results", smoke: bool = False, only=None, models=None, preset: str | None = None,
               html: bool = True, kernel: str = "python3") -> dict:
    """Run the notebooks (all, or `only` these numbers) headlessly into `out`; returns the run summary. Arguments
    are checked before anything is written; an interrupted run resumes (see the module docstring)."""
    import papermill as pm

    out = _check_out(out)
    notebooks = list_notebooks(only)
    preset_params = load_preset(preset) if preset else {}
    env_models = os.environ.get("EEUTILS_MODELS")
    if models is None and env_models:
        models = [m.strip() for m in env_models.split(",") if m.strip()]
    settings = {"smoke": bool(smoke), "models": models, "preset": preset_params, "kernel": kernel}
    sources = sources_digest(notebooks)
    done = _resumable(out, settings, sources)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    state = {"settings": settings, "kit": sources["kit"], "finished": False,
             "done": {n: {"seconds": s, "source": sources[n]} for n, s in done.items()}}
    write_json_atomic(state, out / STATE_FILE)
    timings, failed = {}, None
    load_start = _load_average()
    bar = tqdm(notebooks, desc="notebooks", unit="nb")
    for nb in bar:
        bar.set_postfix_str(nb.name)
        dest = out / "notebooks" / nb.name
        if nb.name in done:  # finished by the interrupted run this one resumes
            timings[nb.name] = done[nb.name]
            continue
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(dest), parameters=parameters_for(nb, out, smoke, models, preset_params),
                                kernel_name=kernel, cwd=str(notebook_dir()), progress_bar=False)
        except Exception as err:  # keep going: later notebooks do not depend on earlier ones
            failed = failed or []
            failed.append((nb.name, str(err).splitlines()[0] if str(err) else type(err).__name__))
        timings[nb.name] = round(time.perf_counter() - t0, 1)
        if not failed or failed[-1][0] != nb.name:
            state["done"][nb.name] = {"seconds": timings[nb.name], "source": sources[nb.name]}
            write_json_atomic(state, out / STATE_FILE)
        if html and dest.exists():
            to_html(dest, out / "html")
    md, csv = write_findings_table(out)
    problems = check_records(out)  # every protocol record recomputed from the table beside it
    if len(problems):
        problems.to_csv(out / "record_check.csv", index=False)
    summary = {"out": str(out), "smoke": smoke, "models": models, "preset": preset, "seconds": timings,
               "total_seconds": round(sum(timings.values()), 1), "failed": failed or [], "resumed": sorted(done),
               "findings": str(md), "record_check_problems": int(len(problems)),
               "load_average": {"start": load_start, "end": _load_average()}}
    (out / "run.json").write_text(json.dumps(summary, indent=2))
    write_json_atomic({**state, "finished": True}, out / STATE_FILE)
    return summary


def _load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages (None where the OS has none): a timing means little on a busy
    machine, so run.json keeps the load beside the seconds."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def budget_table(summary: dict) -> str:
    """The run's time budget as text: one line per notebook (seconds, share of the total, ok / FAILED), then the
    total; the lines docs/BUDGET.md asks for after a fresh-clone `make all`."""
    failed = {name for name, _ in summary.get("failed", [])}
    total = sum(summary["seconds"].values()) or 1.0
    lines = [f"  {'notebook':40s} {'seconds':>8s} {'share':>6s}  status"]
    for name, secs in summary["seconds"].items():
        lines.append(f"  {name:40s} {secs:8.1f} {secs / total:6.1%}  {'FAILED' if name in failed else 'ok'}")
    lines.append(f"  {'total':40s} {sum(summary['seconds'].values()):8.1f} {1:6.0%}")
    load = summary.get("load_average") or {}
    if load.get("start") and load.get("end"):
        lines.append(f"  load average (1/5/15 min) at start {load['start']}, at end {load['end']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eeutils.series", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results", help="output folder (default: results)")
    ap.add_argument("--smoke", action="store_true", help="tiny, fast parameters in every notebook")
    ap.add_argument("--only", nargs="+", help="notebook numbers to run, e.g. 01 05")
    ap.add_argument("--models", help="comma-separated models for notebooks that take a flat MODELS list "
                                     "(also EEUTILS_MODELS)")
    ap.add_argument("--preset", help="per-notebook parameters: a name in data/presets/ or a JSON path")
    ap.add_argument("--no-html", action="store_true")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    try:
        summary = run_series(args.out, smoke=args.smoke, only=args.only, models=models, preset=args.preset,
                             html=not args.no_html)
    except SeriesError as err:
        print(f"{ap.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"\nwrote {summary['out']} in {summary['total_seconds']:.0f} s; findings: {summary['findings']}")
    print(budget_table(summary))
    if summary["failed"]:
        print("FAILED notebooks (see the executed copies for the error cell):", file=sys.stderr)
        for name, err in summary["failed"]:
            print(f"  {name}: {err}", file=sys.stderr)
        return 1
    if summary["record_check_problems"]:
        print(f"{summary['record_check_problems']} finding record field(s) do not follow from their own tables: "
              f"{summary['out']}/record_check.csv", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
