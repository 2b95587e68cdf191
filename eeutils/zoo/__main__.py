"""``python -m eeutils.zoo build [--only NAME ...] [--force] [--threads N]`` | ``list`` | ``table``."""
from __future__ import annotations

import argparse

from eeutils.zoo import list_revisions, list_zoo, write_zoo_markdown, zoo_markdown
from eeutils.zoo.build import build


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m eeutils.zoo", description="Build or inspect the embedded zoo.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train the zoo (finished models are skipped)")
    b.add_argument("--only", nargs="+", metavar="NAME", help="build only these recipes")
    b.add_argument("--force", action="store_true", help="rebuild even if finished")
    b.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    b.add_argument("--no-progress", action="store_true")
    sub.add_parser("list", help="list built models and their revisions")
    sub.add_parser("table", help="print the zoo table and regenerate docs/ZOO.md")
    a = p.parse_args(argv)
    if a.cmd == "build":
        build(only=a.only, force=a.force, threads=a.threads, progress=not a.no_progress)
    elif a.cmd == "list":
        for n in list_zoo():
            revs = list_revisions(n)
            print(n + (f"  revisions: {', '.join(revs)}" if revs else ""))
    else:
        print(zoo_markdown())
        write_zoo_markdown()


if __name__ == "__main__":
    main()
