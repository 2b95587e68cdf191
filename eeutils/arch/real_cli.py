"""Command line of the real-model registry: ``python -m eeutils.arch.real_cli list | convert --all | verify NAME | cards``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .real import (CARDS_ROOT, REAL_MODELS, RealModel, RealModelError, RealModelNotInstalled,
                               cache_folder, check_folder, installed_versions, list_real, real_spec, resolve_real)


def card_dict(spec: RealModel) -> dict:
    """The registry row as stored in ``data/real/<name>/card.json``."""
    d = asdict(spec)
    d.update(packages=list(spec.packages), kind=spec.kind, load=f"load_model('real/{spec.name}')",
             dtype_in_kit="float32 (dequantised from the GGUF)")
    return d


def write_cards(root: Path = CARDS_ROOT) -> list[Path]:
    """(Re)write ``card.json`` of every real model from the registry."""
    paths = []
    for spec in REAL_MODELS.values():
        p = Path(root) / spec.name / "card.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(card_dict(spec), indent=2) + "\n")
        paths.append(p)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eeutils.arch.real_cli", description="Real GGUF LLMs: list, convert once into $EEUTILS_CACHE, verify")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="registered real models and whether they are installed/converted")
    c = sub.add_parser("convert", help="convert once into $EEUTILS_CACHE (skips what is already converted)")
    c.add_argument("names", nargs="*")
    c.add_argument("--all", action="store_true", help="every registered model")
    c.add_argument("--skip-missing", action="store_true", help="skip models whose packages are not installed")
    v = sub.add_parser("verify", help="re-hash a converted folder")
    v.add_argument("names", nargs="+")
    sub.add_parser("cards", help="rewrite data/real/*/card.json from the registry")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for n in list_real():
            spec = REAL_MODELS[n]
            try:
                installed_versions(spec)
                inst = "installed"
            except RealModelNotInstalled:
                inst = f"not installed ({spec.install})"
            conv = "converted" if check_folder(cache_folder(spec), spec) is None else "not converted"
            print(f"{n:24s} {spec.quantisation:7s} {spec.kind:24s} {inst}; {conv}")
        return 0
    if args.cmd == "cards":
        for p in write_cards():
            print(p)
        return 0
    names = list_real() if getattr(args, "all", False) else args.names
    if not names:
        ap.error("name a model or pass --all")
    status = 0
    for n in names:
        try:
            if args.cmd == "verify":
                folder = cache_folder(real_spec(n))
                reason = check_folder(folder, real_spec(n), full=True) if folder.is_dir() else "not converted"
                print(f"{n}: {'ok' if reason is None else reason} ({folder})")
                status |= reason is not None
            else:
                t0 = time.perf_counter()
                print(f"{n}: {resolve_real(n)} ({time.perf_counter() - t0:.1f} s)")
        except RealModelNotInstalled as err:
            if args.cmd == "convert" and args.skip_missing:
                print(f"{n}: skipped ({err})", file=sys.stderr)
                continue
            print(f"{n}: {err}", file=sys.stderr)
            status = 1
        except RealModelError as err:
            print(f"{n}: {err}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
