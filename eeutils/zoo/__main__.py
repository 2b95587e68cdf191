"""``python -m eeutils.zoo build [--only NAME ...] [--force] [--workers N] [--threads N]`` | ``plan`` | ``list`` | ``table``."""
from __future__ import annotations

import argparse

from eeutils.zoo import list_revisions, list_zoo, write_zoo_markdown, zoo_markdown
from eeutils.zoo.build import build
from eeutils.zoo.plan import main as plan_main


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse reports anything else as a usage error naming the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m eeutils.zoo", description="Build or inspect the embedded zoo.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the zoo (finished models are skipped)")
    b.add_argument("--only", nargs="+", metavar="NAME", help="build only these recipes")
    b.add_argument("--force", action="store_true", help="rebuild even if finished")
    b.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker (default 1)")
    b.add_argument("--workers", type=positive_int, default=1,
                   help="models trained at once, each in its own process (default 1; 2 uses both cores here)")
    b.add_argument("--retrain-tokenizer", action="store_true",
                   help="retrain the tokenizer on the current corpus first (models built with another one are rebuilt)")
    b.add_argument("--no-progress", action="store_true")
    pl = sub.add_parser("plan", help="time and size estimate of the build from a short calibration run")
    pl.add_argument("--steps", type=positive_int, default=10, help="timed steps per distinct shape (default 10)")
    pl.add_argument("--workers", type=positive_int, default=2)
    pl.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    sub.add_parser("list", help="list built models and their revisions")
    sub.add_parser("table", help="print the zoo table and regenerate docs/ZOO.md")
    a = p.parse_args(argv)
    if a.cmd == "build":
        build(only=a.only, force=a.force, threads=a.threads, workers=a.workers, progress=not a.no_progress,
              retrain_tokenizer=a.retrain_tokenizer)
        write_zoo_markdown()
    elif a.cmd == "plan":
        plan_main(steps=a.steps, workers=a.workers, json_path=a.json)
    elif a.cmd == "list":
        for n in list_zoo():
            revs = list_revisions(n)
            print(n + (f"  revisions: {', '.join(revs)}" if revs else ""))
    else:
        print(zoo_markdown())
        write_zoo_markdown()


if __name__ == "__main__":
    main()
