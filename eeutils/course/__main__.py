"""``python -m eeutils.course``: list the exercises; ``--sync`` rewrites the table in docs/COURSE.md."""
import argparse
import re
from pathlib import Path

from . import exercise_table

COURSE_MD = Path(__file__).resolve().parents[2] / "docs" / "COURSE.md"
START, END = "<!-- exercises:start -->", "<!-- exercises:end -->"


def synced(text: str) -> str:
    """`text` with the table between the exercise markers replaced by the registry's table."""
    block = f"{START}\n{exercise_table()}\n{END}"
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eeutils.course", description=__doc__)
    ap.add_argument("--sync", action="store_true", help=f"rewrite the exercise table in {COURSE_MD.name}")
    args = ap.parse_args(argv)
    if not args.sync:
        print(exercise_table())
        return 0
    COURSE_MD.write_text(synced(COURSE_MD.read_text()))
    print(f"updated {COURSE_MD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
