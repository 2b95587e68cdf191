"""Colab support, generated from one place: the repository URL in pyproject.toml.

Every notebook starts with an install cell that, on Google Colab only, clones the repository (the
embedded zoo comes with it), installs the kit and moves into ``notebooks/`` (so the series' relative
paths work as in a local checkout); anywhere else it does nothing. On Colab the kit is installed
without the ``notebooks`` extra: Colab ships its own Jupyter stack (ipykernel, ipywidgets 7, its own
front end), and upgrading it under a running kernel (ipywidgets>=8, jupyterlab>=4, ipykernel>=6) is
what breaks Colab notebooks; the notebooks need only the core dependencies plus the core widgets
Colab already has. Extras a notebook does need are listed in ``EXTRAS``. The README carries one
"Open in Colab" badge per notebook. Both are written by this module, never by hand:

    python -m eeutils.notebook.colab          # insert/update the cell in every notebook, refresh README badges
    python -m eeutils.notebook.colab --check  # exit 1 if a notebook or the README is out of date

The sync is idempotent: a notebook already carrying the current cell first is left byte-identical.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
README = REPO_ROOT / "README.md"
CELL_ID = "colab-setup"
CELL_TAG = "colab-setup"
BRANCH = "main"
CLONE_DIR = "/content/eeutils"
DEFAULT_EXTRAS: tuple[str, ...] = ()
EXTRAS = {"10": ("data",)}  # notebook 10 invites hub models and `datasets` workloads
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGES_START, BADGES_END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"


def repository_url(pyproject: Path | None = None) -> str:
    """``[project.urls] Repository`` from pyproject.toml (the one definition of the URL)."""
    path = pyproject or REPO_ROOT / "pyproject.toml"
    try:
        import tomllib  # Python >= 3.11

        url = tomllib.loads(path.read_text())["project"].get("urls", {}).get("Repository")
    except ImportError:  # Python 3.10: the one line is enough
        m = re.search(r'^Repository\s*=\s*"([^"]+)"', path.read_text(), re.M)
        url = m and m.group(1)
    if not url:
        raise KeyError(f"{path}: add `Repository = \"https://github.com/OWNER/NAME\"` under [project.urls]")
    return url.rstrip("/")


def github_slug(url: str) -> str:
    """"owner/name" of a GitHub URL (Colab opens notebooks from GitHub by this path)."""
    m = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?", url)
    if not m:
        raise ValueError(f"not a GitHub repository URL: {url!r} (Colab badges need https://github.com/OWNER/NAME)")
    return m.group(1)


def install_cell_source(notebook: str | Path, url: str | None = None) -> str:
    """The first cell of `notebook` (a file name like ``01_logit_lens.ipynb``)."""
    url = url or repository_url()
    extras = EXTRAS.get(Path(notebook).name[:2], DEFAULT_EXTRAS)
    target = "REPO_DIR" + (f' + "[{",".join(extras)}]"' if extras else "")
    return f'''# Google Colab set-up: installs the kit on Colab, does nothing anywhere else.
# (written by `python -m eeutils.notebook.colab`: edit the generator, not this cell)
import os, subprocess, sys
try:
    import google.colab  # noqa: F401  (only importable on Colab)
    ON_COLAB = True
except ImportError:
    ON_COLAB = False
if ON_COLAB:
    REPO_DIR = "{CLONE_DIR}"
    if not os.path.isdir(REPO_DIR):  # the code, the notebooks and the embedded zoo of models
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{BRANCH}", "{url}", REPO_DIR], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", {target}], check=True)
    sys.path.insert(0, REPO_DIR)  # an editable install is only seen by new interpreters
    os.chdir(REPO_DIR + "/notebooks")  # relative paths (OUT_DIR = "../results") as in a local checkout'''


def colab_link(notebook: str | Path, url: str | None = None) -> str:
    return (f"https://colab.research.google.com/github/{github_slug(url or repository_url())}/blob/{BRANCH}/"
            f"notebooks/{Path(notebook).name}")


def badges_markdown(notebooks: list[Path], url: str | None = None) -> str:
    """One "Open in Colab" badge per notebook, as a Markdown table."""
    url = url or repository_url()
    rows = ["| notebook | open |", "|---|---|"]
    rows += [f"| `{p.stem}` | [![Open In Colab]({BADGE})]({colab_link(p, url)}) |" for p in notebooks]
    return "\n".join(rows)


def list_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _is_install_cell(cell) -> bool:
    return cell.get("id") == CELL_ID or CELL_TAG in cell.get("metadata", {}).get("tags", [])


def sync_notebook(path: Path, url: str | None = None, write: bool = True) -> bool:
    """Make the current install cell the notebook's first cell (removing stale copies). True if changed."""
    import nbformat

    raw = path.read_text(encoding="utf-8")
    nb = nbformat.reads(raw, as_version=4)
    cell = nbformat.v4.new_code_cell(install_cell_source(path, url), id=CELL_ID)
    cell.metadata["tags"] = [CELL_TAG]
    nb.cells = [cell] + [c for c in nb.cells if not _is_install_cell(c)]
    text = nbformat.writes(nb) + "\n"
    if text == raw:
        return False
    if write:
        path.write_text(text, encoding="utf-8")
    return True


def sync_readme(notebooks: list[Path], url: str | None = None, readme: Path = README, write: bool = True) -> bool:
    """Replace the text between the badge markers in the README. True if changed."""
    text = readme.read_text(encoding="utf-8")
    if BADGES_START not in text or BADGES_END not in text:
        raise ValueError(f"{readme}: add the markers {BADGES_START} and {BADGES_END} where the badges go")
    head, rest = text.split(BADGES_START, 1)
    _, tail = rest.split(BADGES_END, 1)
    new = f"{head}{BADGES_START}\n{badges_markdown(notebooks, url)}\n{BADGES_END}{tail}"
    if new == text:
        return False
    if write:
        readme.write_text(new, encoding="utf-8")
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eeutils.notebook.colab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is out of date")
    args = ap.parse_args(argv)
    url, notebooks = repository_url(), list_notebooks()
    stale = [p.name for p in notebooks if sync_notebook(p, url, write=not args.check)]
    if sync_readme(notebooks, url, write=not args.check):
        stale.append(README.name)
    verb = "out of date" if args.check else "updated"
    print(f"{verb}: {', '.join(stale)}" if stale else "all notebooks and the README are up to date")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
